//! The HelmReleases' part of a trace: which release carries a version built from the push.

use super::*;

/// The HelmReleases (of both APIs) in `namespaces` whose current version came from one of
/// `runs`, or from the sha of one of them or the query.
pub(super) async fn releases(
    client: &kube::Client,
    namespaces: &[String],
    config: &Config,
    query: &Query,
    runs: &BTreeSet<String>,
    shas: &BTreeSet<String>,
    missing: &mut Vec<String>,
) -> Vec<ReleaseTrace> {
    let mut apis = vec![HelmReleaseApi::Flux, HelmReleaseApi::HelmOperator];
    // The APIs the release rules use first; the other is still looked at (a rule may be gone).
    apis.sort_by_key(|api| !config.releases.iter().any(|rule| rule.api == *api));
    let mut found = Vec::new();
    for api in apis {
        let resource = api_resource(api);
        for namespace in namespaces {
            let list: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            let items = match list.list(&ListParams::default()).await {
                Ok(list) => list.items,
                // That API is not installed: nothing of it to show.
                Err(kube::Error::Api(status)) if status.code == 404 => break,
                Err(error) => {
                    missing.push(format!(
                        "HelmReleases ({}) in {namespace}: {}",
                        resource.api_version,
                        plain_chain(&error)
                    ));
                    continue;
                }
            };
            for object in items {
                let Ok(value) = serde_json::to_value(&object) else {
                    continue;
                };
                let annotations = &value["metadata"]["annotations"];
                let text = |name: &str| annotations[name].as_str().map(str::to_owned);
                let run = text(RUN_ANNOTATION);
                let sha = text(SHA_ANNOTATION);
                let from_run = run.as_ref().is_some_and(|run| runs.contains(run));
                let from_sha = sha
                    .as_ref()
                    .is_some_and(|sha| shas.contains(sha) || query.matches_sha(Some(sha.as_str())));
                if !(from_run || from_sha) {
                    continue;
                }
                let ready = value["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|condition| condition["type"] == "Ready");
                found.push(ReleaseTrace {
                    api_version: resource.api_version.clone(),
                    namespace: namespace.clone(),
                    name: value["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    version: text(VERSION_ANNOTATION),
                    event: text(EVENT_ANNOTATION),
                    time: text(TIME_ANNOTATION),
                    run,
                    sha,
                    ready: ready.map(|condition| {
                        let status = condition["status"].as_str().unwrap_or("Unknown");
                        match condition["reason"].as_str() {
                            Some(reason) => format!("{status} ({reason})"),
                            None => status.to_owned(),
                        }
                    }),
                    ready_message: ready
                        .and_then(|condition| condition["message"].as_str())
                        .map(str::to_owned),
                });
            }
        }
    }
    found
}
