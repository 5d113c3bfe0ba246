//! The one config file: loading, validation, secrets and environment overrides.
//!
//! Loading runs in a fixed order: read the file (or fall back to the embedded defaults), parse
//! it into the typed [`Config`] with unknown keys refused, apply the environment overrides,
//! resolve secrets, then check the rules that a type cannot express. Every problem names where
//! it is: `file:line:column: field.path: message`, or the environment variable that set it;
//! a function's own checks ([`Check`], git-push's rule compilation) are reported the same way.
//! What the config knows per provider (its key, credential, variables) comes from the provider
//! table, [`crate::provider`]. `docs/configuration.md` is the reference for users.
//!
//! A command names the [`Sections`] it uses: the whole file is always parsed (a typo is a typo
//! wherever it is), but secrets are read and rules checked only for those sections, so
//! `tekflux archive` in a Tekton step does not fail because a webhook secret it never uses is
//! not set there.

pub mod capture;
mod duration;
mod env;
pub mod keys;
mod locate;
mod model;
mod overrides;
mod plain;
mod ref_glob;
mod releases;
mod repositories;
mod secret;
mod validate;
pub mod vars;

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::provider::GitProvider;
pub use duration::parse_go_duration;
pub use env::Env;
pub use locate::FieldPath;
pub use model::*;
pub use ref_glob::RefGlob;
pub use releases::*;
pub use repositories::*;
pub use secret::{Secret, SecretSource};
pub use validate::{
    BindingProblem, COMPRESSION_LEVELS, Finding, MAX_RULE_NAME_LEN, MAX_TIMEOUT_SECONDS,
    PART_SIZE_MIB, bound_provider, is_dns1123_label, is_dns1123_subdomain, looks_like_git_url,
    path_covers, url_host,
};

/// The config file read when `TEKFLUX_CONFIG` is unset, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "tekflux.yaml";
/// How problems in the embedded defaults (only ever set by overrides) name their origin.
pub const EMBEDDED_ORIGIN: &str = "<embedded defaults>";
/// The embedded defaults: an empty document, since every key has a default in the types.
pub const EMBEDDED_DEFAULTS: &str = "";
/// Exit code for an invalid config (`EX_USAGE` from sysexits.h).
pub const EX_USAGE: i32 = 64;

/// The parts of the config a command uses: only their secrets are read and only their rules
/// checked (the whole file is parsed either way).
///
/// A config loaded with less than [`Sections::ALL`] may hold unresolved secrets
/// ([`Secret::is_resolved`] is false, [`Secret::expose`] empty); code that checks signatures
/// or tokens treats such a secret as no secret, and only [`Sections::ALL`] serves requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sections {
    /// `namespace`, `providers` (their shape) and `repositories`: what routes a push.
    routing: bool,
    /// `storage`.
    storage: bool,
    /// `server`, `kubernetes`, `releases` and `events`: what only the served functions use.
    service: bool,
    /// The secrets named under `providers` and `events.token`, read from the environment or
    /// their files.
    secrets: bool,
}

impl Sections {
    /// Everything, every secret read: `serve` and `check-config`.
    pub const ALL: Sections = Sections {
        routing: true,
        storage: true,
        service: true,
        secrets: true,
    };
    /// `namespace`, `providers` and `repositories`, no secret read: `render`, which shows what
    /// a payload would start and checks no signature.
    pub const ROUTING: Sections = Sections {
        routing: true,
        storage: false,
        service: false,
        secrets: false,
    };
    /// `storage` only: `archive` and `restore`, and so the Tekton workspace Tasks.
    pub const STORAGE: Sections = Sections {
        routing: false,
        storage: true,
        service: false,
        secrets: false,
    };

    /// Everything but the secrets: `trace`, which reads the runs (namespaces, rules), the
    /// bucket, the cluster settings and the releases, and checks no signature or token.
    pub const INSPECT: Sections = Sections {
        routing: true,
        storage: true,
        service: true,
        secrets: false,
    };

    /// Whether secrets are read (and a missing one is an error).
    pub fn reads_secrets(self) -> bool {
        self.secrets
    }

    pub(crate) fn includes(self, part: Part) -> bool {
        match part {
            Part::Routing => self.routing,
            Part::Storage => self.storage,
            Part::Service => self.service,
            Part::Secrets => self.secrets,
        }
    }
}

/// One of the parts [`Sections`] is made of; each rule and override belongs to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Routing,
    Storage,
    Service,
    Secrets,
}

