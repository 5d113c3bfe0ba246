//! Container image references as the artifact events name them: run-complete reports an image a
//! run built, release-changed reads it back, and both must split and spell it the same way.

/// Splits `registry[:port]/path/name[:tag][@digest]` into repository, tag and digest. A tag
/// follows the last `:` only when no `/` comes after it (else the `:` starts a port).
pub fn split_image_reference(reference: &str) -> (&str, Option<&str>, Option<&str>) {
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag), digest),
        _ => (name, None, digest),
    }
}

/// Whether `digest` has the `algorithm:hex` shape of an image digest.
pub fn is_image_digest(digest: &str) -> bool {
    digest.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty() && !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// The package URL CDEvents uses as an image's artifact id:
/// `pkg:oci/<name>@<version>?repository_url=<repository>[&tag=<tag>]`, with `version` a digest
/// (its `:` encoded) or a tag.
pub fn oci_purl(repository: &str, version: &str, tag: Option<&str>) -> String {
    let name = repository
        .rsplit('/')
        .next()
        .unwrap_or(repository)
        .to_lowercase();
    let mut purl = format!(
        "pkg:oci/{name}@{}?repository_url={repository}",
        version.replace(':', "%3A")
    );
    if let Some(tag) = tag {
        purl.push_str("&tag=");
        purl.push_str(tag);
    }
    purl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_port_tag_and_digest() {
        assert_eq!(
            split_image_reference("registry.example.com:5000/org/app:v1@sha256:ab"),
            (
                "registry.example.com:5000/org/app",
                Some("v1"),
                Some("sha256:ab")
            )
        );
        assert_eq!(
            split_image_reference("registry.example.com:5000/org/app"),
            ("registry.example.com:5000/org/app", None, None)
        );
        assert!(is_image_digest("sha256:0123abcd"));
        assert!(!is_image_digest("sha256:xyz"));
        assert!(!is_image_digest("0123abcd"));
        assert_eq!(
            oci_purl("registry.example.com/org/App", "sha256:ff", Some("v1")),
            "pkg:oci/app@sha256%3Aff?repository_url=registry.example.com/org/App&tag=v1"
        );
    }
}
