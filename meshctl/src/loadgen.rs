//! `meshctl loadgen`: orders through the storefront at a fixed rate, and what the mesh did.
//!
//! Open loop: a ticker starts one order per tick whether or not earlier ones have answered, so
//! a slow mesh shows up as latency rather than as a lower rate. At most `concurrency` orders are
//! in flight; a tick that finds them all busy is counted as not sent, which says the target
//! cannot keep up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use http::{Method, StatusCode};
use indicatif::{ProgressBar, ProgressStyle};
use prometheus_parse::Value;
use tokio::sync::{Semaphore, mpsc};

use crate::http::HttpClient;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The storefront's base URL.
    pub target: String,
    /// Orders per second.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Orders in flight at most.
    pub concurrency: usize,
    /// Sidecar admin addresses whose `mesh_retries_total` is compared before and after.
    pub sidecars: Vec<SocketAddr>,
    /// Show a progress bar (on standard error, when it is a terminal).
    pub progress: bool,
}

/// Why the load could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The options make no sense.
    #[error("{0}")]
    Options(String),
    /// The product list could not be read.
    #[error("cannot list products at {url}: {message}")]
    Products {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// What happened.
#[derive(Debug)]
pub struct Summary {
    /// Orders sent.
    pub sent: u64,
    /// Ticks skipped because `concurrency` orders were in flight.
    pub not_sent: u64,
    /// Orders answered 201.
    pub succeeded: u64,
    /// Failures by status (`"502"`) or by transport error (`"connection error"`, `"timeout"`).
    pub failed: BTreeMap<String, u64>,
    /// Latency of every answered order, microseconds.
    pub latency: Histogram<u64>,
    /// How long sending took.
    pub elapsed: Duration,
    /// Increase of `mesh_retries_total` over every sidecar; `None` when none could be scraped.
    pub retries: Option<u64>,
    /// How many sidecars were scraped (before and after).
    pub sidecars_scraped: usize,
}

impl Summary {
    /// Failed orders.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// The summary as printed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let secs = self.elapsed.as_secs_f64().max(0.001);
        let _ = writeln!(
            out,
            "sent          {} in {:.1}s ({:.1}/s)",
            self.sent,
            secs,
            self.sent as f64 / secs
        );
        if self.not_sent > 0 {
            let _ = writeln!(
                out,
                "not sent      {} (every slot busy: raise --concurrency or lower --rate)",
                self.not_sent
            );
        }
        let _ = writeln!(out, "succeeded     {} (201)", self.succeeded);
        let failed = self.failed_total();
        if failed == 0 {
            let _ = writeln!(out, "failed        0");
        } else {
            let by: Vec<String> = self
                .failed
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = writeln!(out, "failed        {failed} ({})", by.join(", "));
        }
        let rate = if self.sent == 0 {
            0.0
        } else {
            100.0 * self.succeeded as f64 / self.sent as f64
        };
        let _ = writeln!(out, "success rate  {rate:.1}%");
        if self.latency.is_empty() {
            let _ = writeln!(out, "latency       no answers");
        } else {
            let _ = writeln!(
                out,
                "latency       p50 {}  p90 {}  p99 {}  max {}",
                ms(self.latency.value_at_quantile(0.5)),
                ms(self.latency.value_at_quantile(0.9)),
                ms(self.latency.value_at_quantile(0.99)),
                ms(self.latency.max()),
            );
        }
        match self.retries {
            Some(n) => {
                let _ = writeln!(
                    out,
                    "retries seen  {n} (mesh_retries_total over {} sidecars)",
                    self.sidecars_scraped
                );
            }
            None => {
                let _ = writeln!(out, "retries seen  unknown (no sidecar metrics)");
            }
        }
        out
    }
}

fn ms(micros: u64) -> String {
    format!("{:.1}ms", micros as f64 / 1000.0)
}

const CUSTOMERS: [&str; 8] = [
    "ada", "grace", "linus", "barbara", "ken", "margaret", "dennis", "frances",
];