/// Where the config text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file that must exist (named by `TEKFLUX_CONFIG`).
    File(PathBuf),
    /// A file used when it exists, the embedded defaults otherwise (`tekflux.yaml` by default,
    /// so the all-in-one binary runs with no file at all).
    FileIfPresent(PathBuf),
    /// The embedded defaults.
    Embedded,
}

impl ConfigSource {
    /// `TEKFLUX_CONFIG` when set and not empty, `./tekflux.yaml` if present otherwise.
    pub fn from_env(env: &Env) -> Self {
        match env.get_non_empty(vars::TEKFLUX_CONFIG) {
            Some(path) => Self::File(PathBuf::from(path)),
            None => Self::FileIfPresent(PathBuf::from(DEFAULT_CONFIG_PATH)),
        }
    }

    /// The file the config is read from, as named, or [`EMBEDDED_ORIGIN`]: what messages about
    /// the config call it.
    pub fn origin(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::FileIfPresent(path) if path.exists() => path.display().to_string(),
            _ => EMBEDDED_ORIGIN.to_owned(),
        }
    }

    /// The config's text and the name messages give it ([`ConfigSource::origin`]).
    fn read(&self) -> Result<(String, String), ConfigError> {
        let embedded = || (EMBEDDED_DEFAULTS.to_owned(), EMBEDDED_ORIGIN.to_owned());
        Ok(match self {
            Self::Embedded => embedded(),
            Self::File(path) => (read(path)?, path.display().to_string()),
            Self::FileIfPresent(path) => match std::fs::metadata(path) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => embedded(),
                _ => (read(path)?, path.display().to_string()),
            },
        })
    }
}

/// Where a problem is: a place in the file, or the environment variable that set the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A line and column (from 1) of a file (or [`EMBEDDED_ORIGIN`]).
    File {
        /// The file as it was named.
        origin: String,
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
    },
    /// An environment variable override.
    Env {
        /// The variable's name.
        variable: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File {
                origin,
                line,
                column,
            } => write!(f, "{origin}:{line}:{column}"),
            Location::Env { variable } => write!(f, "environment variable {variable}"),
        }
    }
}

/// One thing wrong with the config, printed as `file:line:column: field.path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it is.
    pub location: Location,
    /// The field's path, like `repositories[0].url`; empty for the document itself.
    pub path: String,
    /// What is wrong. Never holds a secret's value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why the config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (missing, a directory, no permission).
    #[error(
        "{}: cannot read the config file: {}; name your config file with --config or TEKFLUX_CONFIG",
        path.display(),
        crate::error::plain_chain(cause)
    )]
    Read {
        /// The file as it was named.
        path: PathBuf,
        /// What the operating system said.
        cause: std::io::Error,
    },
    /// The text is not YAML, or does not fit the config's shape (unknown key, wrong type).
    #[error("{0}")]
    Parse(Problem),
    /// Values that parse but break a rule, secrets that cannot be read, bad overrides.
    #[error("{}", display_all(.0))]
    Invalid(Vec<Problem>),
}

fn display_all(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// A stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "read",
            ConfigError::Parse(_) => "parse",
            ConfigError::Invalid(_) => "invalid",
        }
    }

    /// What `main` prints before it exits with [`EX_USAGE`]: a first line saying the config is
    /// invalid, then every problem.
    pub fn report(&self) -> String {
        format!("tekflux: invalid configuration\n{self}")
    }

    /// The problems found, in order (one for `Parse`, none for `Read`).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Parse(problem) => std::slice::from_ref(problem),
            ConfigError::Invalid(problems) => problems,
        }
    }
}

impl Config {
    /// Loads the config from `source`, with overrides and `env:` secrets from `env`, every
    /// section checked ([`Sections::ALL`]).
    pub fn load(source: &ConfigSource, env: &Env) -> Result<Config, ConfigError> {
        Self::load_sections(source, env, Sections::ALL)
    }

    /// Loads the config from `source`, reading the secrets and checking the rules of
    /// `sections` only.
    pub fn load_sections(
        source: &ConfigSource,
        env: &Env,
        sections: Sections,
    ) -> Result<Config, ConfigError> {
        Self::load_checked(source, env, sections, &[])
    }

    /// [`Config::load_sections`], then the function's own `checks` when the common rules pass.
    pub fn load_checked(
        source: &ConfigSource,
        env: &Env,
        sections: Sections,
        checks: &[Check],
    ) -> Result<Config, ConfigError> {
        let (text, origin) = source.read()?;
        Self::from_yaml_checked(&text, &origin, env, sections, checks)
    }

