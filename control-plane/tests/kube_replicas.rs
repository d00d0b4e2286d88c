//! Two control-plane replicas against a real API server: one CA shared through Secret
//! `mesh-ca`, one leader elected with Lease `mesh-control-plane`, root rotation decided by the
//! leader and followed by both replicas and their sidecars.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::kube_mesh::KubeMesh;
use common::{Dirs, Sidecar, TD, Watcher, admin, verify_chain};
use http::{Method, StatusCode};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use mesh_api::proto::v1;
use mesh_control_plane::{ControlPlane, ElectionOptions, client};
use mesh_testkit::eventually;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tokio::time::Instant;

const MESH: &str = "trust_domain: mesh.local\ncertificate_lifetime: 1h\nregistry:\n  heartbeat_interval: 200ms\n  lease: 1s\n";

/// Short, so failover tests take seconds: a leader renews eight times per lease.
const ELECTION: ElectionOptions = ElectionOptions {
    lease_duration: Duration::from_secs(2),
    renew_every: Duration::from_millis(250),
};

/// Certifies a sidecar of `service` with replica `cp` (its ServiceAccount's projected token)
/// and connects it there.
async fn certify(mesh: &KubeMesh, cp: &ControlPlane, dirs: &Dirs, service: &str) -> Sidecar {
    mesh.sidecar_at(cp, dirs, service).await
}

fn leading(cp: &ControlPlane) -> bool {
    cp.status().replicas.is_some_and(|r| r.leading)
}

/// Waits until exactly one of `a` and `b` leads and both name it; whether it is `a`.
async fn one_leader(a: &ControlPlane, b: &ControlPlane) -> bool {
    eventually(
        "exactly one replica to lead",
        ELECTION.lease_duration * 3,
        || async {
            let replicas = |cp: &ControlPlane| {
                cp.status()
                    .replicas
                    .unwrap_or_else(|| panic!("no replicas in /status"))
            };
            let (ra, rb) = (replicas(a), replicas(b));
            let one = ra.leading != rb.leading;
            let agreed = ra.leader.is_some() && ra.leader == rb.leader;
            (one && agreed)
                .then_some(ra.leading)
                .ok_or(format!("{ra:?} {rb:?}"))
        },
    )
    .await
}

async fn lease(mesh: &KubeMesh) -> Lease {
    Api::<Lease>::namespaced(mesh.admin(), mesh_kube::names::NAMESPACE)
        .get(mesh_kube::names::LEASE)
        .await
        .unwrap_or_else(|e| panic!("read the Lease: {e}"))
}

async fn ca_secret(mesh: &KubeMesh) -> Secret {
    Api::<Secret>::namespaced(mesh.admin(), mesh_kube::names::NAMESPACE)
        .get(mesh_kube::names::CA_SECRET)
        .await
        .unwrap_or_else(|e| panic!("read the CA Secret: {e}"))
}

fn webhooks(mesh: &KubeMesh) -> Api<MutatingWebhookConfiguration> {
    Api::all(mesh.admin())
}

/// A webhook configuration as `meshctl install` makes it, trusting `bundle_pem`; its one
/// webhook selects no pod.
async fn install_webhook(mesh: &KubeMesh, bundle_pem: &[u8]) {
    use base64::Engine as _;
    let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": { "name": mesh_kube::names::WEBHOOK_CONFIGURATION },
        "webhooks": [{
            "name": mesh_kube::names::POD_WEBHOOK,
            "clientConfig": {
                "url": "https://127.0.0.1:9/inject",
                "caBundle": base64::engine::general_purpose::STANDARD.encode(bundle_pem),
            },
            "rules": [{
                "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["pods"],
            }],
            "objectSelector": { "matchLabels": { "selects": "nothing" } },
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Ignore",
        }],
    }))
    .unwrap_or_else(|e| panic!("webhook configuration: {e}"));
    webhooks(mesh)
        .create(&PostParams::default(), &configuration)
        .await
        .unwrap_or_else(|e| panic!("create the webhook configuration: {e}"));
}

