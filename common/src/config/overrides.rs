//! Environment variables that override the file, applied after it is parsed.
//!
//! An empty variable counts as unset, since manifests often carry `value: ""` for "nothing".
//! Provider credentials come in two forms, following the `*_FILE` convention: the variable
//! holds the value itself (Kubernetes puts Secrets into env vars through `secretKeyRef`, so
//! the variable already is the secret store), or `*_FILE` holds the path of a mounted file.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::Part;
use super::env::Env;
use super::keys;
use super::locate::FieldPath;
use super::model::Config;
use super::secret::{FILE_PREFIX, Secret};
use super::vars;
use crate::provider::{self, ProviderSpec, SecretKind};

/// A bad override value: the variable and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadOverride {
    /// The variable's name.
    pub variable: String,
    /// The field the variable would have set, when it names one.
    pub path: Option<FieldPath>,
    /// What is wrong; never the value of a secret variable.
    pub message: String,
    /// The part of the config the variable sets: a command that does not use it is not
    /// stopped by it.
    pub(crate) part: Part,
}

impl BadOverride {
    fn new(variable: impl Into<String>, message: String) -> Self {
        let variable = variable.into();
        Self {
            part: part_of(&variable),
            variable,
            path: None,
            message,
        }
    }

    fn at(mut self, path: &FieldPath) -> Self {
        self.path = Some(path.clone());
        self
    }
}

/// Which part of the config `variable` overrides.
fn part_of(variable: &str) -> Part {
    match variable {
        vars::NAMESPACE => Part::Routing,
        vars::PORT
        | vars::BODY_LIMIT
        | vars::REQUEST_TIMEOUT_SECONDS
        | vars::SHUTDOWN_TIMEOUT_SECONDS
        | vars::KUBE_TIMEOUT_SECONDS
        | vars::EVENTS_INSECURE => Part::Service,
        storage if storage.starts_with("TEKFLUX_S3_") => Part::Storage,
        // The provider credentials and the events token, and their misnamed forms.
        _ => Part::Secrets,
    }
}

/// Which fields the environment set, and by which variable, so that findings about them
/// point at the variable rather than at a line of the file.
pub type Overridden = BTreeMap<FieldPath, &'static str>;

/// Applies every override in `env` to `config`.
pub fn apply(config: &mut Config, env: &Env, overridden: &mut Overridden) -> Vec<BadOverride> {
    let mut bad = Vec::new();
    let root = FieldPath::root();
    let server = root.key(keys::SERVER);
    let storage = root.key(keys::STORAGE);
    let mut read = Reader {
        env,
        overridden,
        bad: &mut bad,
    };

    if let Some(value) = env.get_non_empty(vars::NAMESPACE) {
        config.namespace = value.to_owned();
        read.set(root.key(keys::NAMESPACE), vars::NAMESPACE);
    }
    if let Some(port) = read.number(vars::PORT, server.key(keys::PORT)) {
        config.server.port = port;
    }
    if let Some(limit) = read.number(vars::BODY_LIMIT, server.key(keys::BODY_LIMIT)) {
        config.server.body_limit = limit;
    }
    if let Some(seconds) = read.number(
        vars::REQUEST_TIMEOUT_SECONDS,
        server.key(keys::REQUEST_TIMEOUT_SECONDS),
    ) {
        config.server.request_timeout_seconds = seconds;
    }
    if let Some(seconds) = read.number(
        vars::SHUTDOWN_TIMEOUT_SECONDS,
        server.key(keys::SHUTDOWN_TIMEOUT_SECONDS),
    ) {
        config.server.shutdown_timeout_seconds = seconds;
    }
    if let Some(seconds) = read.number(
        vars::KUBE_TIMEOUT_SECONDS,
        root.key(keys::KUBERNETES).key(keys::TIMEOUT_SECONDS),
    ) {
        config.kubernetes.timeout_seconds = seconds;
    }

    let texts = [
        (vars::S3_BUCKET, keys::BUCKET, &mut config.storage.bucket),
        (
            vars::S3_ENDPOINT,
            keys::ENDPOINT,
            &mut config.storage.endpoint,
        ),
        (vars::S3_REGION, keys::REGION, &mut config.storage.region),
    ];
    for (variable, key, field) in texts {
        if let Some(value) = env.get_non_empty(variable) {
            *field = Some(value.to_owned());
            read.set(storage.key(key), variable);
        }
    }
    if let Some(prefix) = env.get_non_empty(vars::S3_PREFIX) {
        config.storage.prefix = prefix.to_owned();
        read.set(storage.key(keys::PREFIX), vars::S3_PREFIX);
    }
    if let Some(flag) = read.boolean(
        vars::S3_FORCE_PATH_STYLE,
        storage.key(keys::FORCE_PATH_STYLE),
    ) {
        config.storage.force_path_style = flag;
    }
    if let Some(flag) = read.boolean(vars::S3_CLEANUP, storage.key(keys::CLEANUP)) {
        config.storage.cleanup = flag;
    }
    if let Some(level) = read.number(
        vars::S3_COMPRESSION_LEVEL,
        storage.key(keys::COMPRESSION_LEVEL),
    ) {
        config.storage.compression_level = Some(level);
    }
    if let Some(size) = read.number(vars::S3_PART_SIZE_MIB, storage.key(keys::PART_SIZE_MIB)) {
        config.storage.part_size_mib = Some(size);
    }
    if let Some(bytes) = read.number(
        vars::S3_MAX_ARCHIVE_BYTES,
        storage.key(keys::MAX_ARCHIVE_BYTES),
    ) {
        config.storage.max_archive_bytes = Some(bytes);
    }

    providers(config, env, overridden, &mut bad);
    events(config, env, overridden, &mut bad);
    bad
}

