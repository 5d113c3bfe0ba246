//! `{{ variable }}` templates in rule params.
//!
//! Templates are parsed once when the config is loaded, so an unknown variable or a stray `{{`
//! stops the function at start instead of failing on the first push. Rendering is plain
//! substitution from a small fixed set of variables: there are no expressions, filters or escapes,
//! and the result is only ever used as a Tekton param value (never in a script, name or label),
//! which is what keeps hostile ref names harmless.
//!
//! | variable     | value                                                                 |
//! |--------------|-----------------------------------------------------------------------|
//! | `sha`        | commit after the push (40 hex)                                        |
//! | `short_sha`  | first 7 characters of `sha`                                           |
//! | `before`     | commit before the push (all zeros when the ref was created)           |
//! | `ref`        | full ref, `refs/heads/main`                                           |
//! | `branch`     | branch name, empty for tags                                           |
//! | `tag`        | tag name, empty for branches                                          |
//! | `ref_name`   | the branch or tag name (the full ref for other refs)                  |
//! | `repo_url`   | canonical repository URL, `https://host/owner/name`                   |
//! | `clone_url`  | clone URL as the provider sent it                                     |
//! | `repo_name`  | last path segment of `repo_url`                                       |
//! | `repo_owner` | path of `repo_url` without the name (`group/subgroup` on GitLab)      |
//! | `provider`   | `github`, `gitlab`, `gitea`, `forgejo` or `bitbucket`                 |
//! | `delivery`   | provider delivery id                                                  |
//! | `pusher`     | who pushed                                                            |
//! | `run_name`   | name of the PipelineRun or TaskRun being created                      |
//! | `namespace`  | namespace of that run                                                 |
//! | `paths.NAME` | the segment the rule's `paths` captured as `{NAME}` for this run (monorepo fan-out, see [`crate::path_capture`]) |

use std::fmt;

use crate::push::{Push, RefKind};

/// One of the fixed template variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variable {
    /// `sha`: commit after the push.
    Sha,
    /// `short_sha`: first 7 characters of the commit after the push.
    ShortSha,
    /// `before`: commit before the push.
    Before,
    /// `ref`: the full ref.
    Ref,
    /// `branch`: branch name, or empty.
    Branch,
    /// `tag`: tag name, or empty.
    Tag,
    /// `ref_name`: branch or tag name.
    RefName,
    /// `repo_url`: canonical repository URL.
    RepoUrl,
    /// `clone_url`: clone URL as the provider sent it.
    CloneUrl,
    /// `repo_name`: last path segment of the repository URL.
    RepoName,
    /// `repo_owner`: repository path without its name.
    RepoOwner,
    /// `provider`: provider name.
    Provider,
    /// `delivery`: provider delivery id.
    Delivery,
    /// `pusher`: who pushed.
    Pusher,
    /// `run_name`: name of the run being created.
    RunName,
    /// `namespace`: namespace of the run being created.
    Namespace,
}

impl Variable {
    /// Every variable, in the order the docs list them.
    pub const ALL: [Variable; 16] = [
        Variable::Sha,
        Variable::ShortSha,
        Variable::Before,
        Variable::Ref,
        Variable::Branch,
        Variable::Tag,
        Variable::RefName,
        Variable::RepoUrl,
        Variable::CloneUrl,
        Variable::RepoName,
        Variable::RepoOwner,
        Variable::Provider,
        Variable::Delivery,
        Variable::Pusher,
        Variable::RunName,
        Variable::Namespace,
    ];

