//! Bounded waiting for conditions that become true asynchronously, so tests never sleep and
//! hope.

use std::future::Future;
use std::time::Duration;

/// What a check given to [`eventually`] returns: the value it waits for, or that it is not
/// there yet, and why when the check can say (shown if the patience runs out).
pub trait Progress {
    /// What the wait returns.
    type Value;
    /// The value, or the reason there is none yet.
    fn into_result(self) -> Result<Self::Value, Option<String>>;
}

impl<T> Progress for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: std::fmt::Display> Progress for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(e.to_string()))
    }
}

/// Polls `check` every 20 ms until it returns `Some` or `Ok`, for at most `patience`; then
/// panics naming `what` and the last error.
pub async fn eventually<F, Fut>(
    what: &str,
    patience: Duration,
    mut check: F,
) -> <Fut::Output as Progress>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Progress,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let why = match check().await.into_result() {
            Ok(value) => return value,
            Err(why) => why,
        };
        if tokio::time::Instant::now() >= deadline {
            match why {
                Some(why) => panic!("timed out after {patience:?} waiting for {what}: {why}"),
                None => panic!("timed out after {patience:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