    /// Loads the config from where `env` says ([`ConfigSource::from_env`]), every section
    /// checked.
    pub fn load_from_env(env: &Env) -> Result<Config, ConfigError> {
        Self::load(&ConfigSource::from_env(env), env)
    }

    /// Parses, overrides, resolves and validates `text`, every section; `origin` names it in
    /// errors.
    pub fn from_yaml(text: &str, origin: &str, env: &Env) -> Result<Config, ConfigError> {
        Self::from_yaml_sections(text, origin, env, Sections::ALL)
    }

    /// Parses `text` and applies the overrides, then reads the secrets and checks the rules of
    /// `sections` only; `origin` names it in errors.
    pub fn from_yaml_sections(
        text: &str,
        origin: &str,
        env: &Env,
        sections: Sections,
    ) -> Result<Config, ConfigError> {
        Self::from_yaml_checked(text, origin, env, sections, &[])
    }

    /// [`Config::from_yaml_sections`], then the function's own `checks` when the common rules
    /// pass (their findings are located in `text` the same way).
    pub fn from_yaml_checked(
        text: &str,
        origin: &str,
        env: &Env,
        sections: Sections,
        checks: &[Check],
    ) -> Result<Config, ConfigError> {
        Self::from_yaml_prepared(text, origin, env, sections, checks).map(|(config, _)| config)
    }

    /// [`Config::from_yaml_checked`], with what the checks built ([`Prepared`]).
    pub fn from_yaml_prepared(
        text: &str,
        origin: &str,
        env: &Env,
        sections: Sections,
        checks: &[Check],
    ) -> Result<(Config, Prepared), ConfigError> {
        let deserializer = serde_norway::Deserializer::from_str(text);
        let mut config: Config = serde_path_to_error::deserialize(deserializer)
            .map_err(|error| ConfigError::Parse(parse_problem(&error, origin)))?;

        let mut overridden = overrides::Overridden::new();
        let mut problems: Vec<Problem> = overrides::apply(&mut config, env, &mut overridden)
            .into_iter()
            .filter(|bad| sections.includes(bad.part))
            .map(|bad| Problem {
                location: Location::Env {
                    variable: bad.variable,
                },
                path: bad.path.map(|path| path.to_string()).unwrap_or_default(),
                message: bad.message,
            })
            .collect();
        let mut findings = if sections.reads_secrets() {
            resolve_secrets(&mut config, env)
        } else {
            Vec::new()
        };
        findings.extend(validate::validate(&config, sections));
        // A function's own checks see only a config the common rules accept, so one mistake
        // is not reported twice in two wordings.
        let mut prepared = Prepared::default();
        if problems.is_empty() && findings.is_empty() {
            for check in checks {
                findings.extend(check(&config, &mut prepared));
            }
        }

        let locate = |path: &FieldPath| match overridden.get(path) {
            Some(variable) => Location::Env {
                variable: (*variable).to_owned(),
            },
            None => {
                let (line, column) = locate::locate(text, path);
                Location::File {
                    origin: origin.to_owned(),
                    line,
                    column,
                }
            }
        };
        let mut located: Vec<Problem> = findings
            .into_iter()
            .map(|finding| Problem {
                location: locate(&finding.path),
                path: finding.path.to_string(),
                message: finding.message,
            })
            .collect();
        // Overrides first, then the file from top to bottom, as an editor would walk it.
        located.sort_by_key(|problem| match &problem.location {
            Location::Env { .. } => (0, 0, 0),
            Location::File { line, column, .. } => (1, *line, *column),
        });
        problems.extend(located);
        if problems.is_empty() {
            Ok((config, prepared))
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// A check that a function runs on a config the common rules accept, such as git-push
/// compiling its routing table: what it finds is reported like the common rules' findings,
/// at `file:line:column: field`, by `check-config` and `serve` alike.
///
/// What a check builds on the way (git-push's compiled table) it may keep in [`Prepared`], so the
/// function starts with it instead of building it a second time.
pub type Check = fn(&Config, &mut Prepared) -> Vec<Finding>;

/// What a function's [`Check`]s built while checking a config, kept for the function's startup
/// (`Startup::prepared`): a map by type, filled only for a config that passed every check.
#[derive(Debug, Clone, Default)]
pub struct Prepared(http::Extensions);

impl Prepared {
    /// Keeps `value`, replacing one of the same type.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.0.insert(value);
    }

    /// The value of type `T` a check kept, if any.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.get()
    }
}

/// Loads the config as `main` does, before any runtime starts, with the `sections` the command
/// uses and the function's own `checks`. On error, `main` prints [`ConfigError::report`] and
/// exits with [`EX_USAGE`] (64), so a bad ConfigMap shows in `kubectl logs` and the pod's
/// restart reason rather than as a half-working service.
pub fn load(env: &Env, sections: Sections, checks: &[Check]) -> Result<Config, ConfigError> {
    load_prepared(env, sections, checks).map(|(config, _)| config)
}

/// [`load`], with what the `checks` built ([`Prepared`]) for the function's startup.
pub fn load_prepared(
    env: &Env,
    sections: Sections,
    checks: &[Check],
) -> Result<(Config, Prepared), ConfigError> {
    let (text, origin) = ConfigSource::from_env(env).read()?;
    Config::from_yaml_prepared(&text, &origin, env, sections, checks)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })
}

