//! Workload identity in Kubernetes mode against a real API server: a sidecar presents its
//! service account's token (from the TokenRequest API, as the kubelet gets it), the control
//! plane has the API server review it, and signs only `spiffe://<td>/ns/<ns>/sa/<account>`
//! for the account's own service. Everything else is refused with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::kube_mesh::{AUDIENCE, KubeMesh, MESH_NAMESPACE, write_projected_token};
use http::{Method, StatusCode};
use k8s_openapi::api::authentication::v1::BoundObjectReference;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use mesh_control_plane::ControlPlane;
use mesh_testkit::{TestMesh, app, client, eventually, metrics};
use serde_json::json;
use tonic::Code;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const MESH: &str = "trust_domain: mesh.local\ncertificate_lifetime: 1h\n";

const PATIENCE: Duration = Duration::from_secs(20);

/// The URI SANs of a DER certificate, all of them (not only SPIFFE IDs).
fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

/// The control plane's `certificates_refused` count for `reason`.
async fn refused(cp: &ControlPlane, reason: &str) -> f64 {
    let (_, body) =
        mesh_control_plane::admin_client::request(cp.admin_addr(), Method::GET, "/metrics")
            .await
            .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let series = format!("mesh_control_plane_certificates_refused_total{{reason=\"{reason}\"}}");
    metrics::value(&text, &series).unwrap_or(0.0)
}

/// The mesh with `orders` and `inventory` declared, and its control plane.
async fn shop(test: &str, mesh_yaml: &str) -> Option<(KubeMesh, ControlPlane)> {
    let mesh = KubeMesh::start(test, mesh_yaml).await?;
    mesh.apply_mesh_service("orders", json!({ "calls": ["inventory"] }))
        .await;
    mesh.apply_mesh_service("inventory", json!({})).await;
    let cp = mesh.control_plane("replica-a").await;
    assert!(cp.status().services.contains_key("orders"));
    Some((mesh, cp))
}

