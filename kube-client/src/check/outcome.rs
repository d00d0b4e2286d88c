//! What a check found: passed (with what it saw), failed (why, and the fix), or skipped because
//! a check it needs failed.

use std::future::Future;
use std::time::Duration;

/// How long one cluster call may take: a check must end even when the API server hangs.
pub const CALL_PATIENCE: Duration = Duration::from_secs(20);

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The group it belongs to, e.g. "the control plane".
    pub section: &'static str,
    /// What it checks, as a statement that holds when it passes.
    pub title: String,
    /// What it found.
    pub outcome: Outcome,
}

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It holds; what was seen, if worth saying.
    Passed(Option<String>),
    /// It does not hold.
    Failed {
        /// What is wrong.
        reason: String,
        /// What to do about it.
        fix: String,
    },
    /// Not run: a check it needs failed.
    Skipped(String),
}

/// Every check's result, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The results.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks
            .iter()
            .any(|c| matches!(c.outcome, Outcome::Failed { .. }))
    }

    /// Records a result; returns whether it passed, so later checks can depend on it.
    pub(super) fn record(
        &mut self,
        section: &'static str,
        title: impl Into<String>,
        outcome: Outcome,
    ) -> bool {
        let passed = matches!(outcome, Outcome::Passed(_));
        self.checks.push(CheckResult {
            section,
            title: title.into(),
            outcome,
        });
        passed
    }
}

impl Outcome {
    /// A failure.
    pub fn failed(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Failed {
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    /// A pass that says what it saw.
    pub fn passed(detail: impl Into<String>) -> Self {
        Self::Passed(Some(detail.into()))
    }
}

/// The fix for anything `meshctl install` makes: apply it again, keeping the mesh's root.
pub(super) const REINSTALL: &str = "re-apply the install, keeping the mesh's root: meshctl install \
     --ca-cert ca.pem --ca-key ca-key.pem | kubectl apply -f - (ca.pem and ca-key.pem are the \
     keys of Secret mesh-system/mesh-ca; on a first install, plain `meshctl install | kubectl \
     apply -f -`)";

/// `call`, or an error saying it took longer than [`CALL_PATIENCE`].
pub(super) async fn bounded<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_PATIENCE, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(CallError::Kube(e)),
        Err(_) => Err(CallError::Timeout),
    }
}

/// A cluster call that failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    /// The API server answered with an error, or could not be reached.
    #[error("{}", kube_message(.0))]
    Kube(kube::Error),
    /// No answer in time.
    #[error("no answer within {CALL_PATIENCE:?}")]
    Timeout,
}

impl CallError {
    /// Whether the API server said the object does not exist.
    pub(super) fn is_not_found(&self) -> bool {
        matches!(self, Self::Kube(kube::Error::Api(status)) if status.code == 404)
    }
}

/// The API server's own message for an API error, else kube's description.
fn kube_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}
