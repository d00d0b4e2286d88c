//! `meshctl check`'s output: each check on a line with ✔ or ✘ (`ok` or `FAIL` when the output
//! is not a terminal), grouped by section, each failure followed by its reason and its fix.

use std::fmt::Write as _;

use mesh_kube::check::{Outcome, Report};

/// How results are marked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marks {
    /// ✔, ✘ and ○: for a terminal.
    Symbols,
    /// ok, FAIL, skip: for logs and scripts.
    Words,
}

impl Marks {
    fn passed(self) -> &'static str {
        match self {
            Self::Symbols => "✔",
            Self::Words => "ok  ",
        }
    }

    fn failed(self) -> &'static str {
        match self {
            Self::Symbols => "✘",
            Self::Words => "FAIL",
        }
    }

    fn skipped(self) -> &'static str {
        match self {
            Self::Symbols => "○",
            Self::Words => "skip",
        }
    }
}

/// The report as text.
pub fn render(report: &Report, marks: Marks) -> String {
    let mut out = String::new();
    let mut section = "";
    for check in &report.checks {
        if check.section != section {
            if !section.is_empty() {
                out.push('\n');
            }
            section = check.section;
            let _ = writeln!(out, "{section}\n{}", "-".repeat(section.chars().count()));
        }
        match &check.outcome {
            Outcome::Passed(None) => {
                let _ = writeln!(out, "{} {}", marks.passed(), check.title);
            }
            Outcome::Passed(Some(detail)) => {
                let _ = writeln!(out, "{} {} ({detail})", marks.passed(), check.title);
            }
            Outcome::Failed { reason, fix } => {
                let _ = writeln!(out, "{} {}", marks.failed(), check.title);
                let _ = writeln!(out, "    {reason}");
                let mut lines = fix.lines();
                if let Some(first) = lines.next() {
                    let _ = writeln!(out, "    fix: {first}");
                }
                for line in lines {
                    let _ = writeln!(out, "    {line}");
                }
            }
            Outcome::Skipped(why) => {
                let _ = writeln!(out, "{} {} (skipped: {why})", marks.skipped(), check.title);
            }
        }
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed { .. }))
        .count();
    out.push('\n');
    match failed {
        0 => out.push_str("all checks passed\n"),
        1 => out.push_str("1 check failed\n"),
        n => {
            let _ = writeln!(out, "{n} checks failed");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use mesh_kube::check::CheckResult;

    use super::*;

    fn report() -> Report {
        Report {
            checks: vec![
                CheckResult {
                    section: "the cluster",
                    title: "the API server is reachable".into(),
                    outcome: Outcome::Passed(None),
                },
                CheckResult {
                    section: "the control plane",
                    title: "the control plane is ready".into(),
                    outcome: Outcome::failed("0 of 1 replicas ready", "see why:\nkubectl describe"),
                },
                CheckResult {
                    section: "the control plane",
                    title: "the webhook injects pods".into(),
                    outcome: Outcome::Skipped("the control plane is not ready".into()),
                },
            ],
        }
    }

    #[test]
    fn words_mark_each_check_and_failures_carry_reason_and_fix() {
        assert_eq!(
            render(&report(), Marks::Words),
            "the cluster\n\
             -----------\n\
             ok   the API server is reachable\n\
             \n\
             the control plane\n\
             -----------------\n\
             FAIL the control plane is ready\n\
             \x20   0 of 1 replicas ready\n\
             \x20   fix: see why:\n\
             \x20   kubectl describe\n\
             skip the webhook injects pods (skipped: the control plane is not ready)\n\
             \n\
             1 check failed\n"
        );
    }

    #[test]
    fn a_terminal_gets_symbols() {
        let text = render(&report(), Marks::Symbols);
        assert!(text.contains("✔ the API server is reachable"), "{text}");
        assert!(text.contains("✘ the control plane is ready"), "{text}");
    }
}