#[tokio::test]
async fn a_service_accounts_token_gets_exactly_its_spiffe_id_and_no_join_token_is_kept() {
    let Some((mesh, cp)) = shop(
        "a_service_accounts_token_gets_exactly_its_spiffe_id_and_no_join_token_is_kept",
        MESH,
    )
    .await
    else {
        return;
    };
    let orders = mesh.sidecar(&cp, "orders").await;
    assert_eq!(
        uri_sans(&orders.workload.chain_der[0]),
        ["spiffe://mesh.local/ns/default/sa/orders"]
    );
    // The certificate is the service's identity for the rest of the API.
    orders.register("orders-1", "127.0.0.1:8080", "v1").await;
    assert_eq!(cp.status().services["orders"].instances.len(), 1);
    // Kubernetes mode neither creates nor reads join tokens.
    assert!(
        !mesh.dirs.state().join("tokens").exists(),
        "no tokens/ in the state directory"
    );
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn tokens_that_prove_another_identity_or_none_are_refused_with_the_reason() {
    let Some((mesh, cp)) = shop(
        "tokens_that_prove_another_identity_or_none_are_refused_with_the_reason",
        MESH,
    )
    .await
    else {
        return;
    };
    let refusal = |status: Result<mesh_control_plane::client::Workload, tonic::Status>| {
        let status = status.expect_err("refused");
        (status.code(), status.message().to_owned())
    };

    // Another service's account, asking for orders.
    let inventory = mesh.token("inventory", AUDIENCE).await;
    let (code, message) = refusal(mesh.certify(&cp, "orders", &inventory).await);
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(
        message.contains("service account \"inventory\", not \"orders\""),
        "{message}"
    );
    assert_eq!(refused(&cp, "other_service_account").await, 1.0);
    // The same token gets inventory's identity: the refusal was about the service asked for.
    assert!(mesh.certify(&cp, "inventory", &inventory).await.is_ok());

    // The right account, another audience.
    let elsewhere = mesh.token("orders", "vault").await;
    let (code, message) = refusal(mesh.certify(&cp, "orders", &elsewhere).await);
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(
        message.contains("not for audience \"mesh.local\"") && message.contains("vault"),
        "{message}"
    );
    assert_eq!(refused(&cp, "wrong_audience").await, 1.0);

    // An account named like the service, in another namespace.
    mesh.namespace("other").await;
    let foreign = mesh.token_request("other", "orders", AUDIENCE, None).await;
    let (code, message) = refusal(mesh.certify(&cp, "orders", &foreign).await);
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(
        message.contains("other/orders is not in the mesh's namespace \"default\""),
        "{message}"
    );
    assert_eq!(refused(&cp, "other_namespace").await, 1.0);

    // A token of an account deleted after the token was issued.
    let doomed = mesh.token("orders", AUDIENCE).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(mesh.admin(), MESH_NAMESPACE);
    accounts
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    // The API server learns of the deletion through its own cache: poll until it has.
    let (code, message) = eventually(
        "the deleted account's token to be refused",
        PATIENCE,
        || async {
            match mesh.certify(&cp, "orders", &doomed).await {
                Ok(_) => None,
                Err(status) => Some((status.code(), status.message().to_owned())),
            }
        },
    )
    .await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(
        message.contains("not authenticated by the cluster"),
        "{message}"
    );

    // An account named like a service nobody declared.
    let payments = mesh.token("payments", AUDIENCE).await;
    let (code, message) = refusal(mesh.certify(&cp, "payments", &payments).await);
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(
        message.contains("service \"payments\" is not declared"),
        "{message}"
    );
    assert_eq!(refused(&cp, "undeclared").await, 1.0);

    // Garbage, and nothing at all.
    for garbage in ["garbage", "a.b.c", ""] {
        let (code, message) = refusal(mesh.certify(&cp, "inventory", garbage).await);
        assert_eq!(code, Code::Unauthenticated, "{garbage:?}: {message}");
        assert!(
            message.contains("not authenticated by the cluster"),
            "{message}"
        );
    }
    assert!(refused(&cp, "unauthenticated").await >= 4.0);
    cp.stop().await.unwrap();
}

/// A service-account token signed with the test cluster's key, as the API server signs them:
/// ES256, `kid` the hash of the public key, the `kubernetes.io` claims of a bound token.
fn sign_token(mesh: &KubeMesh, account: &ServiceAccount, issued: i64, expires: i64) -> String {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let pem = std::fs::read(mesh.cluster.service_account_signing_key()).unwrap();
    let pkcs8 = pem::parse(pem).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.contents(), &rng).unwrap();
    // The key id is the SHA-256 of the public key's SubjectPublicKeyInfo.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(key.public_key().as_ref());
    let kid = b64(ring::digest::digest(&ring::digest::SHA256, &spki).as_ref());
    let header = json!({ "alg": "ES256", "kid": kid });
    let claims = json!({
        "aud": [AUDIENCE],
        "iss": mesh_kube_testkit::SERVICE_ACCOUNT_ISSUER,
        "sub": format!("system:serviceaccount:{MESH_NAMESPACE}:orders"),
        "iat": issued,
        "nbf": issued,
        "exp": expires,
        "jti": format!("test-{issued}"),
        "kubernetes.io": {
            "namespace": MESH_NAMESPACE,
            "serviceaccount": {
                "name": "orders",
                "uid": account.metadata.uid.clone().unwrap(),
            },
        },
    });
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key.sign(&rng, signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(signature.as_ref()))
}

