//! Mapping redis-rs errors into rodario's [`BackendError`], with a kind a caller can act on.

use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use rodario_core::error::{BackendError, BackendErrorKind};

use crate::NAME;

/// The [`BackendErrorKind`] of a redis-rs error.
pub(crate) fn classify(error: &RedisError) -> BackendErrorKind {
    match error.kind() {
        ErrorKind::AuthenticationFailed => BackendErrorKind::Auth,
        ErrorKind::Server(ServerErrorKind::NoPerm) => BackendErrorKind::Auth,
        // No node of a cluster answers (for the slot, or at all).
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => BackendErrorKind::Connection,
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown,
        ) => BackendErrorKind::Connection,
        ErrorKind::InvalidClientConfig => BackendErrorKind::InvalidInput,
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType | ErrorKind::RESP3NotSupported => {
            BackendErrorKind::Protocol
        }
        _ => match error.code() {
            Some("NOAUTH" | "WRONGPASS" | "NOPERM") => BackendErrorKind::Auth,
            _ if error.is_connection_dropped() || error.is_timeout() => {
                BackendErrorKind::Connection
            }
            _ => BackendErrorKind::Other,
        },
    }
}

/// `error`, which happened while doing `what` against the server at `addr`.
pub(crate) fn from_redis(what: &str, addr: &str, error: RedisError) -> BackendError {
    let kind = classify(&error);
    let hint = match kind {
        BackendErrorKind::Auth => {
            " (check the user and password in the URL: redis://user:password@host:port)"
        }
        BackendErrorKind::Connection => " (is the server running and reachable?)",
        _ => "",
    };
    BackendError::new(
        NAME,
        kind,
        format!("{what} on {addr} failed: {error}{hint}"),
    )
    .with_source(error)
}

/// No answer to `what` from `addr` within `after`: the server is down or unreachable, and
/// the backend is still trying to reconnect.
pub(crate) fn timed_out(what: &str, addr: &str, after: Duration) -> BackendError {
    BackendError::new(
        NAME,
        BackendErrorKind::Connection,
        format!(
            "{what} on {addr}: no answer within {after:?} (server down or unreachable; \
             the backend keeps reconnecting)"
        ),
    )
}

/// The server answered `what` with a reply of an unexpected shape.
pub(crate) fn unexpected(what: &str, addr: &str, reply: &redis::Value) -> BackendError {
    BackendError::new(
        NAME,
        BackendErrorKind::Protocol,
        format!("{what} on {addr}: unexpected reply {reply:?}"),
    )
}