/// `TEKFLUX_EVENTS_TOKEN` (or `_FILE`) and `TEKFLUX_EVENTS_INSECURE`.
fn events(config: &mut Config, env: &Env, overridden: &mut Overridden, bad: &mut Vec<BadOverride>) {
    let events = FieldPath::root().key(keys::EVENTS);
    let mut read = Reader {
        env,
        overridden,
        bad,
    };
    if let Some(flag) = read.boolean(vars::EVENTS_INSECURE, events.key(keys::INSECURE)) {
        config.events.insecure = flag;
    }
    if let Some((token, variable)) =
        secret_override(env, vars::EVENTS_TOKEN, vars::EVENTS_TOKEN_FILE, bad)
    {
        config.events.token = Some(token);
        overridden.insert(events.key(keys::TOKEN), variable);
    }
}

/// Every provider's credential variables, from the provider table: the webhook credential
/// (or its file), the commit-status token (or its file), and the other kind's names, refused
/// with the right ones.
fn providers(
    config: &mut Config,
    env: &Env,
    overridden: &mut Overridden,
    bad: &mut Vec<BadOverride>,
) {
    unknown_providers(env, bad);
    for spec in provider::all() {
        if let Err(problem) = provider(spec, config, env, overridden, bad) {
            bad.push(BadOverride::new(spec.vars.value, problem.to_string()));
        }
    }
}

fn provider(
    spec: &'static ProviderSpec,
    config: &mut Config,
    env: &Env,
    overridden: &mut Overridden,
    bad: &mut Vec<BadOverride>,
) -> Result<(), super::model::UnknownProvider> {
    let path = FieldPath::root().key(keys::PROVIDERS).key(spec.key);
    let vars = &spec.vars;
    for misnamed in vars.misnamed {
        if env.get_non_empty(misnamed).is_some() {
            bad.push(BadOverride::new(
                misnamed,
                format!(
                    "{} authenticates with a {}, not a {}: use {} or {}",
                    spec.key,
                    spec.secret.key(),
                    spec.secret.other().key(),
                    vars.value,
                    vars.file
                ),
            ));
        }
    }
    if let Some((secret, variable)) = secret_override(env, vars.value, vars.file, bad) {
        let settings = config.providers.entry(spec.key)?;
        match spec.secret {
            SecretKind::Secret => settings.secret = Some(secret),
            SecretKind::Token => settings.token = Some(secret),
        }
        overridden.insert(path.key(spec.secret.key()), variable);
    }
    if let Some([value, file]) = vars.status_token
        && let Some((secret, variable)) = secret_override(env, value, file, bad)
    {
        config
            .providers
            .entry(spec.key)?
            .status
            .get_or_insert_with(Default::default)
            .token = Some(secret);
        overridden.insert(path.key(keys::STATUS).key(keys::TOKEN), variable);
    }
    Ok(())
}

