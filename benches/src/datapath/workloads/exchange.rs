//! The loops every request-shaped workload shares: a closed loop for throughput and an open
//! loop at a fixed rate for latency, over any [`Exchange`], and the per-configuration sums.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::dial::Dial;
use super::super::load::{new_histogram, release_on_schedule};
use super::super::procs::cpu_ticks;
use super::super::topology::Running;
use super::super::{Error, Plan, Topology};
use super::Exchange;

/// Sums of one phase kind over the rounds.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    /// Payload bytes of the successful units, both ways.
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
}

impl Counts {
    fn add(&mut self, other: Self) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.seconds += other.seconds;
    }
}

/// One configuration's sums over the rounds.
pub(crate) struct Tally {
    pub(crate) running: Option<Running>,
    pub(crate) topology: Topology,
    pub(crate) failure: Option<String>,
    pub(crate) closed: Counts,
    pub(crate) open: Counts,
    /// Latencies of the open-loop phases, µs from the intended send time.
    pub(crate) hist: Option<Histogram<u64>>,
    /// Each round's own open-loop p99, µs.
    pub(crate) round_p99: Vec<u64>,
    /// Per proxy: CPU ticks in the closed-loop phases and in the open-loop phases.
    pub(crate) cpu: Vec<(u64, u64)>,
    /// What the workload read from the configuration after its rounds ([`Exchange::inspect`]).
    pub(crate) details: BTreeMap<String, u64>,
}

impl Tally {
    pub(crate) fn new(topology: Topology, started: Result<Running, Error>) -> Self {
        let (running, failure) = match started {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let proxies = running.as_ref().map_or(0, |r| r.proxies.len());
        Self {
            running,
            topology,
            failure,
            closed: Counts::default(),
            open: Counts::default(),
            hist: None,
            round_p99: Vec::new(),
            cpu: vec![(0, 0); proxies],
            details: BTreeMap::new(),
        }
    }

    /// Stops measuring this configuration; the others go on.
    pub(crate) fn fail(&mut self, err: Error) {
        self.failure = Some(err.to_string());
        self.running = None;
    }
}

/// A workload's exchange and plan: runs its phases.
pub(crate) struct Loops<E> {
    pub(crate) exchange: Arc<E>,
    pub(crate) plan: Plan,
}

/// A connection that failed is replaced; a refused connect waits a little so a dead target
/// does not make the client spin.
async fn replace<E: Exchange>(exchange: &E, dial: &Dial, conn: &mut E::Conn) {
    match exchange.connect(dial).await {
        Ok(fresh) => *conn = fresh,
        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
    }
}

impl<E: Exchange> Loops<E> {
    async fn open_conns(&self, dial: &Dial, count: usize) -> Result<Vec<E::Conn>, Error> {
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count {
            conns.push(self.exchange.connect(dial).await?);
        }
        Ok(conns)
    }

    /// Max throughput: each of the plan's connections starts its next unit as soon as the
    /// last one ended, for `duration`.
    pub(crate) async fn closed(&self, dial: &Dial, duration: Duration) -> Result<Counts, Error> {
        let conns = self.open_conns(dial, self.plan.connections).await?;
        let started = Instant::now();
        let deadline = started + duration;
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let exchange = self.exchange.clone();
                let dial = dial.clone();
                tokio::spawn(async move {
                    let mut out = Counts::default();
                    while Instant::now() < deadline {
                        match exchange.once(&dial, &mut conn).await {
                            Ok(bytes) => {
                                out.ok += 1;
                                out.bytes += bytes;
                            }
                            Err(_) => {
                                out.errors += 1;
                                replace(exchange.as_ref(), &dial, &mut conn).await;
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        let mut total = Counts::default();
        for task in tasks {
            match task.await {
                Ok(part) => total.add(part),
                Err(_) => total.errors += 1,
            }
        }
        total.seconds = started.elapsed().as_secs_f64();
        Ok(total)
    }

    /// Latency at the plan's rate, free of coordinated omission: a thread releases unit `i` at
    /// `start + i / rate` whatever happened before, and latency runs from that intended time.
    async fn open(&self, dial: &Dial) -> Result<(Counts, Histogram<u64>), Error> {
        let conns = self.open_conns(dial, self.plan.rate_connections).await?;
        let rate = self.plan.rate.max(1);
        let count = (f64::from(rate) * self.plan.latency_phase.as_secs_f64()).round() as u64;
        let period = Duration::from_secs_f64(1.0 / f64::from(rate));
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let started = Instant::now();
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let rx = rx.clone();
                let exchange = self.exchange.clone();
                let dial = dial.clone();
                tokio::spawn(async move {
                    let mut hist = new_histogram()?;
                    let mut out = Counts::default();
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(intended) = next else { break };
                        match exchange.once(&dial, &mut conn).await {
                            Ok(bytes) => {
                                let us = intended.elapsed().as_micros();
                                hist.saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
                                out.ok += 1;
                                out.bytes += bytes;
                            }
                            Err(_) => {
                                out.errors += 1;
                                replace(exchange.as_ref(), &dial, &mut conn).await;
                            }
                        }
                    }
                    Ok::<_, Error>((out, hist))
                })
            })
            .collect();
        let schedule = release_on_schedule(count, period, tx);
        let mut total = Counts::default();
        let mut hist = new_histogram()?;
        for task in tasks {
            match task.await {
                Ok(Ok((part, h))) => {
                    total.add(part);
                    hist.add(&h).map_err(|e| Error::Histogram(e.to_string()))?;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => total.errors += 1,
            }
        }
        let _ = tokio::task::spawn_blocking(move || schedule.join()).await;
        total.seconds = started.elapsed().as_secs_f64();
        Ok((total, hist))
    }

    /// One closed-loop and one open-loop phase of one configuration, with its proxies' CPU
    /// around each.
    pub(crate) async fn round(&self, tally: &mut Tally) -> Result<(), Error> {
        let Some(running) = &tally.running else {
            return Ok(());
        };
        let pids = running.pids();
        let dial = running.dial();
        let ticks = |pids: &[u32]| -> Result<Vec<u64>, Error> {
            pids.iter().map(|pid| cpu_ticks(*pid)).collect()
        };

        let before = ticks(&pids)?;
        let closed = self.closed(&dial, self.plan.throughput_phase).await?;
        let after = ticks(&pids)?;
        tally.closed.add(closed);
        for (sum, (a, b)) in tally.cpu.iter_mut().zip(after.iter().zip(&before)) {
            sum.0 += a.saturating_sub(*b);
        }

        // A short pause so the open loop starts on an idle machine, not on the closed loop's
        // tail.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = ticks(&pids)?;
        let (open, hist) = self.open(&dial).await?;
        let after = ticks(&pids)?;
        tally.open.add(open);
        for (sum, (a, b)) in tally.cpu.iter_mut().zip(after.iter().zip(&before)) {
            sum.1 += a.saturating_sub(*b);
        }
        tally.round_p99.push(hist.value_at_quantile(0.99));
        match &mut tally.hist {
            None => tally.hist = Some(hist),
            Some(total) => total
                .add(&hist)
                .map_err(|e| Error::Histogram(e.to_string()))?,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
}
