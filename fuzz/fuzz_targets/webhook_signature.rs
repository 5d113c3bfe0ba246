//! Webhook signature checks, against a model: a webhook is accepted exactly when its header
//! carries the HMAC-SHA256 of the body (computed here with `hmac` directly) in the provider's
//! format, or GitLab's token byte for byte, or no secret is configured and `insecure` is set.
#![no_main]

use arbitrary::Arbitrary;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tekflux_git_push::Provider;
use tekflux_git_push::signature::{
    BITBUCKET_SIGNATURE, FORGEJO_SIGNATURE, GITEA_SIGNATURE, GITHUB_SIGNATURE, GITLAB_TOKEN, verify,
};

#[derive(Arbitrary, Debug)]
struct Input {
    provider: u8,
    secret: Vec<u8>,
    insecure: bool,
    body: Vec<u8>,
    /// Header values, each put under one of the signature headers.
    headers: Vec<(u8, Value)>,
}

#[derive(Arbitrary, Debug)]
enum Value {
    /// The right signature, spelled in some way (case, prefix, surrounding space, cut short).
    Right {
        upper: bool,
        prefix: bool,
        pad: bool,
        cut: u8,
    },
    /// The secret itself (GitLab's token).
    Secret,
    Raw(Vec<u8>),
}

const PROVIDERS: [Provider; 5] = [
    Provider::Github,
    Provider::Gitlab,
    Provider::Gitea,
    Provider::Forgejo,
    Provider::Bitbucket,
];
const HEADERS: [&str; 5] = [
    GITHUB_SIGNATURE,
    BITBUCKET_SIGNATURE,
    GITEA_SIGNATURE,
    FORGEJO_SIGNATURE,
    GITLAB_TOKEN,
];

fn mac(secret: &[u8], body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn value_bytes(value: &Value, secret: &[u8], body: &[u8]) -> Vec<u8> {
    match value {
        Value::Right {
            upper,
            prefix,
            pad,
            cut,
        } => {
            let mut hex = hex::encode(mac(secret, body));
            if *upper {
                hex = hex.to_uppercase();
            }
            hex.truncate(hex.len() - usize::from(*cut) % 4);
            let mut text = if *prefix {
                format!("sha256={hex}")
            } else {
                hex
            };
            if *pad {
                text = format!(" {text}\t");
            }
            text.into_bytes()
        }
        Value::Secret => secret.to_vec(),
        Value::Raw(bytes) => bytes.clone(),
    }
}

/// Whether `provider` must accept a request whose first present signature header holds `value`.
fn accepts(provider: Provider, value: &[u8], secret: &[u8], body: &[u8]) -> bool {
    if provider == Provider::Gitlab {
        return value == secret;
    }
    // HeaderValue::to_str: visible ASCII, space and tab only.
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    if !text
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return false;
    }
    let text = text.trim();
    let prefixed = matches!(provider, Provider::Github | Provider::Bitbucket);
    let hex = if prefixed {
        match text.strip_prefix("sha256=") {
            Some(hex) => hex,
            None => return false,
        }
    } else {
        text
    };
    hex::decode(hex).is_ok_and(|digest| digest == mac(secret, body))
}

fuzz_target!(|input: Input| {
    let provider = PROVIDERS[usize::from(input.provider) % PROVIDERS.len()];
    let mut headers = HeaderMap::new();
    for (which, value) in &input.headers {
        let bytes = value_bytes(value, &input.secret, &input.body);
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            headers.append(HEADERS[usize::from(*which) % HEADERS.len()], value);
        }
    }
    let result = verify(
        provider,
        &headers,
        &input.body,
        Some(&input.secret),
        input.insecure,
    );
    let expected = if input.secret.is_empty() {
        input.insecure
    } else {
        let names: &[&str] = match provider {
            Provider::Github => &[GITHUB_SIGNATURE],
            Provider::Bitbucket => &[BITBUCKET_SIGNATURE],
            Provider::Gitea => &[GITEA_SIGNATURE],
            Provider::Forgejo => &[FORGEJO_SIGNATURE, GITEA_SIGNATURE],
            Provider::Gitlab => &[GITLAB_TOKEN],
        };
        names
            .iter()
            .find_map(|name| headers.get(*name))
            .is_some_and(|value| accepts(provider, value.as_bytes(), &input.secret, &input.body))
    };
    assert_eq!(result.is_ok(), expected, "{provider:?}: {result:?}");
});
