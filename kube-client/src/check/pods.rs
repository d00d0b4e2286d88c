//! Injected pods: each one's proxy is ready.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use super::outcome::{Outcome, bounded};
use crate::names;

/// Pods listed per page.
const PAGE: u32 = 500;
/// Pages read at most (a million pods): the listing ends even if the server keeps paging.
const MAX_PAGES: usize = 2000;
/// Not-ready pods named at most in a failure.
const NAMED: usize = 20;

/// Every pod carrying the injected annotation, in every namespace, has a ready `mesh-proxy`.
pub(super) async fn proxies_ready(client: &kube::Client) -> Outcome {
    let api = Api::<Pod>::all(client.clone());
    let mut injected = 0usize;
    let mut not_ready = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = match bounded(api.list(&params)).await {
            Ok(page) => page,
            Err(e) => return Outcome::failed(e.to_string(), "check the API server's health"),
        };
        for pod in &page.items {
            let annotated = pod
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(names::INJECTED_ANNOTATION));
            if !annotated {
                continue;
            }
            injected += 1;
            if let Some(why) = not_ready_reason(pod) {
                not_ready.push(format!(
                    "{}/{} ({why})",
                    pod.metadata.namespace.as_deref().unwrap_or(""),
                    pod.metadata.name.as_deref().unwrap_or("")
                ));
            }
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    if not_ready.is_empty() {
        return Outcome::passed(match injected {
            0 => "no injected pods".to_owned(),
            1 => "1 injected pod".to_owned(),
            n => format!("{n} injected pods"),
        });
    }
    let count = not_ready.len();
    let mut named = not_ready;
    named.truncate(NAMED);
    let more = count.saturating_sub(NAMED);
    let tail = if more > 0 {
        format!(", and {more} more")
    } else {
        String::new()
    };
    Outcome::failed(
        format!(
            "{count} of {injected} injected pods have a proxy that is not ready: {}{tail}",
            named.join(", ")
        ),
        format!(
            "see why: kubectl -n NAMESPACE describe pod POD; kubectl -n NAMESPACE logs POD -c {}",
            names::PROXY_CONTAINER
        ),
    )
}

/// Why `pod`'s proxy is not ready, or `None` when it is.
fn not_ready_reason(pod: &Pod) -> Option<&'static str> {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref());
    let Some(status) =
        statuses.and_then(|all| all.iter().find(|s| s.name == names::PROXY_CONTAINER))
    else {
        return Some("mesh-proxy has no status yet");
    };
    if status.ready {
        None
    } else {
        Some("mesh-proxy not ready")
    }
}
