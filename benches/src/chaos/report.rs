//! The chaos run's numbers: totals, failures by cause, latency, what each fault did and a
//! timeline, as markdown for the terminal and `results/chaos.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::datapath::Machine;

use super::faults::{Event, PolicyEdits};
use super::load::Sample;
use super::mesh::{CALLER, DESTINATION, INSTANCES};

/// Width of one timeline row.
pub const TIMELINE_STEP: Duration = Duration::from_secs(5);

/// A finished run.
#[derive(Debug, Clone)]
pub struct Report {
    pub command: String,
    pub mode: String,
    pub machine: Machine,
    pub rate: u32,
    pub duration: Duration,
    /// The destination's `retries.retry_on`.
    pub retry_on: Vec<String>,
    /// Requests the schedule released; every one is in `samples`.
    pub scheduled: u64,
    pub samples: Vec<Sample>,
    pub events: Vec<Event>,
    pub edits: PolicyEdits,
    /// What went wrong in the harness itself (a process that died on its own, a check that
    /// could not run); the run is not valid when there is any.
    pub harness_errors: Vec<String>,
    /// The work directory, when it was kept (logs of every process).
    pub kept_dir: Option<String>,
}

/// Failures of one cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub cause: String,
    pub requests: u64,
    pub first: Duration,
    pub last: Duration,
}

/// One row of the timeline.
#[derive(Debug, Clone)]
pub struct Slice {
    pub from: Duration,
    pub requests: u64,
    pub failed: u64,
    pub p99: Option<Duration>,
    pub max: Option<Duration>,
    /// Requests answered by each instance.
    pub by_instance: [u64; INSTANCES],
    /// Events that took effect in it.
    pub events: Vec<String>,
}