/// Waits until the webhook configuration's caBundle holds exactly `bundle` (DER roots).
async fn webhook_trusts(mesh: &KubeMesh, bundle: &[Vec<u8>]) {
    eventually(
        "the webhook's caBundle to follow the trust bundle",
        Duration::from_secs(5),
        || async {
            let configuration = webhooks(mesh)
                .get(mesh_kube::names::WEBHOOK_CONFIGURATION)
                .await
                .map_err(|e| e.to_string())?;
            let pem = configuration.webhooks.unwrap_or_default()[0]
                .client_config
                .ca_bundle
                .clone()
                .map(|b| b.0)
                .unwrap_or_default();
            let ders: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            (ders == bundle)
                .then_some(())
                .ok_or(format!("{} root(s)", ders.len()))
        },
    )
    .await;
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

#[tokio::test]
async fn replicas_share_one_root_and_hand_over_the_lease() {
    let test = "replicas_share_one_root_and_hand_over_the_lease";
    let Some(mesh) = KubeMesh::start(test, MESH).await else {
        return;
    };
    mesh.apply_mesh_service("orders", json!({})).await;
    let (dirs_a, dirs_b) = (mesh.replica_dirs(), mesh.replica_dirs());

    // Both start at once with no Secret: one root between them.
    let (a, b) = tokio::join!(
        mesh.replica("replica-a", &dirs_a, ELECTION),
        mesh.replica("replica-b", &dirs_b, ELECTION)
    );
    assert_eq!(a.trust_bundle_der().len(), 1);
    assert_eq!(a.trust_bundle_der(), b.trust_bundle_der());
    assert_eq!(dirs_a.bundle_pem(), dirs_b.bundle_pem());
    assert_eq!(a.status().signer, b.status().signer);
    let secret = ca_secret(&mesh).await;
    let data = secret.data.unwrap();
    assert_eq!(data["bundle.pem"].0, dirs_a.bundle_pem());
    let signer = a.status().signer.unwrap();
    assert_eq!(String::from_utf8_lossy(&data["signer"].0).trim(), signer);
    assert!(data.contains_key("ca.pem") && data.contains_key("ca-key.pem"));
    assert!(data.contains_key(&format!("root-{signer}-key.pem")));

    // A certificate one replica signs is good at the other.
    let orders = certify(&mesh, &a, &dirs_a, "orders").await;
    let roots = client::roots_from_pem(&dirs_b.bundle_pem()).unwrap();
    let at_b = client::connect(b.api_addr(), roots, TD, Some(orders.workload.client_cert()))
        .await
        .unwrap();
    v1::registry_client::RegistryClient::new(at_b)
        .heartbeat(v1::HeartbeatRequest::default())
        .await
        .unwrap();

    // One leader, which the Lease names.
    let a_leads = one_leader(&a, &b).await;
    let (leader, follower, leader_name, follower_name, leader_dirs) = if a_leads {
        (a, b, "replica-a", "replica-b", &dirs_a)
    } else {
        (b, a, "replica-b", "replica-a", &dirs_b)
    };
    assert_eq!(holder(&lease(&mesh).await).as_deref(), Some(leader_name));

    // A clean stop releases the Lease: the other leads well within a lease duration.
    let stopped_at = Instant::now();
    leader.stop().await.unwrap();
    eventually(
        "the other replica to lead after a clean stop",
        ELECTION.lease_duration,
        || async { leading(&follower).then_some(()).ok_or("not yet") },
    )
    .await;
    assert!(
        stopped_at.elapsed() < ELECTION.lease_duration,
        "took {:?}",
        stopped_at.elapsed()
    );
    assert_eq!(holder(&lease(&mesh).await).as_deref(), Some(follower_name));

    // The stopped replica comes back as a follower; then the leader dies without releasing:
    // the follower takes over once the lease has expired, not before.
    let back = mesh.replica(leader_name, leader_dirs, ELECTION).await;
    eventually(
        "the restarted replica to see the leader",
        ELECTION.lease_duration,
        || async {
            let r = back.status().replicas.unwrap();
            (!r.leading && r.leader.as_deref() == Some(follower_name))
                .then_some(())
                .ok_or(format!("{r:?}"))
        },
    )
    .await;
    let transitions = lease(&mesh).await.spec.unwrap().lease_transitions;
    let killed_at = Instant::now();
    follower.kill();
    eventually(
        "the restarted replica to lead after the leader died",
        ELECTION.lease_duration * 3,
        || async { leading(&back).then_some(()).ok_or("not yet") },
    )
    .await;
    let waited = killed_at.elapsed();
    assert!(
        // Its last renewal was at most a renew period or so before the crash; a release
        // would have let the other in within one renew period.
        waited >= ELECTION.lease_duration / 2,
        "took over after {waited:?}, before the lease ran out"
    );
    let after = lease(&mesh).await;
    assert_eq!(holder(&after).as_deref(), Some(leader_name));
    assert!(after.spec.unwrap().lease_transitions > transitions);
    back.stop().await.unwrap();
}

/// A sidecar that heartbeats in the background, reporting its certificate's issuer.
struct Beating {
    issuer: tokio::sync::watch::Sender<String>,
    task: tokio::task::JoinHandle<()>,
}

fn beat(sidecar: Arc<Sidecar>, instance: &str, issuer: String) -> Beating {
    let (tx, rx) = tokio::sync::watch::channel(issuer);
    let instance = instance.to_owned();
    let task = tokio::spawn(async move {
        loop {
            let issuer = rx.borrow().clone();
            let _ = sidecar
                .registry()
                .heartbeat(v1::HeartbeatRequest {
                    instance_id: instance.clone(),
                    certificate_issuer_sha256: issuer,
                    ..Default::default()
                })
                .await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    Beating { issuer: tx, task }
}

/// A registered, watching, acknowledging sidecar of one replica.
async fn serve(
    mesh: &KubeMesh,
    cp: &ControlPlane,
    dirs: &Dirs,
    service: &str,
    instance: &str,
    address: &str,
) -> (Arc<Sidecar>, Watcher, v1::Snapshot) {
    let sidecar = Arc::new(certify(mesh, cp, dirs, service).await);
    sidecar.register(instance, address, "").await;
    let mut watch = sidecar.watch(instance).await;
    let first = watch
        .next(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no first snapshot for {service}"));
    watch.ack(first.version).await;
    (sidecar, watch, first)
}

#[tokio::test]
async fn a_rotation_on_the_leader_reaches_both_replicas_and_survives_a_leader_change() {
    let test = "a_rotation_on_the_leader_reaches_both_replicas_and_survives_a_leader_change";
    let Some(mesh) = KubeMesh::start(test, MESH).await else {
        return;
    };
    mesh.apply_mesh_service("orders", json!({ "calls": ["inventory"] }))
        .await;
    mesh.apply_mesh_service("inventory", json!({})).await;
    let (dirs_a, dirs_b) = (mesh.replica_dirs(), mesh.replica_dirs());
    let (a, b) = tokio::join!(
        mesh.replica("replica-a", &dirs_a, ELECTION),
        mesh.replica("replica-b", &dirs_b, ELECTION)
    );
    let a_leads = one_leader(&a, &b).await;
    let (leader, follower, leader_name, leader_dirs, follower_dirs) = if a_leads {
        (a, b, "replica-a", &dirs_a, &dirs_b)
    } else {
        (b, a, "replica-b", &dirs_b, &dirs_a)
    };
    let old_root = leader.status().signer.unwrap();
    install_webhook(&mesh, b"").await;
    webhook_trusts(&mesh, &leader.trust_bundle_der()).await;

    // orders is served by the leader, inventory by the follower.
    let (orders, mut orders_watch, first) = serve(
        &mesh,
        &leader,
        leader_dirs,
        "orders",
        "o-1",
        "127.0.0.1:7301",
    )
    .await;
    let (inventory, mut inventory_watch, _) = serve(
        &mesh,
        &follower,
        follower_dirs,
        "inventory",
        "i-1",
        "127.0.0.1:7302",
    )
    .await;
    let old_issuer = first.issuer_sha256.clone();
    let orders_beat = beat(orders.clone(), "o-1", old_issuer.clone());
    let inventory_beat = beat(inventory.clone(), "i-1", old_issuer.clone());

    // A follower refuses rotation steps, naming the leader.
    let (status, body) = admin(&follower, Method::POST, "/ca/roots").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("does not lead") && error.contains(&format!("replica {leader_name} leads")),
        "{error}"
    );

    // The leader adds a root: both replicas and their sidecars trust it.
    let (status, body) = admin(&leader, Method::POST, "/ca/roots").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_root = body["id"].as_str().unwrap().to_owned();
    let mut trusting = Vec::new();
    for watch in [&mut orders_watch, &mut inventory_watch] {
        let two = watch
            .until(Duration::from_secs(5), |s| s.trust_bundle_der.len() == 2)
            .await;
        assert_eq!(two.issuer_sha256, old_issuer, "the old root still signs");
        trusting.push(two.version);
    }
    // Only the leader's sidecar acknowledges: the follower's holds the switch back.
    orders_watch.ack(trusting[0]).await;
    let refused = eventually(
        "use-root refused for the follower's sidecar",
        Duration::from_secs(5),
        || async {
            let (status, body) =
                admin(&leader, Method::POST, &format!("/ca/signer/{new_root}")).await;
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            let error = body["error"].as_str().unwrap().to_owned();
            error
                .contains("inventory/i-1")
                .then_some(error)
                .ok_or("other reason")
        },
    )
    .await;
    let follower_name = if a_leads { "replica-b" } else { "replica-a" };
    assert!(
        refused.contains(&format!("replica {follower_name}")),
        "{refused}"
    );
    inventory_watch.ack(trusting[1]).await;
    assert_eq!(follower.trust_bundle_der(), leader.trust_bundle_der());
    webhook_trusts(&mesh, &leader.trust_bundle_der()).await;
    assert_eq!(
        client::roots_from_pem(&follower_dirs.bundle_pem())
            .unwrap()
            .len(),
        2
    );

    // The new root signs, at both replicas.
    eventually("use-root accepted", Duration::from_secs(5), || async {
        let (status, body) = admin(&leader, Method::POST, &format!("/ca/signer/{new_root}")).await;
        match status {
            StatusCode::OK => Some(()),
            StatusCode::CONFLICT => None,
            other => panic!("{other}: {body}"),
        }
    })
    .await;
    let mut new_issuer = String::new();
    for watch in [&mut orders_watch, &mut inventory_watch] {
        let rotated = watch
            .until(Duration::from_secs(5), |s| s.issuer_sha256 != old_issuer)
            .await;
        watch.ack(rotated.version).await;
        new_issuer = rotated.issuer_sha256;
    }
    assert_eq!(follower.status().signer.as_deref(), Some(new_root.as_str()));

    // Sidecars renew at either replica, with certificates from the new root alone.
    let bundle = leader.trust_bundle_der();
    let new_only = client::roots_from_der(&bundle[1..]).unwrap();
    let old_only = client::roots_from_der(&bundle[..1]).unwrap();
    for (cp, dirs, service) in [
        (&leader, leader_dirs, "orders"),
        (&follower, follower_dirs, "inventory"),
    ] {
        let renewed = certify(&mesh, cp, dirs, service).await;
        verify_chain(&renewed.workload.chain_der, &new_only).unwrap();
        assert!(verify_chain(&renewed.workload.chain_der, &old_only).is_err());
    }
    orders_beat.issuer.send(new_issuer.clone()).unwrap();
    // The follower's sidecar still reports a certificate from the old root: it stays.
    eventually(
        "remove-root refused for the follower's sidecar",
        Duration::from_secs(5),
        || async {
            let (status, body) =
                admin(&leader, Method::DELETE, &format!("/ca/roots/{old_root}")).await;
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            let error = body["error"].as_str().unwrap().to_owned();
            (error.contains("inventory/i-1") && error.contains(follower_name))
                .then_some(())
                .ok_or(error)
        },
    )
    .await;
    inventory_beat.issuer.send(new_issuer.clone()).unwrap();

    // The old root leaves both bundles.
    eventually("remove-root accepted", Duration::from_secs(5), || async {
        let (status, _) = admin(&leader, Method::DELETE, &format!("/ca/roots/{old_root}")).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    for watch in [&mut orders_watch, &mut inventory_watch] {
        let one = watch
            .until(Duration::from_secs(5), |s| s.trust_bundle_der.len() == 1)
            .await;
        assert_eq!(one.trust_bundle_der, bundle[1..]);
        watch.ack(one.version).await;
    }
    eventually(
        "the follower's bundle to lose the old root",
        Duration::from_secs(5),
        || async {
            (follower.trust_bundle_der() == bundle[1..])
                .then_some(())
                .ok_or("not yet")
        },
    )
    .await;
    webhook_trusts(&mesh, &bundle[1..]).await;
    let data = ca_secret(&mesh).await.data.unwrap();
    assert_eq!(String::from_utf8_lossy(&data["signer"].0).trim(), new_root);
    assert!(data.contains_key(&format!("retired-{old_root}-key.pem")));
    assert!(!data.contains_key(&format!("root-{old_root}.pem")));

    // The leader stops: the follower leads, its sidecar keeps getting snapshots and renewing,
    // and the one the leader served moves over.
    orders_beat.task.abort();
    drop(orders_watch);
    leader.stop().await.unwrap();
    eventually("the follower to lead", ELECTION.lease_duration, || async {
        leading(&follower).then_some(()).ok_or("not yet")
    })
    .await;
    let (_, mut moved_watch, moved) = serve(
        &mesh,
        &follower,
        follower_dirs,
        "orders",
        "o-1",
        "127.0.0.1:7301",
    )
    .await;
    assert_eq!(moved.trust_bundle_der, bundle[1..]);
    // orders may now call inventory's instance, registered at the surviving replica.
    assert_eq!(common::endpoints(&moved, "inventory"), ["127.0.0.1:7302"]);
    mesh.apply_mesh_service(
        "inventory",
        json!({ "authorization": { "default": "deny", "allow": ["orders"] } }),
    )
    .await;
    let allowed = inventory_watch
        .until(Duration::from_secs(5), |s| {
            s.authorization
                .as_ref()
                .is_some_and(|a| a.allow == ["orders"])
        })
        .await;
    inventory_watch.ack(allowed.version).await;
    let renewed = certify(&mesh, &follower, follower_dirs, "inventory").await;
    verify_chain(&renewed.workload.chain_der, &new_only).unwrap();

    // Rotation is the new leader's to decide now.
    let (status, body) = admin(&follower, Method::POST, "/ca/roots").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    moved_watch
        .until(Duration::from_secs(5), |s| s.trust_bundle_der.len() == 2)
        .await;
    inventory_beat.task.abort();
    follower.stop().await.unwrap();
}

#[tokio::test]
async fn an_installed_secret_is_read_as_is_and_a_broken_one_changes_nothing() {
    let test = "an_installed_secret_is_read_as_is_and_a_broken_one_changes_nothing";
    let Some(mesh) = KubeMesh::start(test, MESH).await else {
        return;
    };
    mesh.apply_mesh_service("orders", json!({})).await;
    // The Secret as `meshctl install` writes it: one root and its key.
    let root = mesh_control_plane::ca::DevCa::generate(TD).unwrap();
    let dir = tempfile::tempdir().unwrap();
    root.write_to(dir.path()).unwrap();
    let installed: Secret = serde_json::from_value(json!({
        "metadata": { "name": mesh_kube::names::CA_SECRET },
        "stringData": {
            "ca.pem": std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
            "ca-key.pem": std::fs::read_to_string(dir.path().join("ca-key.pem")).unwrap(),
        },
    }))
    .unwrap();
    let secrets = Api::<Secret>::namespaced(mesh.admin(), mesh_kube::names::NAMESPACE);
    secrets
        .create(&PostParams::default(), &installed)
        .await
        .unwrap();

    let (dirs_a, dirs_b) = (mesh.replica_dirs(), mesh.replica_dirs());
    let (a, b) = tokio::join!(
        mesh.replica("replica-a", &dirs_a, ELECTION),
        mesh.replica("replica-b", &dirs_b, ELECTION)
    );
    let installed_root = client::roots_from_pem(root.cert_pem().as_bytes()).unwrap();
    for (cp, dirs) in [(&a, &dirs_a), (&b, &dirs_b)] {
        assert_eq!(dirs.bundle_pem(), root.cert_pem().as_bytes());
        let sidecar = certify(&mesh, cp, dirs, "orders").await;
        verify_chain(&sidecar.workload.chain_der, &installed_root).unwrap();
    }
    let a_leads = one_leader(&a, &b).await;
    let (leader, follower) = if a_leads { (&a, &b) } else { (&b, &a) };
    let bundle = leader.trust_bundle_der();

    // Someone breaks the Secret: both replicas keep their CA, and the leader's rotation steps
    // are refused, saying why, until it is mended.
    let mut broken = ca_secret(&mesh).await;
    broken.data = Some(
        [(
            "bundle.pem".to_owned(),
            k8s_openapi::ByteString(b"not a certificate".to_vec()),
        )]
        .into_iter()
        .collect(),
    );
    let good = secrets
        .replace(mesh_kube::names::CA_SECRET, &PostParams::default(), &broken)
        .await
        .unwrap();
    let error = eventually(
        "the leader to refuse a step on the broken Secret",
        Duration::from_secs(5),
        || async {
            let (status, body) = admin(leader, Method::POST, "/ca/roots").await;
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            let error = body["error"].as_str().unwrap().to_owned();
            error
                .contains("mesh-ca")
                .then_some(error)
                .ok_or("another reason")
        },
    )
    .await;
    assert!(error.contains("nothing changed"), "{error}");
    assert_eq!(leader.trust_bundle_der(), bundle);
    assert_eq!(follower.trust_bundle_der(), bundle);
    for dirs in [&dirs_a, &dirs_b] {
        assert_eq!(dirs.bundle_pem(), root.cert_pem().as_bytes());
    }
    let sidecar = certify(
        &mesh,
        follower,
        if a_leads { &dirs_b } else { &dirs_a },
        "orders",
    )
    .await;
    verify_chain(&sidecar.workload.chain_der, &installed_root).unwrap();

    // Mended (the installed form again): steps go through, and reach the follower.
    let mut mended = installed.clone();
    mended.metadata.resource_version = good.metadata.resource_version.clone();
    secrets
        .replace(mesh_kube::names::CA_SECRET, &PostParams::default(), &mended)
        .await
        .unwrap();
    eventually(
        "a step on the mended Secret",
        Duration::from_secs(5),
        || async {
            let (status, body) = admin(leader, Method::POST, "/ca/roots").await;
            (status == StatusCode::OK)
                .then_some(())
                .ok_or(body.to_string())
        },
    )
    .await;
    eventually(
        "the follower to trust two roots",
        Duration::from_secs(5),
        || async {
            (follower.trust_bundle_der().len() == 2)
                .then_some(())
                .ok_or("not yet")
        },
    )
    .await;
    let data = ca_secret(&mesh).await.data.unwrap();
    assert_eq!(
        data["ca.pem"].0,
        root.cert_pem().as_bytes(),
        "the installed root still signs"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
