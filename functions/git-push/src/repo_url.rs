//! Repository URLs: one canonical form for every way a repository can be written.
//!
//! A push names its repository in whichever form the provider chose (`html_url`, `clone_url`,
//! `git@host:owner/name.git`, …) and a config rule in whichever form its author chose, so both
//! go through [`canonical`] before they are compared:
//!
//! | input                                          | canonical                         |
//! |------------------------------------------------|-----------------------------------|
//! | `https://GitHub.com/Org/Repo.git/`             | `https://github.com/Org/Repo`     |
//! | `http://host/org/repo`                         | `https://host/org/repo`           |
//! | `https://user:token@host/org/repo.git`         | `https://host/org/repo`           |
//! | `ssh://git@host:2222/org/repo.git`             | `https://host/org/repo`           |
//! | `git@host:group/sub/repo.git`                  | `https://host/group/sub/repo`     |
//! | `git://host/org/repo.git`                      | `https://host/org/repo`           |
//! | `https://host:8443/org/repo`                   | `https://host:8443/org/repo`      |
//!
//! The canonical URL is an identity, not necessarily a fetchable address (an http-only server
//! still gets `https://`); [`crate::Push::clone_url`] is the address to fetch from.
//!
//! Case: the host is lowercased, the path keeps its case (it is shown to users and passed to
//! runs). Matching should ignore case, which is what all five providers do when they resolve a
//! path (GitHub, Gitea/Forgejo and Bitbucket treat owner and name case-insensitively, GitLab
//! redirects differently-cased paths to the project); [`key`] gives the lowercased form to compare.
//!
//! Credentials in the user-info part are dropped, so a token in a configured or received URL can
//! never reach a run, a label or a log through the canonical URL.

/// The canonical `https://host[:port]/owner/…/name` form of a repository URL, or `None` when
/// `url` is not a repository URL (no host, fewer than two path segments, `.`/`..` segments,
/// whitespace).
pub fn canonical(url: &str) -> Option<String> {
    let url = url.trim();
    if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (host_port, path) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            let keep_port = match scheme.as_str() {
                "https" | "http" => true,
                "ssh" | "git" | "git+ssh" | "ssh+git" => false,
                _ => return None,
            };
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host_port = strip_userinfo(authority);
            let (host, port) = split_port(host_port)?;
            let port = match (keep_port, port, scheme.as_str()) {
                (false, _, _) | (true, None, _) => None,
                (true, Some("443"), "https") | (true, Some("80"), "http") => None,
                (true, Some(port), _) => Some(port),
            };
            (join_port(host, port), path)
        }
        None => {
            // scp-like `[user@]host:path`; a `/` before the `:` would make it a local path.
            let (authority, path) = url.split_once(':')?;
            if authority.contains('/') {
                return None;
            }
            let host = strip_userinfo(authority);
            // `[` alone (from `git@[::1]:…`, cut at its first colon) is no host.
            split_port(host)?;
            (join_port(host, None), path)
        }
    };
    if host_port.is_empty()
        || host_port.starts_with(':')
        || host_port.contains(['/', '?', '#', '@'])
    {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    // Every trailing `.git`: stripping one from `x.git.git` would leave a URL whose own
    // canonical form is shorter (no host allows a repository name ending in `.git`).
    let mut path = path.trim_matches('/');
    while let Some(stripped) = path.strip_suffix(".git") {
        path = stripped.trim_end_matches('/');
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2
        || segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return None;
    }
    Some(format!(
        "https://{}/{}",
        host_port.to_ascii_lowercase(),
        segments.join("/")
    ))
}

/// The lowercased canonical URL, for case-insensitive comparison of repositories.
pub fn key(url: &str) -> Option<String> {
    canonical(url).map(|c| c.to_lowercase())
}

/// The host of a repository URL in any form [`canonical`] takes, lowercase and without port;
/// `None` when `url` is not a repository URL. Routing compares a push's clone URL host with a
/// rule's by this.
pub fn host(url: &str) -> Option<String> {
    canonical(url).and_then(|canonical| tekflux_common::config::url_host(&canonical))
}

/// `url` without credentials: the whole user-info of `http(s)://` and `git://` URLs, the
/// password of `ssh://user:password@` URLs. Other strings are returned unchanged.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let lower = scheme.to_ascii_lowercase();
    if lower.contains("ssh") {
        let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
        format!("{scheme}://{user}@{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

fn strip_userinfo(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// Splits `host[:port]` (with `[v6]` literals); `None` when the port is not numeric.
fn split_port(host_port: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(after_bracket) = host_port.strip_prefix('[') {
        let (inner, rest) = after_bracket.split_once(']')?;
        let host = &host_port[..inner.len() + 2];
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match host_port.rsplit_once(':') {
            // A colon left in the host (`user:token:`, `a:b:443`): not a host, and its
            // "canonical" URL would not be a repository URL itself.
            Some((host, _)) if host.contains(':') => return None,
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    match port {
        Some("") => Some((host, None)),
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => None,
        _ => Some((host, port)),
    }
}

fn join_port(host: &str, port: Option<&str>) -> String {
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_and_brackets() {
        assert_eq!(split_port("h:22"), Some(("h", Some("22"))));
        assert_eq!(split_port("[::1]:8080"), Some(("[::1]", Some("8080"))));
        assert_eq!(split_port("[::1]"), Some(("[::1]", None)));
        assert_eq!(split_port("h:x"), None);
        assert_eq!(split_port("user:token:"), None);
        assert_eq!(split_port("a:b:443"), None);
        assert_eq!(split_port("["), None);
    }

    #[test]
    fn a_canonical_url_is_its_own_canonical_form() {
        // Found by the webhook fuzz targets: one `.git` was stripped, leaving another.
        for (url, expected) in [
            (
                "https://h.example/a/x.git.git",
                Some("https://h.example/a/x"),
            ),
            (
                "https://h.example/a/x.git/.git/",
                Some("https://h.example/a/x"),
            ),
            ("git@h.example:a/x.git.git", Some("https://h.example/a/x")),
            ("https://h.example/a/.git.git", None),
            (
                "https://h.example/a/x.gitx",
                Some("https://h.example/a/x.gitx"),
            ),
        ] {
            let canonical = canonical(url);
            assert_eq!(canonical.as_deref(), expected, "{url}");
            if let Some(canonical) = canonical {
                assert_eq!(
                    super::canonical(&canonical),
                    Some(canonical.clone()),
                    "{url}"
                );
            }
        }
    }
}
