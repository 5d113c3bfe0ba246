//! The one config file, loaded the way the functions load it: from YAML text or a file, with the
//! environment injected as a map.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use std::time::Duration;

use tekflux_common::config::{
    Concurrency, Config, ConfigError, ConfigSource, EX_USAGE, Env, FieldPath, Finding, GitProvider,
    HelmReleaseApi, Location, Prepared, ReleaseFrom, ReleaseSources, Secret, SecretSource,
    Sections, bound_provider,
};

const ORIGIN: &str = "tekflux.yaml";

/// The shape from DESIGN.md, with the two lines it now needs: a rule for a host that is not
/// well known, with two git providers configured, names its provider; and every release rule
/// says `from:`.
const DESIGN_EXAMPLE: &str = r#"namespace: cicd
providers:
  github: { secret: env:GITHUB_WEBHOOK_SECRET }
  gitlab: { token: file:/etc/tekflux/gitlab-token }
storage:
  bucket: tekton-workspaces
  forcePathStyle: true                     # MinIO and most S3-compatible stores
repositories:
  - url: https://github.example.com/org/r3pf-backend
    provider: github
    branches: [main, "release/*"]
    paths: ["apis/apis-async/api-launcher/**"]
    pipeline: api-pipeline                 # or `task:` for a TaskRun
    params:
      apicontext: apis/apis-async/api-launcher/
      image: registry.example.com/api-launcher:{{ sha }}
    workspaces:
      shared-data: { claim: tekton-workspace, archive: true }
releases:
  - image: registry.example.com/api-launcher
    helmRelease: cicd/api-launcher
    set: image.tag
    from: { rules: [api-pipeline], branches: [main] }
"#;

/// A small valid file that the rule tests break one line at a time.
const BASE: &str = "\
namespace: cicd
repositories:
  - url: https://github.com/org/app
    pipeline: build
";

fn load(text: &str, env: &Env) -> Result<Config, ConfigError> {
    Config::from_yaml(text, ORIGIN, env)
}

fn error(text: &str, env: &Env) -> String {
    match load(text, env) {
        Ok(config) => panic!("loaded but should not have: {config:?}"),
        Err(error) => error.to_string(),
    }
}

/// Asserts that loading `text` fails with a problem at `line` about `path` whose message
/// contains `words`.
#[track_caller]
fn fails_at(text: &str, line: usize, path: &str, words: &str) {
    let message = error(text, &Env::new());
    let wanted = format!("{ORIGIN}:{line}:");
    let hit = message.lines().any(|problem| {
        problem.starts_with(&wanted)
            && problem.contains(&format!(": {path}: "))
            && problem.contains(words)
    });
    assert!(
        hit,
        "no problem at line {line} about {path} saying {words:?} in:\n{message}"
    );
}

fn design_env(dir: &tempfile::TempDir) -> (Env, String) {
    let token = dir.path().join("gitlab-token");
    std::fs::write(&token, "gl-token-value\n").unwrap();
    let text = DESIGN_EXAMPLE.replace("/etc/tekflux/gitlab-token", token.to_str().unwrap());
    (
        Env::new().with("GITHUB_WEBHOOK_SECRET", "gh-secret-value"),
        text,
    )
}

#[test]
fn design_example_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (env, text) = design_env(&dir);
    let config = load(&text, &env).unwrap();

    assert_eq!(config.namespace, "cicd");
    let github = config.providers.github.as_ref().unwrap();
    assert_eq!(github.secret.as_ref().unwrap().expose(), b"gh-secret-value");
    let gitlab = config.providers.gitlab.as_ref().unwrap();
    assert_eq!(gitlab.token.as_ref().unwrap().expose(), b"gl-token-value");
    assert_eq!(config.storage.bucket.as_deref(), Some("tekton-workspaces"));
    assert!(config.storage.force_path_style);

    let rule = &config.repositories[0];
    assert_eq!(rule.rule_name(), Some("api-pipeline"));
    assert_eq!(rule.provider, Some(GitProvider::Github));
    assert_eq!(rule.branches, ["main", "release/*"]);
    assert_eq!(
        rule.params["image"],
        "registry.example.com/api-launcher:{{ sha }}"
    );
    let workspace = &rule.workspaces["shared-data"];
    assert_eq!(workspace.claim.as_deref(), Some("tekton-workspace"));
    assert!(workspace.archive);
    assert_eq!(rule.concurrency, Concurrency::Allow);

    let release = &config.releases[0];
    assert_eq!(release.helm_release_ref("other"), ("cicd", "api-launcher"));
    assert_eq!(release.set.as_deref(), Some("image.tag"));
    assert_eq!(release.api, HelmReleaseApi::Flux);
    assert_eq!(
        release.from,
        Some(ReleaseFrom::Sources(ReleaseSources {
            rules: vec!["api-pipeline".into()],
            branches: vec!["main".into()],
            ..ReleaseSources::default()
        }))
    );
}

#[test]
fn example_file_loads() {
    let text = include_str!("../../tekflux.example.yaml");
    let env = Env::new()
        .with("GITHUB_WEBHOOK_SECRET", "gh")
        .with("GITLAB_WEBHOOK_TOKEN", "gl")
        .with("GITEA_WEBHOOK_SECRET", "gt");
    let config = load(text, &env).unwrap();
    assert!(!config.repositories.is_empty());
    assert!(!config.releases.is_empty());
    assert!(
        config
            .repositories
            .iter()
            .any(|rule| rule.timeout_duration() == Some(Duration::from_secs(90 * 60)))
    );
}

#[test]
fn readme_config_loads() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("## Configuration").unwrap()..];
    let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
    let text = &section[start..start + section[start..].find("```").unwrap()];
    let env = Env::new()
        .with("GITHUB_WEBHOOK_SECRET", "gh")
        .with("GITLAB_WEBHOOK_TOKEN", "gl");
    let config = load(text, &env).unwrap();
    let providers: Vec<_> = config
        .repositories
        .iter()
        .map(|rule| bound_provider(rule, &config.providers).unwrap())
        .collect();
    assert_eq!(providers, [GitProvider::Github, GitProvider::Gitlab]);
}

#[test]
fn embedded_defaults_load_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let absent = ConfigSource::FileIfPresent(dir.path().join("tekflux.yaml"));
    let config = Config::load(&absent, &Env::new()).unwrap();
    assert_eq!(config.namespace, "default");
    assert_eq!(config.server.port, 8080);
    assert_eq!(config.server.body_limit, 25 * 1024 * 1024);
    assert!(config.repositories.is_empty());

    let embedded = Config::load(&ConfigSource::Embedded, &Env::new()).unwrap();
    assert_eq!(embedded.kubernetes.timeout_seconds, 10);
}