    /// The name written between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Variable::Sha => "sha",
            Variable::ShortSha => "short_sha",
            Variable::Before => "before",
            Variable::Ref => "ref",
            Variable::Branch => "branch",
            Variable::Tag => "tag",
            Variable::RefName => "ref_name",
            Variable::RepoUrl => "repo_url",
            Variable::CloneUrl => "clone_url",
            Variable::RepoName => "repo_name",
            Variable::RepoOwner => "repo_owner",
            Variable::Provider => "provider",
            Variable::Delivery => "delivery",
            Variable::Pusher => "pusher",
            Variable::RunName => "run_name",
            Variable::Namespace => "namespace",
        }
    }

    /// The variable with this name, if there is one.
    pub fn from_name(name: &str) -> Option<Variable> {
        Variable::ALL.into_iter().find(|v| v.name() == name)
    }

    fn position(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn known_names() -> String {
    Variable::ALL
        .iter()
        .map(|v| v.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a template could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{ name }}` names no known variable.
    #[error("unknown variable `{name}` in {{{{ {name} }}}}; known variables: {known}", known = known_names())]
    UnknownVariable {
        /// The name as written, trimmed.
        name: String,
    },
    /// A `{{` has no matching `}}`.
    #[error("the `{{{{` at character {} is never closed with `}}}}`", offset + 1)]
    Unterminated {
        /// Byte offset of the `{{`.
        offset: usize,
    },
    /// `{{ paths.NAME }}` where NAME is not a capture name.
    #[error(
        "`{{{{ paths.{name} }}}}`: {name:?} is not a capture name (a lowercase letter, then \
         lowercase letters, digits or `_`)"
    )]
    BadCapture {
        /// The name after `paths.`.
        name: String,
    },
    /// `{{ }}` with nothing between the braces.
    #[error(
        "the `{{{{ }}}}` at character {} names no variable; known variables: {known}",
        offset + 1,
        known = known_names()
    )]
    Empty {
        /// Byte offset of the `{{`.
        offset: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Variable),
    /// `paths.NAME`: a value the rule's path globs captured.
    Capture(String),
}

/// A parsed param value: text with `{{ variable }}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `source`; every `{{` starts a placeholder (there is no escape, by design).
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        let mut consumed = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let offset = consumed + open;
            let after_open = &rest[open + 2..];
            let close = after_open
                .find("}}")
                .ok_or(TemplateError::Unterminated { offset })?;
            let name = after_open[..close].trim();
            if name.is_empty() {
                return Err(TemplateError::Empty { offset });
            }
            if let Some(capture) = name.strip_prefix("paths.") {
                let valid = capture.starts_with(|c: char| c.is_ascii_lowercase())
                    && capture
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !valid {
                    return Err(TemplateError::BadCapture {
                        name: capture.to_owned(),
                    });
                }
                parts.push(Part::Capture(capture.to_owned()));
            } else {
                let variable =
                    Variable::from_name(name).ok_or_else(|| TemplateError::UnknownVariable {
                        name: name.to_owned(),
                    })?;
                parts.push(Part::Var(variable));
            }
            let step = open + 2 + close + 2;
            consumed += step;
            rest = &rest[step..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The variables this template uses, in order of appearance (with repeats).
    pub fn variables(&self) -> impl Iterator<Item = Variable> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(*v),
            Part::Text(_) | Part::Capture(_) => None,
        })
    }

    /// The capture names this template uses (`{{ paths.NAME }}`), in order of appearance.
    pub fn captures(&self) -> impl Iterator<Item = &str> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Capture(name) => Some(name.as_str()),
            Part::Text(_) | Part::Var(_) => None,
        })
    }

    /// Substitutes the variables' values.
    pub fn render(&self, values: &Values) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(v) => out.push_str(values.get(*v)),
                // Rules are checked at start to use only their own captures.
                Part::Capture(name) => {
                    out.push_str(values.captures.get(name).map_or("", String::as_str));
                }
            }
        }
        out
    }
}

/// The values of every variable for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    values: [String; Variable::ALL.len()],
    captures: crate::path_capture::Captures,
}