enum Outcome {
    Answered { status: StatusCode, micros: u64 },
    Failed { reason: &'static str },
}

/// Runs the load and returns what happened.
pub async fn run(options: &LoadOptions) -> Result<Summary, LoadError> {
    if !(options.rate > 0.0 && options.rate.is_finite()) {
        return Err(LoadError::Options(format!(
            "--rate must be above 0, not {}",
            options.rate
        )));
    }
    if options.concurrency == 0 {
        return Err(LoadError::Options(
            "--concurrency must be at least 1".into(),
        ));
    }
    let target = options.target.trim_end_matches('/').to_owned();
    let client = HttpClient::new(Duration::from_secs(10));
    let skus = products(&client, &target).await?;
    let before = scrape_retries(&options.sidecars).await;

    let total = (options.rate * options.duration.as_secs_f64()).round() as u64;
    let bar = if options.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} orders  {msg}  [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let slots = Arc::new(Semaphore::new(options.concurrency));
    let url = format!("{target}/api/orders");
    let start = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate));
    // Open loop: late ticks fire at once to keep the average rate.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);

    let mut summary = Summary {
        sent: 0,
        not_sent: 0,
        succeeded: 0,
        failed: BTreeMap::new(),
        latency: new_histogram(),
        elapsed: Duration::ZERO,
        retries: None,
        sidecars_scraped: 0,
    };
    let mut ok = 0u64;
    let mut failed = 0u64;
    let mut record = |summary: &mut Summary, outcome: Outcome| {
        match outcome {
            Outcome::Answered { status, micros } => {
                let _ = summary.latency.record(micros.max(1));
                if status == StatusCode::CREATED {
                    summary.succeeded += 1;
                    ok += 1;
                } else {
                    *summary
                        .failed
                        .entry(status.as_u16().to_string())
                        .or_default() += 1;
                    failed += 1;
                }
            }
            Outcome::Failed { reason } => {
                *summary.failed.entry(reason.to_owned()).or_default() += 1;
                failed += 1;
            }
        }
        bar.inc(1);
        let p99 = if summary.latency.is_empty() {
            "-".to_owned()
        } else {
            ms(summary.latency.value_at_quantile(0.99))
        };
        bar.set_message(format!("ok {ok}  failed {failed}  p99 {p99}"));
    };

    for _ in 0..total {
        ticker.tick().await;
        while let Ok(outcome) = rx.try_recv() {
            record(&mut summary, outcome);
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            summary.not_sent += 1;
            bar.inc(1);
            continue;
        };
        summary.sent += 1;
        let body = serde_json::json!({
            "customer": format!(
                "{}-{}",
                CUSTOMERS[fastrand::usize(..CUSTOMERS.len())],
                fastrand::u16(1..1000)
            ),
            "items": [{"sku": skus[fastrand::usize(..skus.len())], "qty": 1}],
        });
        let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
        tokio::spawn(async move {
            let sent_at = tokio::time::Instant::now();
            let outcome = match client.json(Method::POST, &url, &body).await {
                Ok(response) => Outcome::Answered {
                    status: response.status,
                    micros: u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX),
                },
                Err(crate::http::HttpError::Timeout { .. }) => {
                    Outcome::Failed { reason: "timeout" }
                }
                Err(_) => Outcome::Failed {
                    reason: "connection error",
                },
            };
            let _ = tx.send(outcome);
            drop(permit);
        });
    }
    summary.elapsed = start.elapsed();
    drop(tx);
    while let Some(outcome) = rx.recv().await {
        record(&mut summary, outcome);
    }
    bar.finish_and_clear();

    let after = scrape_retries(&options.sidecars).await;
    let mut increase = 0u64;
    let mut scraped = 0usize;
    for (addr, end) in &after {
        if let Some(begin) = before.get(addr) {
            // A sidecar that restarted starts again from 0: count what it has now.
            increase += if end >= begin { end - begin } else { *end };
            scraped += 1;
        }
    }
    summary.sidecars_scraped = scraped;
    summary.retries = (scraped > 0).then_some(increase);
    Ok(summary)
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 1 h, 3 significant digits; these bounds are always valid.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

async fn products(client: &HttpClient, target: &str) -> Result<Vec<String>, LoadError> {
    let url = format!("{target}/api/products");
    let error = |message: String| LoadError::Products {
        url: url.clone(),
        message,
    };
    let response = client.get(&url).await.map_err(|e| error(e.to_string()))?;
    if !response.status.is_success() {
        return Err(error(format!("{}: {}", response.status, response.text())));
    }
    let list = response.json();
    let products: Vec<(String, i64)> = list
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|p| {
                    let sku = p.get("sku")?.as_str()?.to_owned();
                    Some((
                        sku,
                        p.get("available").and_then(|a| a.as_i64()).unwrap_or(1),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    // Products sold out before the run would only measure 409s; those that sell out during
    // it still show them.
    let in_stock: Vec<String> = products
        .iter()
        .filter(|(_, available)| *available > 0)
        .map(|(sku, _)| sku.clone())
        .collect();
    match (in_stock.is_empty(), products.is_empty()) {
        (false, _) => Ok(in_stock),
        (true, false) => Ok(products.into_iter().map(|(sku, _)| sku).collect()),
        (true, true) => Err(error("no products with a sku".into())),
    }
}

/// `mesh_retries_total` of every sidecar that answers, by admin address.
pub async fn scrape_retries(sidecars: &[SocketAddr]) -> BTreeMap<SocketAddr, u64> {
    let mut totals = BTreeMap::new();
    for addr in sidecars {
        let answer = mesh_control_plane::admin_client::request(*addr, Method::GET, "/metrics");
        if let Ok(Ok((status, body))) = tokio::time::timeout(Duration::from_secs(2), answer).await
            && status.is_success()
        {
            let total = sum_metric(&String::from_utf8_lossy(&body), "mesh_retries_total");
            totals.insert(*addr, total.round() as u64);
        }
    }
    totals
}

/// The sum of every sample of `name` (all label sets) in Prometheus text; 0 when there is none.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
        return 0.0;
    };
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter_map(|sample| match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            Value::Histogram(_) | Value::Summary(_) => None,
        })
        .filter(|v| v.is_finite())
        .sum()
}