#[test]
fn the_default_file_is_used_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tekflux.yaml");
    std::fs::write(&path, BASE).unwrap();
    let config = Config::load(&ConfigSource::FileIfPresent(path), &Env::new()).unwrap();
    assert_eq!(config.namespace, "cicd");
}

#[test]
fn source_comes_from_tekflux_config() {
    assert_eq!(
        ConfigSource::from_env(&Env::new()),
        ConfigSource::FileIfPresent("tekflux.yaml".into())
    );
    assert_eq!(
        ConfigSource::from_env(&Env::new().with("TEKFLUX_CONFIG", "/etc/tekflux/config.yaml")),
        ConfigSource::File("/etc/tekflux/config.yaml".into())
    );
}

#[test]
fn a_named_file_that_is_missing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let env = Env::new().with("TEKFLUX_CONFIG", missing.to_str().unwrap());
    let error = Config::load_from_env(&env).unwrap_err();
    assert_eq!(error.kind(), "read");
    assert!(error.to_string().contains("nope.yaml"), "{error}");
}

#[test]
fn errors_in_a_file_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cm.yaml");
    std::fs::write(&path, "namespace: cicd\nserver:\n  prot: 1\n").unwrap();
    let error = Config::load(&ConfigSource::File(path.clone()), &Env::new()).unwrap_err();
    let wanted = format!(
        "{}:3:3: server.prot: unknown key `prot` (did you mean `port`?)",
        path.display()
    );
    assert!(error.to_string().starts_with(&wanted), "{error}");
}

#[test]
fn unknown_keys_name_line_column_and_field() {
    let text = "\
namespace: cicd
repositories:
  - url: https://github.com/org/app
    pipeline: build
    branchs: [main]
";
    let error = load(text, &Env::new()).unwrap_err();
    assert_eq!(error.kind(), "parse");
    let message = error.to_string();
    assert!(
        message.starts_with(
            "tekflux.yaml:5:5: repositories[0].branchs: unknown key `branchs` (did you mean `branches`?); the keys here are"
        ),
        "{message}"
    );
    assert_eq!(message.matches("line 5").count(), 0, "{message}");

    fails_at(
        "storage:\n  bucket: b\n  forcePath: true\n",
        3,
        "storage.forcePath",
        "unknown key",
    );
    fails_at(
        &format!("{BASE}    workspaces:\n      w: {{ claim: c, subpath: x }}\n"),
        6,
        "repositories[0].workspaces.w.subpath",
        "unknown key",
    );
    fails_at(
        "namespaces: cicd\n",
        1,
        "namespaces",
        "unknown key `namespaces` (did you mean `namespace`?)",
    );
}

#[test]
fn wrong_types_and_syntax_name_the_line() {
    fails_at(
        "server:\n  port: eighty\n",
        2,
        "server.port",
        "expected a whole number from 0 to 65535, found the text \"eighty\"",
    );
    fails_at(
        "server:\n  port: 70000\n",
        2,
        "server.port",
        "the number 70000 is not allowed here: expected a whole number from 0 to 65535",
    );
    fails_at(
        &format!("{BASE}    concurrency: cancel\n"),
        5,
        "repositories[0].concurrency",
        "`cancel` is not one of",
    );
    let message = error("namespace: cicd\nrepositories:\n  - url: [x\n", &Env::new());
    assert!(message.starts_with("tekflux.yaml:"), "{message}");
    let message = error("namespace: cicd\n: :\n", &Env::new());
    assert!(message.contains("not valid YAML"), "{message}");
    // The whole config must be a mapping.
    let message = error("- a\n", &Env::new());
    assert!(
        message.contains("expected a mapping of settings") && message.contains("found a list"),
        "{message}"
    );
    for internal in [
        "struct ",
        "u16",
        "..=",
        "unknown field",
        "unknown variant",
        "?:",
    ] {
        assert!(!message.contains(internal), "{internal:?} in {message}");
    }
}

#[test]
fn partial_server_settings_keep_their_other_defaults() {
    let config = load("server:\n  port: 9000\n", &Env::new()).unwrap();
    assert_eq!(config.server.port, 9000);
    assert_eq!(config.server.request_timeout_seconds, 25);
    let config = load("kubernetes: {}\n", &Env::new()).unwrap();
    assert_eq!(config.kubernetes.timeout_seconds, 10);
}

#[test]
fn namespaces_are_dns_labels() {
    fails_at("namespace: CI_CD\n", 1, "namespace", "not a DNS-1123 label");
    fails_at(
        &format!("{BASE}    namespace: team.a\n"),
        5,
        "repositories[0].namespace",
        "not a DNS-1123 label",
    );
}

#[test]
fn a_rule_runs_exactly_one_of_pipeline_and_task() {
    fails_at(
        &format!("{BASE}    task: lint\n"),
        5,
        "repositories[0].task",
        "only one of `pipeline` and `task`",
    );
    fails_at(
        "repositories:\n  - url: https://github.com/org/app\n    branches: [main]\n",
        2,
        "repositories[0]",
        "set `pipeline`",
    );
}

#[test]
fn urls_look_like_git_urls() {
    fails_at(
        "repositories:\n  - pipeline: build\n    url: github.com/org/app\n",
        3,
        "repositories[0].url",
        "not a git repository URL",
    );
    fails_at(
        "repositories:\n  - pipeline: build\n    url: \"\"\n",
        3,
        "repositories[0].url",
        "not a git repository URL",
    );
    let globs = "repositories:\n  - url: git@github.com:org/*\n    pipeline: build\n";
    load(globs, &Env::new()).unwrap();
}

#[test]
fn rule_names_are_short_dns_labels() {
    fails_at(
        &format!("{BASE}    name: Build_All\n"),
        5,
        "repositories[0].name",
        "DNS-1123 label of at most 30",
    );
    let long = "a".repeat(31);
    fails_at(
        &format!("repositories:\n  - url: https://h/o/r\n    task: {long}\n"),
        3,
        "repositories[0].task",
        "defaults to the task name, set `name`",
    );
}

/// Which provider a rule is bound to when it names none, for the provider entries in
/// `providers` (as YAML) and the rule's URL.
fn bound(providers: &str, url: &str) -> Result<GitProvider, String> {
    let text =
        format!("providers:\n{providers}repositories:\n  - url: {url}\n    pipeline: build\n");
    load(&text, &Env::new())
        .map(|config| bound_provider(&config.repositories[0], &config.providers).unwrap())
        .map_err(|error| error.to_string())
}

