//! What a node's two legs share: its id, backend, settings, connection state and shutdown
//! signal, and the bounds every broker operation runs under.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::{Backend, Channel, ConnectionState, Delivery, Undelivered};
use crate::error::{BackendError, BackendErrorKind, Error, Result};
use crate::frame::{encode_frame, Frame, DEFAULT_MAX_FRAME};
use crate::name::NodeId;
use crate::sync::unix_ms;

/// The default deadline of a call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The default liveness TTL: a process that stops renewing its registrations for this long
/// (because it crashed) loses them. Renewals run every third of it.
pub const DEFAULT_LIVENESS_TTL: Duration = Duration::from_secs(10);

/// The longest call deadline or liveness TTL a node uses; longer ones (say `Duration::MAX`
/// for "no deadline") are cut to it rather than overflowing the clock.
pub const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The default number of calls an actor may have queued before new ones are shed.
pub const DEFAULT_MAILBOX: usize = 1024;

/// A node's settings (see `NodeBuilder`).
#[derive(Clone, Debug)]
pub(crate) struct NodeConfig {
    pub(crate) call_timeout: Duration,
    pub(crate) liveness_ttl: Duration,
    pub(crate) max_frame: usize,
    pub(crate) mailbox: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            call_timeout: DEFAULT_CALL_TIMEOUT,
            liveness_ttl: DEFAULT_LIVENESS_TTL,
            max_frame: DEFAULT_MAX_FRAME,
            mailbox: DEFAULT_MAILBOX,
        }
    }
}

/// The part of a node both legs hold.
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) backend: Backend,
    pub(crate) config: NodeConfig,
    /// The backend's connection state, when it reports one: calls made while it is down
    /// fail at once instead of waiting on a connection that is not there.
    connection: Option<watch::Receiver<ConnectionState>>,
    /// Whether calls to one actor go through the backend's own `publish_call`.
    reports_undelivered: bool,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new(backend: Backend, mut config: NodeConfig) -> Self {
        if let Some(broker_limit) = backend.transport().max_payload() {
            config.max_frame = config.max_frame.min(broker_limit);
        }
        Shared {
            id: NodeId::generate(),
            connection: backend.transport().connection_state(),
            reports_undelivered: backend.transport().reports_undelivered(),
            backend,
            config,
            shutdown: watch::Sender::new(false),
        }
    }

    /// The wall-clock deadline, in Unix milliseconds, of a call made now with `timeout`.
    pub(crate) fn deadline_ms(&self, timeout: Duration) -> u64 {
        unix_ms(SystemTime::now() + timeout.min(MAX_WAIT))
    }

    /// Whether a call with this wall-clock deadline has been given up by its caller.
    pub(crate) fn caller_gave_up(&self, deadline_ms: u64) -> bool {
        unix_ms(SystemTime::now()) > deadline_ms
    }

    /// A fresh view of the backend's connection state, when it reports one.
    pub(crate) fn connection_state(&self) -> Option<watch::Receiver<ConnectionState>> {
        self.connection.clone()
    }

    /// Fails at once when the backend reports its connection down: a call published now
    /// would wait on a connection that is not there, so it is not sent at all (and is safe
    /// to retry once the backend has reconnected).
    pub(crate) fn check_connected(&self) -> Result<()> {
        match &self.connection {
            Some(state) if *state.borrow() == ConnectionState::Disconnected => {
                Err(Error::Backend(BackendError::new(
                    self.backend.name(),
                    BackendErrorKind::Connection,
                    "not connected to the broker (the backend is reconnecting): \
                     the call was not sent; retry once the connection is back",
                )))
            }
            _ => Ok(()),
        }
    }

    /// Runs a presence `operation` with the node's call timeout; past it, fails with a
    /// connection error naming `what`.
    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        operation: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        broker_within(
            self.backend.name(),
            what,
            self.config.call_timeout,
            operation,
        )
        .await
    }

    /// A receiver that sees `true` once the node shuts down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Tells the node's background tasks to end.
    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn encode(&self, frame: &Frame) -> Result<Bytes> {
        encode_frame(frame, self.config.max_frame)
    }

    /// Publishes `frame` on `channel`: at once where the backend can, else through its
    /// async publish.
    pub(crate) async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery> {
        let transport = self.backend.transport();
        match transport.try_publish(channel, frame) {
            Ok(published) => Ok(published?),
            Err(frame) => Ok(transport.publish(channel, frame).await?),
        }
    }

    /// Publishes a call to one actor (see [`Transport::publish_call`]), with a plain
    /// publish where the backend has no `publish_call` of its own.
    ///
    /// [`Transport::publish_call`]: crate::backend::Transport::publish_call
    pub(crate) async fn publish_call(
        &self,
        channel: &Channel,
        frame: Bytes,
    ) -> Result<(Delivery, Option<Undelivered>)> {
        if self.reports_undelivered {
            Ok(self
                .backend
                .transport()
                .publish_call(channel, frame)
                .await?)
        } else {
            Ok((self.publish(channel, frame).await?, None))
        }
    }
}

/// Runs a call's `operation` until `deadline` (`timeout` after it started); past it, fails
/// with [`Error::Timeout`] naming `what`. Dropping the operation there is safe: every step
/// of a call cleans up after itself when dropped (its pending slot, a half-made
/// subscription).
pub(crate) async fn within<T>(
    what: &str,
    timeout: Duration,
    deadline: Instant,
    operation: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut operation = pin!(operation);
    if let Poll::Ready(result) = poll_once(operation.as_mut()).await {
        return result;
    }
    match tokio::time::timeout_at(deadline, operation).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            method: what.to_owned(),
            after: timeout,
        }),
    }
}

/// Runs a broker `operation` (a presence or lease operation, not a call) for at most
/// `timeout`; past it, fails with a [`BackendErrorKind::Connection`] error naming `what`.
pub(crate) async fn broker_within<T>(
    backend: &'static str,
    what: &str,
    timeout: Duration,
    operation: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut operation = pin!(operation);
    if let Poll::Ready(result) = poll_once(operation.as_mut()).await {
        return result;
    }
    let timeout = timeout.min(MAX_WAIT);
    match tokio::time::timeout(timeout, operation).await {
        Ok(result) => result,
        Err(_) => Err(Error::Backend(BackendError::new(
            backend,
            BackendErrorKind::Connection,
            format!(
                "{what}: no answer from the broker within {timeout:?} (it may or may not \
                 have been done)"
            ),
        ))),
    }
}

/// Polls `future` once: its output if it finished at once (an in-memory backend, a publish
/// that only had to be queued), else `Pending`, to be awaited under a bound. Operations
/// that finish at once so never set up a timer.
pub(crate) async fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    let mut future = future;
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// The next connection state, or never when the backend cannot tell (or stopped telling).
pub(crate) async fn connection_change(
    connection: &mut Option<watch::Receiver<ConnectionState>>,
) -> Option<ConnectionState> {
    match connection {
        Some(receiver) => match receiver.changed().await {
            Ok(()) => Some(*receiver.borrow_and_update()),
            Err(_) => {
                *connection = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}
