//! The Gateway API objects of the mesh's namespace, kept current by watches: Gateways and
//! HTTPRoutes (`gateway.networking.k8s.io/v1`).
//!
//! A cluster without the Gateway API's CRDs is a mesh without Gateway API ingress, not a
//! control plane that cannot start: a watch that fails before its first list counts as an
//! empty list (and keeps retrying, so CRDs installed later are picked up).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::gateway_api::Objects;
use super::mesh_services::capped_backoff;
use super::watched::Watched as Kept;

/// The Gateway API version read.
const VERSION: &str = "v1";

/// A Gateway API kind as the API serves it.
pub(crate) fn resource(kind: &str, plural: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk(mesh_kube::names::GATEWAY_API_GROUP, VERSION, kind);
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

pub(crate) fn gateways() -> ApiResource {
    resource("Gateway", "gateways")
}

pub(crate) fn http_routes() -> ApiResource {
    resource("HTTPRoute", "httproutes")
}

/// The objects of one kind, by name; `None` before the first list (or the first failure).
type Watched = watch::Receiver<Option<BTreeMap<String, DynamicObject>>>;

/// The Gateways and HTTPRoutes of a namespace, as they change.
#[derive(Debug)]
pub(crate) struct GatewayObjects {
    gateways: Watched,
    routes: Watched,
}

impl GatewayObjects {
    /// Starts watching `namespace`'s Gateways and HTTPRoutes until `shutdown`.
    pub(crate) fn watch(
        client: &kube::Client,
        namespace: &str,
        shutdown: &CancellationToken,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let (gateways, watch_gateways) =
            watch_kind(client.clone(), namespace, gateways(), shutdown.clone());
        let (routes, watch_routes) =
            watch_kind(client.clone(), namespace, http_routes(), shutdown.clone());
        (
            Self { gateways, routes },
            vec![watch_gateways, watch_routes],
        )
    }

    /// Returns once both kinds have been listed (or failed to be).
    pub(crate) async fn first(&mut self) {
        for watched in [&mut self.gateways, &mut self.routes] {
            while watched.borrow_and_update().is_none() {
                if watched.changed().await.is_err() {
                    break;
                }
            }
        }
    }

    /// The objects now.
    pub(crate) fn current(&self) -> Objects {
        Objects {
            gateways: self.gateways.borrow().clone().unwrap_or_default(),
            routes: self.routes.borrow().clone().unwrap_or_default(),
        }
    }

    /// A receiver of each kind, for the status writer.
    pub(crate) fn receivers(&self) -> (Watched, Watched) {
        (self.gateways.clone(), self.routes.clone())
    }

    /// Completes when either kind changes (never, once both watches have ended).
    pub(crate) async fn changed(&mut self) {
        tokio::select! {
            Ok(()) = self.gateways.changed() => {}
            Ok(()) = self.routes.changed() => {}
            else => std::future::pending::<()>().await,
        }
    }
}

/// Watches one kind of `namespace` into a map by name.
fn watch_kind(
    client: kube::Client,
    namespace: &str,
    resource: ApiResource,
    shutdown: CancellationToken,
) -> (Watched, JoinHandle<()>) {
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
    let (tx, rx) = watch::channel(None);
    let kind = resource.kind.clone();
    let task = tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default()).backoff(capped_backoff());
        let mut stream = std::pin::pin!(stream);
        let mut watched: Kept<DynamicObject> = Kept::default();
        let mut last_error = None;
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                None => return,
                Some(Err(e)) => {
                    let error = e.to_string();
                    if last_error.as_ref() != Some(&error) {
                        tracing::warn!(kind = %kind, error = %error, "watching Gateway API objects; retrying (are the Gateway API CRDs installed?)");
                        last_error = Some(error);
                    }
                    if tx.borrow().is_none() {
                        tx.send_replace(Some(BTreeMap::new()));
                    }
                }
                Some(Ok(event)) => {
                    let listed = matches!(event, Event::InitDone);
                    let read = |object: &DynamicObject| {
                        Some((object.metadata.name.clone()?, object.clone()))
                    };
                    if watched.apply(event, read) {
                        if listed {
                            last_error = None;
                        }
                        tx.send_replace(watched.listed.clone());
                    }
                }
            }
        }
    });
    (rx, task)
}