#[test]
fn rules_are_bound_to_a_provider_inferred_from_the_host_or_the_one_configured() {
    let gitlab_only = "  gitlab: { insecure: true }\n";
    let two = "  gitlab: { insecure: true }\n  gitea: { insecure: true }\n";
    // A well-known host decides, whatever is configured.
    for (url, provider) in [
        ("https://github.com/org/app", GitProvider::Github),
        ("git@GitLab.com:group/sub/app.git", GitProvider::Gitlab),
        ("https://bitbucket.org/team/app", GitProvider::Bitbucket),
        ("https://codeberg.org/org/app", GitProvider::Forgejo),
        ("https://gitea.com/org/*", GitProvider::Gitea),
    ] {
        assert_eq!(bound(two, url), Ok(provider), "{url}");
    }
    assert_eq!(
        bound(gitlab_only, "https://github.com/org/app"),
        Ok(GitProvider::Github)
    );
    // Any other host: the one configured git provider (flux and registry do not count).
    let with_flux = format!("{gitlab_only}  flux: {{ insecure: true }}\n");
    assert_eq!(
        bound(&with_flux, "https://git.example.com/org/app"),
        Ok(GitProvider::Gitlab)
    );
    // ...and with none or several, the config is refused at the rule, asking for `provider`.
    let message = bound(two, "https://git.example.com/org/app").unwrap_err();
    assert!(
        message.starts_with("tekflux.yaml:5:5: repositories[0]: git.example.com is not a well-known host and 2 git providers are configured (gitlab, gitea): set `provider`"),
        "{message}"
    );
    let message = bound(
        "  flux: { insecure: true }\n",
        "git@git.example.com:org/app",
    )
    .unwrap_err();
    assert!(
        message.contains("no git provider is configured: set `provider`"),
        "{message}"
    );
}

#[test]
fn an_explicit_provider_binds_unless_the_host_says_otherwise() {
    let text = "\
providers:
  github: { insecure: true }
  gitea: { insecure: true }
repositories:
  - url: https://git.example.com/org/app
    provider: gitea
    pipeline: build
  - url: https://ghe.example.com/org/app
    provider: github
    pipeline: build
";
    let config = load(text, &Env::new()).unwrap();
    let providers: Vec<_> = config
        .repositories
        .iter()
        .map(|rule| bound_provider(rule, &config.providers).unwrap())
        .collect();
    assert_eq!(providers, [GitProvider::Gitea, GitProvider::Github]);

    fails_at(
        &format!("{BASE}    provider: gitlab\n"),
        5,
        "repositories[0].provider",
        "github.com is github's, so its pushes come only from github",
    );
    fails_at(
        &format!("{BASE}    provider: gogs\n"),
        5,
        "repositories[0].provider",
        "`gogs` is not one of github, gitlab, gitea, forgejo, bitbucket",
    );
}

#[test]
fn globs_never_stand_for_a_host() {
    for url in [
        "https://*.example.com/org/app",
        "https://github.com*/org/app",
        "git@git?b.com:org/*",
        "ssh://git@{github.com,evil.example}/org/app",
    ] {
        let text = format!(
            "repositories:\n  - url: \"{url}\"\n    provider: github\n    pipeline: build\n"
        );
        let message = error(&text, &Env::new());
        assert!(
            message.contains("repositories[0].url: the host") && message.contains("glob"),
            "{url}: {message}"
        );
    }
    // An IPv6 literal's brackets are no glob.
    let text = "repositories:\n  - url: \"http://[fd00::1]:3000/org/*\"\n    provider: gitea\n    pipeline: build\n";
    load(text, &Env::new()).unwrap();
}

