//! The dry-run switch of every route that changes the cluster: `?dryRun=true` or the
//! `X-Tekflux-Dry-Run` header, and a refusal for anything that looks like a misspelt one.

use crate::error::Error;
use http::HeaderMap;

/// Header that asks for a dry run, like `?dryRun=true`.
pub const DRY_RUN_HEADER: &str = "x-tekflux-dry-run";

/// `?dryRun=true` (or `1`, `all`), the query extractor of every route that changes the
/// cluster; [`DryRunQuery::wanted`] also honours [`DRY_RUN_HEADER`].
#[derive(Debug, Default, serde::Deserialize)]
pub struct DryRunQuery {
    /// The raw `dryRun` value.
    #[serde(rename = "dryRun", default)]
    pub dry_run: Option<String>,
    /// Every other query parameter, kept to catch a misspelt `dryRun`.
    #[serde(flatten)]
    others: std::collections::BTreeMap<String, String>,
}

impl DryRunQuery {
    /// Whether the query or the header asks for a dry run.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a value that is neither yes (`true`, `1`, `all`) nor no
    /// (`false`, `0`, `none`), and for a misspelt parameter or header (`dryrun`, `dry_run`,
    /// `X-Dry-Run`, …): a person who meant to preview must never make a real delivery because
    /// the request was not understood.
    pub fn wanted(&self, headers: &HeaderMap) -> Result<bool, Error> {
        if let Some(key) = self.others.keys().find(|key| names_dry_run(key)) {
            return Err(Error::BadRequest(format!(
                "unknown query parameter {key:?}: a dry run is asked for with dryRun=true"
            )));
        }
        if let Some(name) = headers
            .keys()
            .map(http::HeaderName::as_str)
            .find(|name| *name != DRY_RUN_HEADER && names_dry_run(name))
        {
            return Err(Error::BadRequest(format!(
                "unknown header {name:?}: a dry run is asked for with X-Tekflux-Dry-Run: true"
            )));
        }
        let query = match &self.dry_run {
            Some(value) => dry_run_flag(value, "the query parameter dryRun")?,
            None => false,
        };
        let header = match headers.get(DRY_RUN_HEADER) {
            Some(value) => dry_run_flag(
                value.to_str().unwrap_or("(not ASCII)"),
                "the header X-Tekflux-Dry-Run",
            )?,
            None => false,
        };
        Ok(query || header)
    }
}

/// Whether a query parameter or header name looks like a way of asking for a dry run.
/// Runs on every header of every request, so it compares from the end without allocating.
fn names_dry_run(name: &str) -> bool {
    let mut letters = name
        .bytes()
        .rev()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase());
    b"dryrun"
        .iter()
        .rev()
        .all(|wanted| letters.next() == Some(*wanted))
}

fn dry_run_flag(value: &str, what: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "all" => Ok(true),
        "false" | "0" | "none" => Ok(false),
        _ => Err(Error::BadRequest(format!(
            "{what} is {value:?}: use true (or 1, all) for a dry run, false (or 0, none) for a \
             real delivery"
        ))),
    }
}
