//! The admin endpoint.

use http::StatusCode;
use mesh_testkit::client;

#[tokio::test]
async fn live_ready_config_and_metrics() {
    let pair = crate::Pair::start().await;
    let admin = |path: &str| pair.orders.admin_url(path);

    assert_eq!(
        client::get_url(&admin("/live")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        client::get_url(&admin("/ready")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        client::get_url(&admin("/nope")).await.status(),
        StatusCode::NOT_FOUND
    );

    let config = client::text(client::get_url(&admin("/config")).await).await;
    let json: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(json["service"], "orders");
    assert_eq!(json["identity"], crate::ORDERS_ID);
    assert_eq!(
        json["destinations"]["inventory"]["endpoints"][0],
        pair.inventory.inbound.to_string()
    );
    assert_eq!(json["connect_timeout"], "1s");
    assert!(!config.contains("PRIVATE KEY"));

    let rsp = client::get(&format!("{}/x", pair.orders.outbound_url()), "inventory").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let _ = client::text(rsp).await;
    let rsp = client::get(&format!("{}/x", pair.orders.outbound_url()), "elsewhere").await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);

    let orders = client::text(client::get_url(&admin("/metrics")).await).await;
    for line in [
        r#"mesh_requests_total{direction="outbound",source="orders",destination="inventory",status_code="200"} 1"#,
        r#"mesh_requests_total{direction="outbound",source="orders",destination="unknown",status_code="503"} 1"#,
        r#"mesh_request_duration_seconds_count{direction="outbound",source="orders",destination="inventory",status_class="2xx"} 1"#,
        r#"mesh_open_connections{direction="admin"} 1"#,
    ] {
        assert!(orders.contains(line), "missing {line} in\n{orders}");
    }
    let inventory =
        client::text(client::get_url(&pair.inventory.admin_url("/metrics")).await).await;
    let line = r#"mesh_requests_total{direction="inbound",source="orders",destination="inventory",status_code="200"} 1"#;
    assert!(inventory.contains(line), "missing {line} in\n{inventory}");
    assert!(
        inventory.contains(r#"mesh_open_connections{direction="inbound"} 1"#),
        "{inventory}"
    );
}

#[tokio::test]
async fn wrong_method_is_405() {
    let pair = crate::Pair::start().await;
    let req = http::Request::get(pair.orders.admin_url("/shutdown"))
        .body(http_body_util::Full::default())
        .unwrap();
    let rsp = client::http1().request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED);
    // Still running.
    assert_eq!(
        client::get_url(&pair.orders.admin_url("/ready"))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_web_page_can_neither_shut_the_sidecar_down_nor_read_it_by_another_name() {
    let pair = crate::Pair::start().await;
    let post = |confirm: Option<&str>| {
        let mut req = http::Request::post(pair.orders.admin_url("/shutdown"));
        if let Some(confirm) = confirm {
            req = req.header("x-mesh-confirm", confirm);
        }
        client::http1().request(req.body(http_body_util::Full::default()).unwrap())
    };
    // A form post (what a page can send without asking) is refused, and nothing stops.
    let rsp = post(None).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    assert!(client::text(rsp).await.contains("x-mesh-confirm: shutdown"));
    assert_eq!(
        post(Some("yes")).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        client::get_url(&pair.orders.admin_url("/ready"))
            .await
            .status(),
        StatusCode::OK
    );
    // A DNS name pointed at this machine is not this listener's name.
    for host in ["attacker.example", "attacker.example:80", "localhost:1"] {
        let rsp = client::get(&pair.orders.admin_url("/metrics"), host).await;
        assert_eq!(rsp.status(), StatusCode::MISDIRECTED_REQUEST, "{host}");
    }
    let port = pair.orders.admin.port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "127.0.0.1".into(),
    ] {
        let rsp = client::get(&pair.orders.admin_url("/live"), &host).await;
        assert_eq!(rsp.status(), StatusCode::OK, "{host}");
    }
    // The admin's own client confirms, from this machine.
    assert_eq!(
        post(Some("shutdown")).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
}

/// The exposition after some traffic, as a scraper gets it.
async fn scrape(pair: &crate::Pair, accept: Option<&str>) -> (String, String) {
    for path in ["/x", "/status/503"] {
        let rsp = client::get(
            &format!("{}{path}", pair.orders.outbound_url()),
            "inventory",
        )
        .await;
        let _ = client::text(rsp).await;
    }
    let mut req = http::Request::get(pair.orders.admin_url("/metrics"));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let rsp = client::http1()
        .request(req.body(http_body_util::Full::default()).unwrap())
        .await
        .unwrap();
    let content_type = rsp.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, client::text(rsp).await)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let pair = crate::Pair::start().await;
    let (content_type, text) = scrape(&pair, None).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let requests: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "mesh_requests_total")
        .collect();
    assert_eq!(requests.len(), 2, "{text}");
    assert!(scrape.docs.contains_key("mesh_requests_total"), "{text}");
    let buckets = scrape
        .samples
        .iter()
        .find(|s| s.metric == "mesh_request_duration_seconds")
        .expect("the latency histogram");
    assert!(matches!(
        buckets.value,
        prometheus_parse::Value::Histogram(_)
    ));

    // promtool, Prometheus's own checker, agrees (CI installs it).
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not run ({e}); install Debian's prometheus package to run it");
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    }
}

#[tokio::test]
async fn openmetrics_is_served_when_asked_for() {
    let pair = crate::Pair::start().await;
    let (content_type, text) =
        scrape(&pair, Some("application/openmetrics-text; version=1.0.0")).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE mesh_requests counter"));
}
