//! The command line's S3 arguments: `s3://bucket/key` and `--metadata name=value`, checked
//! against S3's rules before any request is made.

use std::fmt;
use std::str::FromStr;

/// S3 limits a key to 1024 bytes.
const MAX_KEY_BYTES: usize = 1024;

/// `s3://bucket/key`, checked against S3's naming rules before any request is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
}

impl FromStr for S3Url {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{text:?} is not an s3://bucket/key URL"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| format!("{text:?} names no key: expected s3://bucket/key"))?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && bucket
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !bucket_ok {
            return Err(format!(
                "{bucket:?} is not a valid bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
            ));
        }
        if key.is_empty() || key.ends_with('/') {
            return Err(format!(
                "{text:?} names a folder, not an object: the key must not be empty or end with /"
            ));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(format!("the key is longer than S3's {MAX_KEY_BYTES} bytes"));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// `name=value` for the object's `x-amz-meta-name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataPair {
    /// The name, without the `x-amz-meta-` prefix.
    pub name: String,
    /// The value.
    pub value: String,
}

impl FromStr for MetadataPair {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not name=value"))?;
        // HTTP header names travel lowercased; anything else would come back changed.
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(format!(
                "metadata name {name:?} must be lowercase letters, digits and hyphens"
            ));
        }
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(format!(
                "metadata value for {name:?} must be printable ASCII (S3 sends it as a header)"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}