/// Variables shaped like a provider's credential (`TEKFLUX_<PROVIDER>_SECRET`, `_TOKEN`,
/// `_STATUS_TOKEN`, each also `_FILE`) that name no provider: a misspelled provider would
/// otherwise leave its webhooks unauthenticated without a word.
fn unknown_providers(env: &Env, bad: &mut Vec<BadOverride>) {
    for variable in env.names() {
        let Some(rest) = variable.strip_prefix("TEKFLUX_") else {
            continue;
        };
        let rest = rest.strip_suffix("_FILE").unwrap_or(rest);
        let Some(name) = ["_STATUS_TOKEN", "_SECRET", "_TOKEN"]
            .iter()
            .find_map(|suffix| rest.strip_suffix(suffix))
        else {
            continue;
        };
        // One word only: other variables of the same shape (`TEKFLUX_TEST_S3_SECRET`) belong
        // to other tools, and `TEKFLUX_EVENTS_TOKEN` is the CloudEvent senders' token.
        let one_word = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric());
        if !one_word || name == "EVENTS" || env.get_non_empty(variable).is_none() {
            continue;
        }
        if provider::by_key(&name.to_ascii_lowercase()).is_none() {
            bad.push(BadOverride::new(
                variable,
                format!(
                    "{} is not a provider; known providers: {}",
                    name.to_ascii_lowercase(),
                    provider::known_keys()
                ),
            ));
        }
    }
}

/// A secret from the `value` variable (the secret itself) or the `file` variable (its path), and
/// the variable that gave it; `None` when neither is set or the pair is bad (then recorded).
fn secret_override(
    env: &Env,
    value: &'static str,
    file: &'static str,
    bad: &mut Vec<BadOverride>,
) -> Option<(Secret, &'static str)> {
    match (env.get_non_empty(value), env.get_non_empty(file)) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            bad.push(BadOverride::new(
                file,
                format!("set only one of {value} and {file}"),
            ));
            None
        }
        (Some(secret), None) => Some((Secret::from_env_value(value, secret), value)),
        (None, Some(path)) => match Secret::parse(&format!("{FILE_PREFIX}{path}")) {
            Ok(secret) => Some((secret, file)),
            Err(message) => {
                bad.push(BadOverride::new(file, message));
                None
            }
        },
    }
}

/// Reads typed overrides: a good value is recorded as set by its variable, a bad one as a
/// problem naming the variable and the field it would have set.
struct Reader<'a> {
    env: &'a Env,
    overridden: &'a mut Overridden,
    bad: &'a mut Vec<BadOverride>,
}

impl Reader<'_> {
    fn set(&mut self, path: FieldPath, variable: &'static str) {
        self.overridden.insert(path, variable);
    }

    fn refuse(&mut self, variable: &'static str, path: &FieldPath, message: String) {
        self.bad.push(BadOverride::new(variable, message).at(path));
    }

    fn number<T: FromStr + WholeNumber>(
        &mut self,
        variable: &'static str,
        path: FieldPath,
    ) -> Option<T> {
        let value = self.env.get_non_empty(variable)?;
        match value.trim().parse() {
            Ok(number) => {
                self.set(path, variable);
                Some(number)
            }
            Err(_) => {
                self.refuse(variable, &path, format!("{value:?} is not {}", T::WHAT));
                None
            }
        }
    }

    fn boolean(&mut self, variable: &'static str, path: FieldPath) -> Option<bool> {
        let value = self.env.get_non_empty(variable)?;
        match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => {
                self.set(path, variable);
                Some(true)
            }
            "false" | "0" => {
                self.set(path, variable);
                Some(false)
            }
            _ => {
                self.refuse(
                    variable,
                    &path,
                    format!("{value:?} is not one of true, false, 1, 0"),
                );
                None
            }
        }
    }
}

/// How a number an override takes is described to a person.
trait WholeNumber {
    const WHAT: &'static str;
}

impl WholeNumber for u16 {
    const WHAT: &'static str = "a whole number from 0 to 65535";
}

impl WholeNumber for u32 {
    const WHAT: &'static str = "a whole number from 0 to 4294967295";
}

impl WholeNumber for i32 {
    const WHAT: &'static str = "a whole number";
}

impl WholeNumber for u64 {
    const WHAT: &'static str = "a whole number, 0 or more";
}

impl WholeNumber for usize {
    const WHAT: &'static str = "a whole number, 0 or more";
}
