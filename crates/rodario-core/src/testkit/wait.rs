//! Polling until something holds, for tests that wait on a server or a reconnect.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long the helpers pause between two attempts.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Whether `check` holds within `within`: it is tried at once, then every
/// [`POLL_INTERVAL`] until it holds or the time is up (it is always tried at least once).
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The value of the first successful `attempt`, retried every [`POLL_INTERVAL`]; panics
/// naming `what` and the last error if none succeeds within `within`.
pub async fn until_ok<T, E, F, Fut>(within: Duration, what: &str, mut attempt: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => assert!(
                Instant::now() < deadline,
                "{what} still failing after {within:?}: {e}"
            ),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