fn resolve_secrets(config: &mut Config, env: &Env) -> Vec<validate::Finding> {
    let mut findings = Vec::new();
    for (provider, settings) in config.providers.configured_mut() {
        let path = FieldPath::root().key(keys::PROVIDERS).key(provider.key);
        let fields = [
            (keys::SECRET, &mut settings.secret),
            (keys::TOKEN, &mut settings.token),
        ];
        for (key, secret) in fields {
            if let Some(secret) = secret
                && let Err(message) = secret.resolve(env)
            {
                findings.push(validate::Finding {
                    path: path.key(key),
                    message,
                });
            }
        }
        if let Some(status) = settings.status.as_mut() {
            let status_path = path.key(keys::STATUS);
            if let Some(token) = status.token.as_mut()
                && let Err(message) = token.resolve(env)
            {
                findings.push(validate::Finding {
                    path: status_path.key(keys::TOKEN),
                    message,
                });
            }
            if let Some(app) = status.app.as_mut()
                && let Err(message) = app.private_key.resolve(env)
            {
                findings.push(validate::Finding {
                    path: status_path.key(keys::APP).key(keys::PRIVATE_KEY),
                    message,
                });
            }
        }
    }
    for (index, rule) in config.repositories.iter_mut().enumerate() {
        if let Some(RuleStatus::Settings(status)) = &mut rule.status
            && let Some(token) = status.token.as_mut()
            && let Err(message) = token.resolve(env)
        {
            findings.push(validate::Finding {
                path: FieldPath::root()
                    .key(keys::REPOSITORIES)
                    .index(index)
                    .key(keys::STATUS)
                    .key(keys::TOKEN),
                message,
            });
        }
    }
    if let Some(token) = &mut config.events.token
        && let Err(message) = token.resolve(env)
    {
        findings.push(validate::Finding {
            path: FieldPath::root().key(keys::EVENTS).key(keys::TOKEN),
            message,
        });
    }
    findings
}

/// Turns a serde error into `origin:line:column: path: message`, without the position and path
/// that serde_norway already wrote into its message.
fn parse_problem(error: &serde_path_to_error::Error<serde_norway::Error>, origin: &str) -> Problem {
    let inner = error.inner();
    let mut message = inner.to_string();
    let (line, column) = inner
        .location()
        .map_or((1, 1), |location| (location.line(), location.column()));
    let position = format!(" at line {line} column {column}");
    if let Some(at) = message.find(&position) {
        message.replace_range(at..at + position.len(), "");
    }
    let path = match error.path().to_string() {
        root if root == "." => String::new(),
        path => path,
    };
    // serde_norway prefixes the path of the node it was in, which for an unknown key is the
    // path's parent: strip whichever prefix of ours it wrote.
    let prefix_ends = path
        .char_indices()
        .filter(|(_, c)| *c == '.' || *c == '[')
        .map(|(at, _)| at)
        .chain([path.len()]);
    for end in prefix_ends {
        if let Some(rest) = message.strip_prefix(&format!("{}: ", &path[..end])) {
            message = rest.to_owned();
            break;
        }
    }
    // A syntax error is at no key; serde_path_to_error says `?`.
    let path = if path == "?" { String::new() } else { path };
    Problem {
        location: Location::File {
            origin: origin.to_owned(),
            line,
            column,
        },
        path,
        message: plain::plain(&message),
    }
}