impl Report {
    pub fn succeeded(&self) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.outcome.cause().is_none())
            .count() as u64
    }

    pub fn failed(&self) -> u64 {
        self.samples.len() as u64 - self.succeeded()
    }

    /// Whether every fault was applied and every check ran: the harness did its job.
    pub fn faults_applied(&self) -> bool {
        self.harness_errors.is_empty()
            && self.events.iter().all(|e| e.error.is_none())
            && self.edits.errors.is_empty()
            && (self.edits.written == 0 || self.edits.last_in_force == Some(true))
    }

    /// Failed requests grouped by cause, the most frequent first.
    pub fn causes(&self) -> Vec<Cause> {
        let mut by: BTreeMap<String, Cause> = BTreeMap::new();
        for s in &self.samples {
            if let Some(cause) = s.outcome.cause() {
                by.entry(cause.clone())
                    .and_modify(|c| {
                        c.requests += 1;
                        c.last = s.due;
                    })
                    .or_insert(Cause {
                        cause,
                        requests: 1,
                        first: s.due,
                        last: s.due,
                    });
            }
        }
        let mut causes: Vec<Cause> = by.into_values().collect();
        causes.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.first.cmp(&b.first)));
        causes
    }

    /// Latency percentile `p` (0–100) over every request, failed ones included.
    pub fn latency(&self, p: f64) -> Option<Duration> {
        percentile(self.samples.iter().map(|s| s.latency).collect(), p)
    }

    /// The run in slices of [`TIMELINE_STEP`], by when each request was due.
    pub fn timeline(&self) -> Vec<Slice> {
        let slices = self.duration.as_secs_f64() / TIMELINE_STEP.as_secs_f64();
        let count = (slices.ceil() as usize).max(1);
        let index =
            |d: Duration| ((d.as_secs_f64() / TIMELINE_STEP.as_secs_f64()) as usize).min(count - 1);
        let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); count];
        let mut failed = vec![0u64; count];
        let mut by_instance = vec![[0u64; INSTANCES]; count];
        for s in &self.samples {
            let i = index(s.due);
            latencies[i].push(s.latency);
            if let Some(n) = s
                .instance
                .map(usize::from)
                .filter(|n| (1..=INSTANCES).contains(n))
            {
                by_instance[i][n - 1] += 1;
            }
            if s.outcome.cause().is_some() {
                failed[i] += 1;
            }
        }
        let mut events: Vec<Vec<String>> = vec![Vec::new(); count];
        for e in &self.events {
            events[index(e.done())].push(short(&e.what));
        }
        latencies
            .into_iter()
            .zip(failed)
            .zip(by_instance)
            .zip(events)
            .enumerate()
            .map(|(i, (((lat, failed), by_instance), events))| Slice {
                from: TIMELINE_STEP * u32::try_from(i).unwrap_or(u32::MAX),
                requests: lat.len() as u64,
                failed,
                max: lat.iter().max().copied(),
                p99: percentile(lat, 99.0),
                by_instance,
                events,
            })
            .collect()
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# chaos ({})\n", self.mode);
        let _ = writeln!(md, "`{}`\n", self.command);
        let _ = writeln!(
            md,
            "{}; commit {}; {} ({} cores), Linux {}; load average {} before, {} after.\n",
            m.date_utc,
            m.commit.as_deref().unwrap_or("unknown"),
            m.cpu_model,
            m.cores,
            m.kernel,
            m.load_before,
            m.load_after
        );
        let _ = writeln!(
            md,
            "Load: {} GET/s for {} s, open loop, through the {CALLER} sidecar to {DESTINATION} \
             ({INSTANCES} instances, each an echo app behind its own sidecar; all certified and \
             configured by the control plane). Latency runs from each request's due time. \
             The destination retries on `[{}]`.\n",
            self.rate,
            self.duration.as_secs_f64(),
            self.retry_on.join(", ")
        );
        let ms = |d: Option<Duration>| {
            d.map_or("–".to_owned(), |d| {
                format!("{:.1}", d.as_secs_f64() * 1e3)
            })
        };
        let _ = writeln!(
            md,
            "| requests | succeeded | failed | p50 ms | p99 ms | max ms |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |\n",
            self.samples.len(),
            self.succeeded(),
            self.failed(),
            ms(self.latency(50.0)),
            ms(self.latency(99.0)),
            ms(self.latency(100.0)),
        );
        if self.samples.len() as u64 != self.scheduled {
            let _ = writeln!(
                md,
                "**{} requests were scheduled but only {} recorded.**\n",
                self.scheduled,
                self.samples.len()
            );
        }
        let causes = self.causes();
        if causes.is_empty() {
            let _ = writeln!(md, "No request failed.\n");
        } else {
            let _ = writeln!(md, "## Failed requests by cause\n");
            let _ = writeln!(md, "| cause | requests | first due at | last due at |");
            let _ = writeln!(md, "|---|---:|---:|---:|");
            for c in &causes {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.2} s | {:.2} s |",
                    c.cause.replace('|', "\\|"),
                    c.requests,
                    c.first.as_secs_f64(),
                    c.last.as_secs_f64()
                );
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## Faults\n");
        let _ = writeln!(md, "| at | took | fault | result |");
        let _ = writeln!(md, "|---:|---:|---|---|");
        for e in &self.events {
            let _ = writeln!(
                md,
                "| {:.2} s | {:.2} s | {} | {} |",
                e.at.as_secs_f64(),
                e.took.as_secs_f64(),
                e.what,
                e.error.as_deref().map_or("done".to_owned(), |e| format!(
                    "**failed**: {}",
                    e.replace('\n', " ")
                ))
            );
        }
        let edits = &self.edits;
        let span = match (edits.first_at, edits.last_at) {
            (Some(a), Some(b)) => format!(
                " between {:.2} s and {:.2} s",
                a.as_secs_f64(),
                b.as_secs_f64()
            ),
            _ => String::new(),
        };
        let in_force = match edits.last_in_force {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not checked",
        };
        let _ = writeln!(
            md,
            "\nPolicy edits: {} of `{DESTINATION}.yaml` written{span} (timeout, retries and a \
             route changed and back); the last one in force on the {CALLER} sidecar at the end: \
             {in_force}.",
            edits.written
        );
        for e in &edits.errors {
            let _ = writeln!(md, "- **edit failed**: {e}");
        }
        for e in &self.harness_errors {
            let _ = writeln!(md, "\n**Harness**: {e}");
        }
        let _ = writeln!(md, "\n## Timeline\n");
        let names: Vec<String> = (1..=INSTANCES)
            .map(|n| format!("{DESTINATION}-{n}"))
            .collect();
        let _ = writeln!(
            md,
            "Requests by when they were due; the instance columns count who answered.\n\n\
             | due from | requests | failed | p99 ms | max ms | {} | took effect |",
            names.join(" | ")
        );
        let _ = writeln!(
            md,
            "|---:|---:|---:|---:|---:|{}---|",
            "---:|".repeat(INSTANCES)
        );
        for s in self.timeline() {
            let counts: Vec<String> = s.by_instance.iter().map(u64::to_string).collect();
            let _ = writeln!(
                md,
                "| {:.0} s | {} | {} | {} | {} | {} | {} |",
                s.from.as_secs_f64(),
                s.requests,
                s.failed,
                ms(s.p99),
                ms(s.max),
                counts.join(" | "),
                s.events.join("; ")
            );
        }
        if let Some(dir) = &self.kept_dir {
            let _ = writeln!(md, "\nLogs of every process: `{dir}/logs`.");
        }
        md
    }
}

/// An event's name for the timeline: its text up to the first parenthesis.
fn short(what: &str) -> String {
    what.split(" (").next().unwrap_or(what).to_owned()
}

/// The `p`-th percentile (nearest rank) of `values`.
fn percentile(mut values: Vec<Duration>, p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |v: u64| Duration::from_millis(v);
        let values: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(values.clone(), 50.0), Some(ms(50)));
        assert_eq!(percentile(values.clone(), 99.0), Some(ms(99)));
        assert_eq!(percentile(values, 100.0), Some(ms(100)));
        assert_eq!(percentile(vec![ms(7)], 0.0), Some(ms(7)));
        assert_eq!(percentile(Vec::new(), 50.0), None);
    }
}