impl Values {
    /// The values for a run named `run_name` in `namespace`, created for `push`.
    pub fn new(push: &Push, run_name: &str, namespace: &str) -> Values {
        let (owner, name) = split_repo_url(&push.repo_url);
        let (branch, tag, ref_name) = match &push.ref_kind {
            RefKind::Branch(b) => (b.as_str(), "", b.as_str()),
            RefKind::Tag(t) => ("", t.as_str(), t.as_str()),
            RefKind::Other(r) => ("", "", r.as_str()),
        };
        let short_sha: String = push.after.chars().take(7).collect();
        let mut values: [String; Variable::ALL.len()] = Default::default();
        for v in Variable::ALL {
            values[v.position()] = match v {
                Variable::Sha => push.after.clone(),
                Variable::ShortSha => short_sha.clone(),
                Variable::Before => push.before.clone(),
                Variable::Ref => push.git_ref.clone(),
                Variable::Branch => branch.to_owned(),
                Variable::Tag => tag.to_owned(),
                Variable::RefName => ref_name.to_owned(),
                Variable::RepoUrl => push.repo_url.clone(),
                Variable::CloneUrl => push.clone_url.clone(),
                Variable::RepoName => name.to_owned(),
                Variable::RepoOwner => owner.to_owned(),
                Variable::Provider => push.provider.as_str().to_owned(),
                Variable::Delivery => push.delivery_id.clone(),
                Variable::Pusher => push.pusher.clone(),
                Variable::RunName => run_name.to_owned(),
                Variable::Namespace => namespace.to_owned(),
            };
        }
        Values {
            values,
            captures: crate::path_capture::Captures::new(),
        }
    }

    /// These values with the run's path captures (`{{ paths.NAME }}`).
    pub fn with_captures(mut self, captures: &crate::path_capture::Captures) -> Values {
        self.captures.clone_from(captures);
        self
    }

    /// The value of one variable.
    pub fn get(&self, variable: Variable) -> &str {
        &self.values[variable.position()]
    }

    /// Every variable with its value, for dry runs.
    pub fn iter(&self) -> impl Iterator<Item = (Variable, &str)> {
        Variable::ALL.into_iter().map(|v| (v, self.get(v)))
    }
}

/// Splits a canonical `https://host/owner/name` into (`owner`, `name`); the owner keeps inner
/// slashes (GitLab subgroups) and is empty when the path has a single segment.
pub fn split_repo_url(repo_url: &str) -> (&str, &str) {
    let without_scheme = repo_url
        .split_once("://")
        .map_or(repo_url, |(_, rest)| rest);
    let path = without_scheme
        .split_once('/')
        .map_or("", |(_, path)| path)
        .trim_matches('/');
    match path.rsplit_once('/') {
        Some((owner, name)) => (owner, name),
        None => ("", path),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_variables_with_optional_spaces() {
        let t = Template::parse("img:{{sha}}-{{ short_sha }}}").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Text("img:".into()),
                Part::Var(Variable::Sha),
                Part::Text("-".into()),
                Part::Var(Variable::ShortSha),
                Part::Text("}".into()),
            ]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Template::parse("x {{ shaa }}").unwrap_err();
        assert_eq!(
            e,
            TemplateError::UnknownVariable {
                name: "shaa".into()
            }
        );
        assert!(e.to_string().contains("shaa"));
        assert!(e.to_string().contains("short_sha"));
        assert_eq!(
            Template::parse("ab{{ sha").unwrap_err(),
            TemplateError::Unterminated { offset: 2 }
        );
        assert_eq!(
            Template::parse("{{ sha }}{{  }}").unwrap_err(),
            TemplateError::Empty { offset: 9 }
        );
    }

    #[test]
    fn path_captures_are_parsed_and_rendered() {
        let t = Template::parse("{{ paths.api }}:{{ sha }}").unwrap();
        assert_eq!(t.captures().collect::<Vec<_>>(), vec!["api"]);
        assert_eq!(
            Template::parse("{{ paths.Api }}").unwrap_err(),
            TemplateError::BadCapture { name: "Api".into() }
        );
        assert!(Template::parse("{{ paths. }}").is_err());
    }

    #[test]
    fn every_variable_round_trips_by_name() {
        for v in Variable::ALL {
            assert_eq!(Variable::from_name(v.name()), Some(v));
        }
    }

    #[test]
    fn splits_owner_and_name() {
        assert_eq!(split_repo_url("https://h/o/r"), ("o", "r"));
        assert_eq!(split_repo_url("https://h/g/s/r"), ("g/s", "r"));
        assert_eq!(split_repo_url("https://h/r"), ("", "r"));
    }
}