#[test]
fn rule_names_are_unique_per_repository() {
    // Different repositories may share a rule name: onboarding ten repositories that all run
    // the `build` pipeline stays one short rule each.
    let shared = "\
repositories:
  - url: https://github.com/org/a
    pipeline: build
  - url: https://github.com/org/b
    pipeline: build
";
    load(shared, &Env::new()).unwrap();
    let text = "\
repositories:
  - url: https://github.com/org/a
    pipeline: build
  - url: https://github.com/org/a.git
    pipeline: build
    branches: [release/*]
";
    fails_at(
        text,
        5,
        "repositories[1].pipeline",
        "already used for this repository by repositories[0]; rules of one repository that run the same pipeline or task need",
    );
    let explicit = "\
repositories:
  - url: https://github.com/org/a
    name: a
    pipeline: build
  - url: https://github.com/org/a
    name: a
    task: lint
";
    fails_at(
        explicit,
        6,
        "repositories[1].name",
        "already used for this repository by repositories[0]",
    );
    let named = "\
repositories:
  - url: https://github.com/org/a
    name: build-a
    pipeline: build
  - url: https://github.com/org/b
    name: build-b
    pipeline: build
";
    load(named, &Env::new()).unwrap();
}

#[test]
fn workspaces_have_one_volume_source_and_archive_only_claims() {
    fails_at(
        &format!("{BASE}    workspaces:\n      w:\n        claim: c\n        emptyDir: {{}}\n"),
        7,
        "repositories[0].workspaces.w",
        "exactly one volume source",
    );
    fails_at(
        &format!("{BASE}    workspaces:\n      w: {{}}\n"),
        6,
        "repositories[0].workspaces.w",
        "exactly one volume source",
    );
    fails_at(
        &format!(
            "{BASE}    workspaces:\n      w:\n        volumeClaimTemplate: {{ storage: 1Gi }}\n        archive: true\n"
        ),
        8,
        "repositories[0].workspaces.w.archive",
        "only a `claim` workspace",
    );
}

#[test]
fn timeouts_are_go_durations() {
    fails_at(
        &format!("{BASE}    timeout: 1 hour\n"),
        5,
        "repositories[0].timeout",
        "not a Go duration",
    );
    let config = load(&format!("{BASE}    timeout: 1h30m\n"), &Env::new()).unwrap();
    assert_eq!(
        config.repositories[0].timeout_duration(),
        Some(Duration::from_secs(5400))
    );
    let config = load(&format!("{BASE}    timeout: \"0\"\n"), &Env::new()).unwrap();
    assert_eq!(
        config.repositories[0].timeout_duration(),
        Some(Duration::ZERO)
    );
}

#[test]
fn release_rules() {
    fails_at(
        "releases:\n  - image: r/app\n    helmRelease: cicd/App\n    from: any\n",
        3,
        "releases[0].helmRelease",
        "not `name` or `namespace/name`",
    );
    fails_at(
        "releases:\n  - image: r/app\n    chart: app\n    helmRelease: app\n    from: any\n",
        3,
        "releases[0].chart",
        "only one of `image` and `chart`",
    );
    fails_at(
        "releases:\n  - helmRelease: app\n    from: any\n",
        2,
        "releases[0]",
        "set `image`",
    );
    fails_at(
        "releases:\n  - image: r/app\n    helmRelease: app\n    set: image..tag\n    from: any\n",
        4,
        "releases[0].set",
        "dotted values path",
    );
    let config = load(
        "releases:\n  - chart: app\n    helmRelease: app\n    api: helmOperator\n    from: any\n",
        &Env::new(),
    )
    .unwrap();
    assert_eq!(config.releases[0].helm_release_ref("cicd"), ("cicd", "app"));
    assert_eq!(config.releases[0].api, HelmReleaseApi::HelmOperator);
}

#[test]
fn storage_limits() {
    fails_at(
        "storage:\n  bucket: b\n  compressionLevel: 23\n",
        3,
        "storage.compressionLevel",
        "not a zstd level",
    );
    fails_at(
        "storage:\n  partSizeMib: 4\n",
        2,
        "storage.partSizeMib",
        "5 to 5120 MiB",
    );
    fails_at(
        "storage:\n  maxArchiveBytes: 0\n",
        2,
        "storage.maxArchiveBytes",
        "must be above 0",
    );
    fails_at(
        "storage:\n  mounts:\n    tekton-workspace: workspaces/\n",
        3,
        "storage.mounts.tekton-workspace",
        "not an absolute path",
    );
    fails_at(
        "storage:\n  endpoint: minio:9000\n",
        2,
        "storage.endpoint",
        "not an http(s) URL",
    );
}

#[test]
fn server_limits() {
    fails_at(
        "server:\n  bodyLimit: 0\n",
        2,
        "server.bodyLimit",
        "above 0",
    );
    fails_at(
        "server:\n  requestTimeoutSeconds: 3601\n",
        2,
        "server.requestTimeoutSeconds",
        "grace period",
    );
    fails_at(
        "server:\n  port: 8080\n  shutdownTimeoutSeconds: 0\n",
        3,
        "server.shutdownTimeoutSeconds",
        "outside 1 to 3600",
    );
    fails_at(
        "kubernetes:\n  timeoutSeconds: 0\n",
        2,
        "kubernetes.timeoutSeconds",
        "above 0",
    );
    fails_at(
        "server:\n  maxConcurrentRequests: 0\n",
        2,
        "server.maxConcurrentRequests",
        "above 0",
    );
    fails_at(
        "server:\n  bodyLimit: 2048\n  maxBodyBytesInFlight: 1024\n",
        3,
        "server.maxBodyBytesInFlight",
        "below bodyLimit",
    );
}

#[test]
fn providers_use_their_own_credential_key() {
    let env = Env::new().with("S", "x");
    let message = error("providers:\n  gitlab:\n    secret: env:S\n", &env);
    assert!(
        message.contains("tekflux.yaml:3:13: providers.gitlab.secret: gitlab authenticates")
            && message.contains("use `token`"),
        "{message}"
    );
    let message = error("providers:\n  github:\n    token: env:S\n", &env);
    assert!(
        message.contains("tekflux.yaml:3:12: providers.github.token:")
            && message.contains("use `secret`"),
        "{message}"
    );
    fails_at(
        "providers:\n  bitbucket: {}\n",
        2,
        "providers.bitbucket",
        "`insecure: true`",
    );
    let config = load("providers:\n  gitea: { insecure: true }\n", &Env::new()).unwrap();
    assert!(config.providers.gitea.unwrap().insecure);
    // Flux's generic-hmac Provider signs too: `secret`, also from TEKFLUX_FLUX_SECRET.
    let message = error("providers:\n  flux:\n    token: env:S\n", &env);
    assert!(message.contains("providers.flux.token:"), "{message}");
    fails_at(
        "providers:\n  flux: {}\n",
        2,
        "providers.flux",
        "`insecure: true`",
    );
    let config = load(
        "namespace: cicd\n",
        &Env::new().with("TEKFLUX_FLUX_SECRET", "f"),
    )
    .unwrap();
    assert_eq!(
        config.providers.flux.unwrap().secret.unwrap().expose(),
        b"f"
    );
    // Registries send a fixed Authorization header: `token`.
    let message = error("providers:\n  registry:\n    secret: env:S\n", &env);
    assert!(message.contains("use `token`"), "{message}");
    let config = load(
        "namespace: cicd\n",
        &Env::new().with("TEKFLUX_REGISTRY_TOKEN", "r"),
    )
    .unwrap();
    assert_eq!(
        config.providers.registry.unwrap().token.unwrap().expose(),
        b"r"
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = "\
namespace: Bad
repositories:
  - url: nope
    pipeline: build
    task: build
";
    let error = load(text, &Env::new()).unwrap_err();
    let lines: Vec<usize> = error
        .problems()
        .iter()
        .map(|problem| match &problem.location {
            Location::File { line, .. } => *line,
            Location::Env { variable } => panic!("unexpected env problem {variable}"),
        })
        .collect();
    assert_eq!(lines, [1, 3, 5], "{error}");
}

#[test]
fn secrets_resolve_from_env_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file\r\n").unwrap();
    let text = format!(
        "providers:\n  github: {{ secret: env:GH }}\n  gitlab:\n    token: file:{}\n",
        file.display()
    );
    let config = load(&text, &Env::new().with("GH", "from-env")).unwrap();
    let github = config
        .providers
        .github
        .as_ref()
        .unwrap()
        .secret
        .as_ref()
        .unwrap();
    assert_eq!(github.expose(), b"from-env");
    assert_eq!(github.source(), &SecretSource::Env("GH".into()));
    let gitlab = config
        .providers
        .gitlab
        .as_ref()
        .unwrap()
        .token
        .as_ref()
        .unwrap();
    assert_eq!(gitlab.expose(), b"from-file");
}

#[test]
fn missing_secrets_fail_without_printing_values() {
    let env = Env::new().with("UNRELATED", "do-not-print");
    let message = error("providers:\n  github:\n    secret: env:GH_HOOK\n", &env);
    assert!(
        message.contains("tekflux.yaml:3:13: providers.github.secret:")
            && message.contains("GH_HOOK is not set"),
        "{message}"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let message = error(
        &format!(
            "providers:\n  gitea:\n    secret: file:{}\n",
            missing.display()
        ),
        &env,
    );
    assert!(
        message.contains("providers.gitea.secret:") && message.contains("cannot read secret file"),
        "{message}"
    );
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(!message.contains("do-not-print"));
}

#[test]
fn literal_secrets_are_refused_without_echoing_them() {
    let message = error(
        "providers:\n  github:\n    secret: hunter2-webhook-secret\n",
        &Env::new(),
    );
    assert!(
        message.starts_with("tekflux.yaml:3:5: providers.github.secret:"),
        "{message}"
    );
    assert!(
        message.contains("env:NAME") && message.contains("file:/path"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn debug_of_a_loaded_config_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (env, text) = design_env(&dir);
    let env = env.with("TEKFLUX_BITBUCKET_SECRET", "bb-secret-value");
    let config = load(&text, &env).unwrap();
    let debug = format!("{config:?}");
    for value in ["gh-secret-value", "gl-token-value", "bb-secret-value"] {
        assert!(!debug.contains(value), "{value} in {debug}");
    }
    assert!(
        debug.contains("Secret(env:GITHUB_WEBHOOK_SECRET)"),
        "{debug}"
    );
    assert!(
        debug.contains("Secret(env:TEKFLUX_BITBUCKET_SECRET)"),
        "{debug}"
    );
    assert_eq!(
        format!("{:?}", Secret::literal("test", "xyz")),
        "Secret(literal:test)"
    );
}

#[test]
fn env_overrides_apply_after_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("gl");
    std::fs::write(&secret_file, "gl-file\n").unwrap();
    let env = Env::new()
        .with("PORT", "9090")
        .with("TEKFLUX_NAMESPACE", "builds")
        .with("TEKFLUX_BODY_LIMIT", "1024")
        .with("TEKFLUX_REQUEST_TIMEOUT_SECONDS", "15")
        .with("TEKFLUX_SHUTDOWN_TIMEOUT_SECONDS", "12")
        .with("TEKFLUX_KUBE_TIMEOUT_SECONDS", "3")
        .with("TEKFLUX_S3_BUCKET", "archives")
        .with("TEKFLUX_S3_PREFIX", "tekflux/")
        .with("TEKFLUX_S3_ENDPOINT", "http://minio.minio:9000")
        .with("TEKFLUX_S3_REGION", "eu-west-1")
        .with("TEKFLUX_S3_FORCE_PATH_STYLE", "1")
        .with("TEKFLUX_S3_COMPRESSION_LEVEL", "19")
        .with("TEKFLUX_S3_PART_SIZE_MIB", "64")
        .with("TEKFLUX_S3_MAX_ARCHIVE_BYTES", "1099511627776")
        .with("TEKFLUX_S3_CLEANUP", "TRUE")
        .with("TEKFLUX_GITHUB_SECRET", "gh-literal")
        .with("TEKFLUX_GITLAB_TOKEN_FILE", secret_file.to_str().unwrap())
        .with("TEKFLUX_GITEA_SECRET", "");
    let config = load(
        &format!("{BASE}server:\n  port: 8081\nstorage:\n  bucket: from-file\n"),
        &env,
    )
    .unwrap();
    assert_eq!(config.server.port, 9090);
    assert_eq!(config.namespace, "builds");
    assert_eq!(config.server.body_limit, 1024);
    assert_eq!(config.server.request_timeout_seconds, 15);
    assert_eq!(config.server.shutdown_timeout_seconds, 12);
    assert_eq!(config.kubernetes.timeout_seconds, 3);
    let storage = &config.storage;
    assert_eq!(storage.bucket.as_deref(), Some("archives"));
    assert_eq!(storage.prefix, "tekflux/");
    assert_eq!(storage.endpoint.as_deref(), Some("http://minio.minio:9000"));
    assert_eq!(storage.region.as_deref(), Some("eu-west-1"));
    assert!(storage.force_path_style);
    assert_eq!(storage.compression_level, Some(19));
    assert_eq!(storage.part_size_mib, Some(64));
    assert_eq!(storage.max_archive_bytes, Some(1 << 40));
    assert!(storage.cleanup);
    let github = config.providers.github.as_ref().unwrap();
    assert_eq!(github.secret.as_ref().unwrap().expose(), b"gh-literal");
    let gitlab = config.providers.gitlab.as_ref().unwrap();
    assert_eq!(gitlab.token.as_ref().unwrap().expose(), b"gl-file");
    // Empty means unset.
    assert!(config.providers.gitea.is_none());
}

#[test]
fn bad_overrides_name_the_variable() {
    let cases = [
        ("PORT", "http", "PORT"),
        ("TEKFLUX_S3_FORCE_PATH_STYLE", "yes", "true, false, 1, 0"),
        ("TEKFLUX_S3_PART_SIZE_MIB", "-1", "TEKFLUX_S3_PART_SIZE_MIB"),
        (
            "TEKFLUX_S3_MAX_ARCHIVE_BYTES",
            "64GiB",
            "TEKFLUX_S3_MAX_ARCHIVE_BYTES",
        ),
        (
            "TEKFLUX_S3_MAX_ARCHIVE_BYTES",
            "0",
            "storage.maxArchiveBytes: must be above 0",
        ),
        ("TEKFLUX_BODY_LIMIT", "25MiB", "TEKFLUX_BODY_LIMIT"),
        // Values that parse but break a rule name the variable, not a line of the file.
        (
            "TEKFLUX_NAMESPACE",
            "Builds",
            "namespace: \"Builds\" is not a DNS-1123",
        ),
        (
            "TEKFLUX_S3_COMPRESSION_LEVEL",
            "40",
            "storage.compressionLevel",
        ),
        ("TEKFLUX_REQUEST_TIMEOUT_SECONDS", "3601", "grace period"),
        (
            "TEKFLUX_GITLAB_SECRET",
            "x",
            "use TEKFLUX_GITLAB_TOKEN or TEKFLUX_GITLAB_TOKEN_FILE",
        ),
        ("TEKFLUX_GITHUB_TOKEN", "x", "TEKFLUX_GITHUB_SECRET"),
    ];
    for (variable, value, words) in cases {
        let message = error(BASE, &Env::new().with(variable, value));
        assert!(
            message.starts_with(&format!("environment variable {variable}: ")),
            "{variable}: {message}"
        );
        assert!(message.contains(words), "{variable}: {message}");
    }

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let env = Env::new().with("TEKFLUX_GITHUB_SECRET_FILE", missing.to_str().unwrap());
    let message = error(BASE, &env);
    assert!(
        message.starts_with(
            "environment variable TEKFLUX_GITHUB_SECRET_FILE: providers.github.secret: cannot read"
        ),
        "{message}"
    );

    let env = Env::new()
        .with("TEKFLUX_GITHUB_SECRET", "x")
        .with("TEKFLUX_GITHUB_SECRET_FILE", "/x");
    assert!(error(BASE, &env).contains("only one of TEKFLUX_GITHUB_SECRET and"));
}

#[test]
fn a_bad_override_names_the_field_it_would_set() {
    let cases = [
        ("PORT", "http", "server.port"),
        (
            "TEKFLUX_KUBE_TIMEOUT_SECONDS",
            "-1",
            "kubernetes.timeoutSeconds",
        ),
        (
            "TEKFLUX_S3_FORCE_PATH_STYLE",
            "yes",
            "storage.forcePathStyle",
        ),
        ("TEKFLUX_EVENTS_INSECURE", "maybe", "events.insecure"),
    ];
    for (variable, value, field) in cases {
        let message = error(BASE, &Env::new().with(variable, value));
        assert!(
            message.starts_with(&format!("environment variable {variable}: {field}: ")),
            "{message}"
        );
    }
}

#[test]
fn an_override_naming_a_misspelled_provider_is_an_error_naming_the_known_ones() {
    for variable in [
        "TEKFLUX_GITLBA_TOKEN",
        "TEKFLUX_GITHB_SECRET_FILE",
        "TEKFLUX_BITBUCKIT_STATUS_TOKEN",
    ] {
        let message = error(BASE, &Env::new().with(variable, "s3cr3t-value"));
        assert!(
            message.starts_with(&format!("environment variable {variable}: ")),
            "{message}"
        );
        assert!(
            message.contains(
                "known providers: github, gitlab, gitea, forgejo, bitbucket, flux, registry"
            ),
            "{message}"
        );
        assert!(!message.contains("s3cr3t-value"), "{message}");
    }
    // Nothing lands in another provider's settings, GitHub's least of all.
    let config = load(
        "providers:\n  github: { insecure: true }\n",
        &Env::new().with("TEKFLUX_GITHUB_SECRET", "gh"),
    )
    .unwrap();
    assert_eq!(
        config.providers.github.unwrap().secret.unwrap().expose(),
        b"gh"
    );
    // Variables of that shape that belong to other tools, and the senders' token, are no
    // provider's.
    for variable in ["TEKFLUX_TEST_S3_SECRET", "TEKFLUX_EVENTS_TOKEN"] {
        assert!(
            load(BASE, &Env::new().with(variable, "x")).is_ok(),
            "{variable}"
        );
    }
}

#[test]
fn secret_values_from_overrides_never_appear_in_errors() {
    let env = Env::new()
        .with("TEKFLUX_GITHUB_SECRET", "gh-literal-value")
        .with("TEKFLUX_NAMESPACE", "Bad");
    let message = error(BASE, &env);
    assert!(!message.contains("gh-literal-value"), "{message}");
}

/// A function's own check, as git-push's rule compilation reports: a field named as text.
fn second_branch_is_refused(config: &Config, _: &mut Prepared) -> Vec<Finding> {
    config
        .repositories
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.branches.len() > 1)
        .map(|(index, _)| Finding {
            path: FieldPath::parse(&format!("repositories[{index}].branches[1]")),
            message: "one branch only".to_owned(),
        })
        .collect()
}

#[test]
fn a_functions_own_checks_are_located_like_the_common_rules() {
    let text = "repositories:\n  - url: https://github.com/org/app\n    pipeline: build\n    \
                branches: [main, dev]\n";
    let env = Env::new().with("TEKFLUX_GITHUB_SECRET", "s");
    let check = |text: &str| {
        Config::from_yaml_checked(
            text,
            ORIGIN,
            &env,
            Sections::ALL,
            &[second_branch_is_refused],
        )
    };
    let message = check(text).unwrap_err().to_string();
    assert_eq!(
        message,
        "tekflux.yaml:4:22: repositories[0].branches[1]: one branch only"
    );
    // Without the check the file is valid; with a common problem too, only that one is said.
    assert!(Config::from_yaml(text, ORIGIN, &env).is_ok());
    let both = format!("namespace: Bad\n{text}");
    let message = check(&both).unwrap_err().to_string();
    assert!(
        message.contains("tekflux.yaml:1:12: namespace:"),
        "{message}"
    );
    assert!(!message.contains("one branch only"), "{message}");
}

/// A check that keeps the number of rules it saw, as git-push keeps its compiled table.
fn count_rules(config: &Config, prepared: &mut Prepared) -> Vec<Finding> {
    prepared.insert(config.repositories.len());
    Vec::new()
}

#[test]
fn what_a_check_builds_is_kept_only_for_a_config_that_passes() {
    let text = "repositories:\n  - url: https://github.com/org/app\n    pipeline: build\n    \
                branches: [main, dev]\n";
    let env = Env::new().with("TEKFLUX_GITHUB_SECRET", "s");
    let (_, prepared) =
        Config::from_yaml_prepared(text, ORIGIN, &env, Sections::ALL, &[count_rules]).unwrap();
    assert_eq!(prepared.get::<usize>(), Some(&1));
    assert_eq!(prepared.get::<String>(), None);
    // A later check that refuses the config: nothing is handed on, the error is.
    let refused = Config::from_yaml_prepared(
        text,
        ORIGIN,
        &env,
        Sections::ALL,
        &[count_rules, second_branch_is_refused],
    );
    assert!(matches!(refused, Err(ConfigError::Invalid(_))));
}

#[test]
fn exit_code_is_ex_usage() {
    assert_eq!(EX_USAGE, 64);
}

#[test]
fn event_senders_are_checked() {
    let with = |events: &str| format!("{BASE}events:\n{events}");
    let good = with(
        "  token: env:EVENTS_TOKEN\n  oidc:\n    issuer: https://kubernetes.default.svc\n    \
         runComplete:\n      audience: tekflux/run-complete\n      senders:\n        \
         - system:serviceaccount:cicd:run-complete-*\n",
    );
    let config = load(&good, &Env::new().with("EVENTS_TOKEN", "t0ken")).unwrap();
    assert_eq!(config.events.token.unwrap().expose(), b"t0ken");
    let oidc = config.events.oidc.unwrap();
    assert!(oidc.git_push.is_none());
    assert_eq!(oidc.run_complete.unwrap().senders.len(), 1);

    fails_at(
        &with("  oidc:\n    issuer: not a url\n    gitPush:\n      senders: [a]\n"),
        7,
        "events.oidc.issuer",
        "not a URL",
    );
    fails_at(
        &with("  oidc:\n    gitPush:\n      senders: []\n"),
        8,
        "events.oidc.gitPush.senders",
        "lists no sender",
    );
    fails_at(
        &with("  oidc:\n    gitPush:\n      senders: [\"*\", \"system:*:cicd:x\"]\n"),
        8,
        "events.oidc.gitPush.senders[0]",
        "trailing `*`",
    );
    fails_at(
        &with("  oidc:\n    gitPush:\n      senders: [ok, \"system:*:cicd:x\"]\n"),
        8,
        "events.oidc.gitPush.senders[1]",
        "trailing `*`",
    );
    fails_at(&with("  oidc: {}\n"), 6, "events.oidc", "names no function");
    fails_at(&with("  token: s3cret\n"), 6, "events.token", "reference");
}

#[test]
fn the_events_token_and_insecure_come_from_the_environment_too() {
    let env = Env::new()
        .with("TEKFLUX_EVENTS_TOKEN", "from-env")
        .with("TEKFLUX_EVENTS_INSECURE", "true");
    let config = load(BASE, &env).unwrap();
    assert_eq!(config.events.token.unwrap().expose(), b"from-env");
    assert!(config.events.insecure);
    let both = Env::new()
        .with("TEKFLUX_EVENTS_TOKEN", "a")
        .with("TEKFLUX_EVENTS_TOKEN_FILE", "/x");
    let message = error(BASE, &both);
    assert!(message.contains("TEKFLUX_EVENTS_TOKEN_FILE"), "{message}");
    assert!(!message.contains(": a"), "{message}");
}

/// `BASE` (one rule, `build`, for github.com/org/app) and one image release rule whose
/// `from:` and further keys are `rest`, indented under it.
fn release_with(rest: &str) -> String {
    format!("{BASE}releases:\n  - image: r/app\n    helmRelease: app\n    set: image.tag\n{rest}")
}

#[test]
fn release_rules_must_say_which_builds_may_release() {
    // Missing: the message explains both choices.
    let message = error(&release_with(""), &Env::new());
    assert!(message.contains(&format!("{ORIGIN}:6:")), "{message}");
    for words in [
        "releases[0]: no `from:`",
        "rules: [",
        "branches: [main]",
        "`from: any`",
        "unsafe",
    ] {
        let words = if words == "unsafe" {
            "anyone who can send release-changed an event can then release"
        } else {
            words
        };
        assert!(message.contains(words), "{words:?} not in:\n{message}");
    }
    // The explicit unsafe choice, and the checked one.
    let config = load(&release_with("    from: any\n"), &Env::new()).unwrap();
    assert_eq!(config.releases[0].from, Some(ReleaseFrom::Any));
    assert!(config.releases[0].from_any());
    let config = load(
        &release_with(
            "    from:\n      rules: [build]\n      branches: [main, \"release/*\"]\n      tags: [\"v*\"]\n      registry: true\n",
        ),
        &Env::new(),
    )
    .unwrap();
    let sources = config.releases[0].from_sources().unwrap();
    assert_eq!(sources.branches, ["main", "release/*"]);
    assert_eq!(sources.tags, ["v*"]);
    assert!(sources.registry);
    // Registry pushes alone are a choice too.
    load(&release_with("    from: { registry: true }\n"), &Env::new()).unwrap();

    fails_at(
        &release_with("    from: anyone\n"),
        9,
        "releases[0].from",
        "expected `any` or a mapping",
    );
    fails_at(
        &release_with("    from: { rules: [build], branch: [main] }\n"),
        9,
        "releases[0].from.branch",
        "unknown key `branch` (did you mean `branches`?)",
    );
}

#[test]
fn from_names_existing_rules_and_valid_globs() {
    fails_at(
        &release_with("    from: { rules: [biuld], branches: [main] }\n"),
        9,
        "releases[0].from.rules[0]",
        "no rule named \"biuld\" in `repositories`",
    );
    fails_at(
        &release_with("    from: { rules: [build] }\n"),
        9,
        "releases[0].from",
        "which refs",
    );
    fails_at(
        &release_with("    from: { branches: [main] }\n"),
        9,
        "releases[0].from.rules",
        "name the `repositories` rules",
    );
    fails_at(
        &release_with("    from: {}\n"),
        9,
        "releases[0].from",
        "admits nothing",
    );
    for (glob, words) in [
        ("\"release/[0-9]*\"", "only wildcards"),
        ("refs/heads/main", "name the branch or tag itself"),
        ("\"v***\"", "`***`"),
        ("\"\"", "empty glob"),
    ] {
        fails_at(
            &release_with(&format!(
                "    from: {{ rules: [build], branches: [main, {glob}] }}\n"
            )),
            9,
            "releases[0].from.branches[1]",
            words,
        );
    }
    fails_at(
        &release_with("    from:\n      rules: [build]\n      tags: [\"{v1,v2}\"]\n"),
        11,
        "releases[0].from.tags[0]",
        "is not allowed",
    );
    // A chart's versions come with no build to check.
    fails_at(
        &format!(
            "{BASE}releases:\n  - chart: app\n    helmRelease: app\n    from: {{ rules: [build], branches: [main] }}\n"
        ),
        8,
        "releases[0].from",
        "use `from: any`",
    );
    // A rule name shared by two repositories is ambiguous.
    let shared = format!(
        "{BASE}  - url: https://github.com/org/other\n    pipeline: build\nreleases:\n  - image: r/app\n    helmRelease: app\n    from: {{ rules: [build], branches: [main] }}\n"
    );
    fails_at(
        &shared,
        10,
        "releases[0].from.rules[0]",
        "several repositories",
    );
}

#[test]
fn declared_values_never_reach_a_guarded_set_path() {
    let config = load(
        &release_with("    from: { rules: [build], branches: [main] }\n    values: [replicaCount, resources.limits]\n"),
        &Env::new(),
    )
    .unwrap();
    assert_eq!(
        config.releases[0].values,
        ["replicaCount", "resources.limits"]
    );
    for (values, words) in [
        ("[image]", "overlaps \"image.tag\""),
        ("[image.tag]", "overlaps \"image.tag\""),
        ("[image.tag.x]", "overlaps \"image.tag\""),
        ("[\"a..b\"]", "not a dotted values path"),
    ] {
        fails_at(
            &release_with(&format!(
                "    from: {{ rules: [build], branches: [main] }}\n    values: {values}\n"
            )),
            10,
            "releases[0].values[0]",
            words,
        );
    }
    // With `from: any` anyone may release anyway, so the path may be declared.
    load(
        &release_with("    from: any\n    values: [image]\n"),
        &Env::new(),
    )
    .unwrap();
}

/// A file with every kind of secret reference, a broken release rule and a broken server
/// setting: what each command may and may not ignore.
const EVERY_SECTION: &str = "\
namespace: cicd
providers:
  github: { secret: env:GITHUB_WEBHOOK_SECRET }
  gitlab: { token: file:/nonexistent/gitlab-token }
events:
  token: env:EVENTS_TOKEN
server:
  bodyLimit: 0
storage:
  bucket: workspaces
  forcePathStyle: true
repositories:
  - url: https://github.com/acme/shop
    pipeline: build
releases:
  - image: registry.example.com/shop
    helmRelease: cicd/shop
    set: image.tag
";

fn load_sections(text: &str, env: &Env, sections: Sections) -> Result<Config, ConfigError> {
    Config::from_yaml_sections(text, ORIGIN, env, sections)
}

#[test]
fn storage_sections_read_no_secret_and_check_only_storage() {
    let config = load_sections(EVERY_SECTION, &Env::new(), Sections::STORAGE).unwrap();
    assert_eq!(config.storage.bucket.as_deref(), Some("workspaces"));
    let github = config.providers.github.as_ref().unwrap();
    assert!(!github.secret.as_ref().unwrap().is_resolved());
    assert!(!config.events.token.as_ref().unwrap().is_resolved());

    // What archive and restore use is still checked, in the file and from the environment.
    let broken = EVERY_SECTION.replace("  forcePathStyle: true\n", "  partSizeMib: 1\n");
    let error = load_sections(&broken, &Env::new(), Sections::STORAGE)
        .unwrap_err()
        .to_string();
    assert!(error.contains("storage.partSizeMib"), "{error}");
    assert_eq!(
        error.lines().count(),
        1,
        "only the storage problem: {error}"
    );
    let env = Env::new().with("TEKFLUX_S3_COMPRESSION_LEVEL", "fast");
    let error = load_sections(EVERY_SECTION, &env, Sections::STORAGE)
        .unwrap_err()
        .to_string();
    assert!(error.contains("TEKFLUX_S3_COMPRESSION_LEVEL"), "{error}");
    // Overrides of sections it does not use do not stop it.
    let env = Env::new()
        .with("PORT", "not-a-port")
        .with("TEKFLUX_GITHUB_SECRET", "a")
        .with("TEKFLUX_GITHUB_SECRET_FILE", "/b");
    load_sections(EVERY_SECTION, &env, Sections::STORAGE).unwrap();
}

#[test]
fn routing_sections_read_no_secret_but_check_the_rules() {
    let config = load_sections(EVERY_SECTION, &Env::new(), Sections::ROUTING).unwrap();
    assert_eq!(config.repositories.len(), 1);
    assert!(
        !config
            .providers
            .github
            .as_ref()
            .unwrap()
            .secret
            .as_ref()
            .unwrap()
            .is_resolved()
    );
    // A provider entry without any credential is still a routing problem.
    let unauthenticated = EVERY_SECTION.replace(
        "  github: { secret: env:GITHUB_WEBHOOK_SECRET }\n",
        "  github: {}\n",
    );
    let error = load_sections(&unauthenticated, &Env::new(), Sections::ROUTING)
        .unwrap_err()
        .to_string();
    assert!(error.contains("providers.github"), "{error}");
    let bad_rule = EVERY_SECTION.replace("pipeline: build", "pipeline: Build_It");
    let error = load_sections(&bad_rule, &Env::new(), Sections::ROUTING)
        .unwrap_err()
        .to_string();
    assert!(error.contains("repositories[0].pipeline"), "{error}");
}

#[test]
fn every_section_reads_every_secret_and_checks_every_rule() {
    let error = load_sections(EVERY_SECTION, &Env::new(), Sections::ALL)
        .unwrap_err()
        .to_string();
    for words in [
        "GITHUB_WEBHOOK_SECRET",
        "/nonexistent/gitlab-token",
        "EVENTS_TOKEN",
        "server.bodyLimit",
        "releases[0]",
    ] {
        assert!(error.contains(words), "{words} not in {error}");
    }
    // `from_yaml` and `load` are `Sections::ALL`.
    assert_eq!(
        load(EVERY_SECTION, &Env::new()).unwrap_err().to_string(),
        error
    );
    // A parse error stops every command: the file is one document.
    let typo = EVERY_SECTION.replace("forcePathStyle", "forcePathStlye");
    for sections in [Sections::ALL, Sections::ROUTING, Sections::STORAGE] {
        let error = load_sections(&typo, &Env::new(), sections).unwrap_err();
        assert_eq!(error.kind(), "parse", "{error}");
    }
}

// ---------------------------------------------------------------------------------------------
// commit statuses

const STATUS: &str = "\
namespace: cicd
providers:
  github:
    secret: env:HOOK
    status: { token: env:GH_STATUS, context: eu-1 }
repositories:
  - url: https://github.com/org/app
    pipeline: build
  - url: https://github.com/org/quiet
    pipeline: build
    status: false
  - url: https://github.com/org/named
    pipeline: build
    status: { context: ci/named }
";

#[test]
fn a_provider_with_a_status_token_reports_for_its_rules_unless_told_not_to() {
    let env = Env::new().with("HOOK", "h").with("GH_STATUS", "ghp_x");
    let config = load(STATUS, &env).unwrap();
    let status = config.providers.github.as_ref().unwrap().status.as_ref();
    assert_eq!(status.unwrap().token.as_ref().unwrap().expose(), b"ghp_x");
    let [app, quiet, named] = &config.repositories[..] else {
        panic!()
    };
    assert!(app.reports_status(status));
    assert_eq!(app.status_context(status), "eu-1/build");
    assert!(!quiet.reports_status(status));
    assert!(named.reports_status(status));
    assert_eq!(named.status_context(status), "ci/named");
    assert!(!app.reports_status(None));
}

#[test]
fn a_status_token_from_the_environment_turns_reporting_on() {
    let env = Env::new()
        .with("HOOK", "h")
        .with("TEKFLUX_GITHUB_STATUS_TOKEN", "ghp_from_env");
    let text = "namespace: cicd\nproviders:\n  github: { secret: env:HOOK }\n";
    let config = load(text, &env).unwrap();
    let status = config.providers.github.unwrap().status.unwrap();
    assert_eq!(status.token.unwrap().expose(), b"ghp_from_env");
}

#[test]
fn status_settings_are_checked() {
    let env = Env::new().with("HOOK", "h").with("T", "t");
    let cases = [
        (
            "  gitea:\n    secret: env:HOOK\n    status: { token: env:T }\n",
            "providers.gitea.status.api",
        ),
        (
            "  github:\n    secret: env:HOOK\n    status: { api: \"ftp://x\", token: env:T }\n",
            "providers.github.status.api",
        ),
        (
            "  github:\n    secret: env:HOOK\n    status: { api: \"https://ghe/api/v3\" }\nrepositories:\n  - url: https://github.com/org/app\n    pipeline: build\n",
            "repositories[0].status: the rule reports to github without a token",
        ),
        (
            "  github:\n    secret: env:HOOK\n    status: { token: env:T, targetUrl: \"https://d/{run}\" }\n",
            "unknown variable {run}",
        ),
        (
            "  github:\n    secret: env:HOOK\n    status: { token: env:T, caBundle: /nonexistent/ca.pem }\n",
            "providers.github.status.caBundle",
        ),
        (
            "  github:\n    secret: env:HOOK\n    status: { token: env:T, app: { id: 1, installationId: 2, privateKey: env:T } }\n",
            "set only one of `token` (commit statuses) and `app` (check runs)",
        ),
        (
            "  gitlab:\n    token: env:HOOK\n    status: { app: { id: 1, installationId: 2, privateKey: env:T } }\n",
            "only GitHub reports as an App",
        ),
        (
            "  github:\n    secret: env:HOOK\n    status: { app: { id: 1, installationId: 2, privateKey: env:MISSING } }\n",
            "providers.github.status.app.privateKey",
        ),
    ];
    for (providers, expected) in cases {
        let text = format!("namespace: cicd\nproviders:\n{providers}");
        let message = error(&text, &env);
        assert!(message.contains(expected), "{expected}: {message}");
    }
    // A rule that insists on reporting to a provider without `status`.
    let text = "namespace: cicd\nproviders:\n  github: { secret: env:HOOK }\nrepositories:\n  - url: https://github.com/org/app\n    pipeline: build\n    status: true\n";
    let message = error(text, &env);
    assert!(
        message.contains("repositories[0].status") && message.contains("providers.github.status"),
        "{message}"
    );
}