#[tokio::test]
async fn an_expired_token_is_refused_and_the_same_token_unexpired_is_accepted() {
    let Some((mesh, cp)) = shop(
        "an_expired_token_is_refused_and_the_same_token_unexpired_is_accepted",
        MESH,
    )
    .await
    else {
        return;
    };
    let account = mesh.service_account_in(MESH_NAMESPACE, "orders").await;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    // Signed as the API server signs: accepted while valid, which shows that the expired one
    // below is refused for its expiry and nothing else.
    let fresh = sign_token(&mesh, &account, now - 60, now + 600);
    let workload = mesh
        .certify(&cp, "orders", &fresh)
        .await
        .unwrap_or_else(|status| panic!("the fresh token: {status:?}"));
    assert_eq!(
        uri_sans(&workload.chain_der[0]),
        ["spiffe://mesh.local/ns/default/sa/orders"]
    );
    // Expired an hour ago, well past any clock-skew leeway.
    let expired = sign_token(&mesh, &account, now - 7200, now - 3600);
    let status = mesh.certify(&cp, "orders", &expired).await.err().unwrap();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .contains("not authenticated by the cluster")
            && status.message().contains("expired"),
        "{status:?}"
    );
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn when_the_api_server_cannot_answer_certify_is_unavailable_and_recovers() {
    let Some((mesh, cp)) = shop(
        "when_the_api_server_cannot_answer_certify_is_unavailable_and_recovers",
        MESH,
    )
    .await
    else {
        return;
    };
    let token = mesh.token("orders", AUDIENCE).await;
    let (_, apiserver) = mesh.cluster.pids();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &apiserver.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {apiserver}");
    };
    // A stopped process: connections are accepted by the kernel and never answered.
    signal("-STOP");
    let stopped = mesh.certify(&cp, "orders", &token).await;
    signal("-CONT");
    let status = stopped.expect_err("refused while the API server is stopped");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("cannot review the token now"),
        "{status:?}"
    );
    assert_eq!(refused(&cp, "unavailable").await, 1.0);
    eventually("certify to work again", PATIENCE, || async {
        mesh.certify(&cp, "orders", &token).await.ok()
    })
    .await;
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_renews_with_the_token_the_kubelet_rotated_in() {
    let Some((mesh, cp)) = shop(
        "a_sidecar_renews_with_the_token_the_kubelet_rotated_in",
        // Renewals every 3 to 3.5 s.
        "trust_domain: mesh.local\ncertificate_lifetime: 5s\n",
    )
    .await
    else {
        return;
    };
    // The first token is bound to a Secret, so deleting the Secret invalidates it, as
    // deleting a pod invalidates the pod's token.
    let secrets: Api<Secret> = Api::namespaced(mesh.admin(), MESH_NAMESPACE);
    let binding = secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("orders-binding".to_owned()),
                    ..ObjectMeta::default()
                },
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    let first = mesh
        .token_request(
            MESH_NAMESPACE,
            "orders",
            AUDIENCE,
            Some(BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Secret".to_owned()),
                name: binding.metadata.name.clone(),
                uid: binding.metadata.uid.clone(),
            }),
        )
        .await;
    let volume = tempfile::tempdir().unwrap();
    let token_file = write_projected_token(volume.path(), &first);

    let sidecars = TestMesh::new();
    let sidecar = sidecars
        .sidecar("orders")
        .app(app::echo("orders").await)
        .control_plane(mesh.control_plane_ref(&cp, &token_file))
        .start()
        .await;
    eventually("the orders sidecar to be ready", PATIENCE, || async {
        let ready = client::get_url(&sidecar.admin_url("/ready")).await;
        (ready.status() == StatusCode::OK).then_some(())
    })
    .await;
    // Registered as orders: its certificate is orders' identity.
    eventually("the sidecar to register as orders", PATIENCE, || async {
        (!cp.status().services["orders"].instances.is_empty()).then_some(())
    })
    .await;

    // The kubelet's rotation: a new token in place, the old one no longer valid.
    secrets
        .delete("orders-binding", &DeleteParams::default())
        .await
        .unwrap();
    let second = mesh.token("orders", AUDIENCE).await;
    write_projected_token(volume.path(), &second);
    eventually("the first token to be refused", PATIENCE, || async {
        mesh.certify(&cp, "orders", &first).await.err()
    })
    .await;
    let renewals = |text: &str| {
        metrics::value(text, "mesh_certificate_renewals_total{result=\"ok\"}").unwrap_or(0.0)
    };
    let before = renewals(&sidecar.metrics().await);
    // Every renewal from now on can only have used the second token.
    eventually("two renewals with the new token", PATIENCE, || async {
        (renewals(&sidecar.metrics().await) >= before + 2.0).then_some(())
    })
    .await;
    let ready = client::get_url(&sidecar.admin_url("/ready")).await;
    assert_eq!(ready.status(), StatusCode::OK);
    sidecar.shutdown().await.unwrap();
    cp.stop().await.unwrap();
}
