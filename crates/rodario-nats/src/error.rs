//! Mapping async-nats errors, and the connection's own failures, into rodario's
//! [`BackendError`], with a kind a caller can act on.

use std::time::Duration;

use async_nats::ConnectErrorKind;
use rodario_core::error::{BackendError, BackendErrorKind};

use crate::NAME;

pub(crate) fn error(kind: BackendErrorKind, message: impl Into<String>) -> BackendError {
    BackendError::new(NAME, kind, message)
}

pub(crate) fn not_connected() -> BackendError {
    error(
        BackendErrorKind::Connection,
        "not connected to the NATS server (the client is reconnecting in the background)",
    )
}

pub(crate) fn dropped(what: &str) -> BackendError {
    error(
        BackendErrorKind::Connection,
        format!(
            "the connection to the NATS server dropped while {what} waited for its answer \
             (the client is reconnecting in the background)"
        ),
    )
}

pub(crate) fn timed_out(what: &str, after: Duration) -> BackendError {
    error(
        BackendErrorKind::Connection,
        format!("{what} got no answer from the NATS server within {after:?}"),
    )
}

pub(crate) fn publish_error(err: async_nats::PublishError) -> BackendError {
    use async_nats::client::PublishErrorKind;
    let kind = match err.kind() {
        PublishErrorKind::MaxPayloadExceeded => BackendErrorKind::InvalidInput,
        PublishErrorKind::InvalidSubject => BackendErrorKind::InvalidInput,
        PublishErrorKind::Send => BackendErrorKind::Connection,
    };
    let message = match err.kind() {
        PublishErrorKind::MaxPayloadExceeded => {
            "the frame is larger than the NATS server's max_payload".to_owned()
        }
        _ => format!("publishing failed: {err}"),
    };
    error(kind, message).with_source(err)
}

pub(crate) fn connect_error(err: async_nats::ConnectError, servers: &str) -> BackendError {
    let (kind, message) = match err.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => (
            BackendErrorKind::Auth,
            format!("the NATS server at {servers} refused the credentials ({err})"),
        ),
        ConnectErrorKind::ServerParse => (
            BackendErrorKind::InvalidInput,
            format!("invalid NATS server address {servers}: {err}"),
        ),
        ConnectErrorKind::Tls => (
            BackendErrorKind::Connection,
            format!("TLS with the NATS server at {servers} failed: {err}"),
        ),
        _ => (
            BackendErrorKind::Connection,
            format!("cannot connect to the NATS server at {servers}: {err}"),
        ),
    };
    error(kind, message).with_source(err)
}

pub(crate) fn kv_error(
    what: &str,
    err: impl std::error::Error + Send + Sync + 'static,
) -> BackendError {
    error(
        BackendErrorKind::Connection,
        format!("NATS KV {what} failed: {err}"),
    )
    .with_source(err)
}

pub(crate) fn open_error(
    bucket: &str,
    err: impl std::error::Error + Send + Sync + 'static,
) -> BackendError {
    error(
        BackendErrorKind::Connection,
        format!(
            "cannot open the NATS KV bucket {bucket:?} (is JetStream enabled, `nats-server -js`?): {err}"
        ),
    )
    .with_source(err)
}
