//! The reply to one call: [`Pending`], the Python library's `Future`.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tracing::Span;

use super::calls::{Answer, Failure, SlotGuard};
use crate::backend::Undelivered;
use crate::error::{Error, Result};
use crate::frame::{decode_value, Outcome};
use crate::name::ActorId;
use crate::telemetry::{caller_outcome, ProxyMetrics, Stopwatch};

/// The reply to a published call: the Python library's `Future`.
///
/// Check it without waiting with [`Pending::ready`], wait a bounded time with
/// [`Pending::get`], or `.await` it (it is a [`Future`]) to wait until the call's deadline. Pending replies
/// resolve independently: await them in any order. Dropping one abandons the reply.
#[must_use = "the reply is lost unless awaited"]
pub struct Pending<T> {
    reply: oneshot::Receiver<Result<Answer, Failure>>,
    resolved: Option<Result<Answer, Failure>>,
    /// The broker's later word that nobody received the call, raced against the reply.
    undelivered: Option<Undelivered>,
    slot: Option<SlotGuard>,
    timeout: Duration,
    /// The method's name: borrowed where the proxy's type declares it, so most calls copy
    /// no name.
    method: Cow<'static, str>,
    target: ActorId,
    /// The call's span and metric labels until it ends, if anything records them.
    observer: Option<Box<CallObserver>>,
    _value: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("method", &self.method)
            .field("uuid", &self.target)
            .field("resolved", &self.resolved.is_some())
            .finish()
    }
}

impl<T> Pending<T> {
    pub(crate) fn new(
        reply: oneshot::Receiver<Result<Answer, Failure>>,
        slot: Option<SlotGuard>,
        timeout: Duration,
        (method, target): (Cow<'static, str>, ActorId),
        observer: Option<Box<CallObserver>>,
    ) -> Self {
        Pending {
            reply,
            resolved: None,
            undelivered: None,
            slot,
            timeout,
            method,
            target,
            observer,
            _value: PhantomData,
        }
    }

    /// Fails the call with [`Error::InvalidActor`] if `undelivered` resolves first.
    pub(crate) fn watching(mut self, undelivered: Option<Undelivered>) -> Self {
        self.undelivered = undelivered;
        self
    }

    /// Whether the broker said nobody received the call; polls its watch, if any.
    fn poll_undelivered(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(undelivered) = &mut self.undelivered else {
            return false;
        };
        if Pin::new(undelivered).poll(cx).is_pending() {
            return false;
        }
        self.undelivered = None;
        true
    }

    /// The reply channel gave its one answer (or closed): the call's slot is gone already.
    fn settled(&mut self) {
        if let Some(slot) = &mut self.slot {
            slot.answered();
        }
    }

    fn invalid_actor(&self) -> Failure {
        Failure::Lost(Error::InvalidActor {
            uuid: self.target.to_string(),
        })
    }

    /// A call whose reply came before its publish was acknowledged.
    pub(crate) fn answered(
        reply: Answer,
        timeout: Duration,
        (method, target): (Cow<'static, str>, ActorId),
        observer: Option<Box<CallObserver>>,
    ) -> Self {
        let (_, closed) = oneshot::channel();
        let mut pending = Self::new(closed, None, timeout, (method, target), observer);
        pending.resolved = Some(Ok(reply));
        pending
    }
}

impl<T: DeserializeOwned> Pending<T> {
    /// Whether the reply has arrived (or the call has failed), without waiting.
    pub fn ready(&mut self) -> bool {
        if self.resolved.is_some() {
            return true;
        }
        match self.reply.try_recv() {
            Ok(reply) => {
                self.settled();
                self.resolved = Some(reply);
            }
            Err(oneshot::error::TryRecvError::Empty) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                if !self.poll_undelivered(&mut cx) {
                    return false;
                }
                self.resolved = Some(Err(self.invalid_actor()));
            }
            Err(oneshot::error::TryRecvError::Closed) => {
                self.settled();
                self.resolved = Some(Err(Failure::Lost(Error::Closed("the node was shut down"))));
            }
        }
        true
    }

    /// Waits up to `timeout` (and never past the call's deadline) for the value.
    pub async fn get(self, timeout: Duration) -> Result<T> {
        let method = self.method.clone();
        match tokio::time::timeout(timeout, self).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                method: method.into(),
                after: timeout,
            }),
        }
    }

    fn timeout_error(&self, after: Duration) -> Error {
        Error::Timeout {
            method: self.method.to_string(),
            after,
        }
    }

    fn value(&self, reply: Result<Answer, Failure>) -> Result<T> {
        let value = self.decode(reply);
        if let Some(observer) = &self.observer {
            observer.finish(&self.method, caller_outcome(&value));
        }
        value
    }

    fn decode(&self, reply: Result<Answer, Failure>) -> Result<T> {
        let reply = match reply {
            Ok(Answer::Value(value)) => return Ok(decode_value(value.value(), "return value")?),
            Ok(Answer::Reply(reply)) => reply,
            Err(Failure::TimedOut) => return Err(self.timeout_error(self.timeout)),
            Err(Failure::Lost(error)) => return Err(error),
        };
        match reply.outcome {
            Outcome::Ok(bytes) => Ok(decode_value(&bytes, "return value")?),
            Outcome::Err(error) => Err(error.into_error(&self.method, self.target.as_str())),
            Outcome::Declined => Err(Error::Declined {
                method: self.method.to_string(),
            }),
        }
    }
}

/// What a direct call reports when it ends: its `rodario.call` span (kept open until then)
/// and its metrics.
pub(crate) struct CallObserver {
    span: tracing::Span,
    started: Stopwatch,
    metrics: Arc<ProxyMetrics>,
}

impl CallObserver {
    /// The observer of a call made in `span`; none when nothing would record what it reports
    /// (the span is disabled and metrics are compiled out), so such calls allocate nothing
    /// for it.
    pub(crate) fn new(
        span: Span,
        started: Stopwatch,
        metrics: &Arc<ProxyMetrics>,
    ) -> Option<Box<Self>> {
        if span.is_disabled() && !cfg!(feature = "metrics") {
            return None;
        }
        Some(Box::new(CallObserver {
            span,
            started,
            metrics: metrics.clone(),
        }))
    }

    pub(crate) fn finish(&self, method: &str, outcome: &'static str) {
        self.span.record("outcome", outcome);
        self.metrics
            .sent("actor", method, outcome, Some(self.started));
    }
}

/// Awaiting a pending reply waits until the call's deadline.
impl<T: DeserializeOwned> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if let Some(resolved) = this.resolved.take() {
            return Poll::Ready(this.value(resolved));
        }
        // The node's deadline sweeper answers `TimedOut` when the deadline passes.
        match Pin::new(&mut this.reply).poll(cx) {
            Poll::Ready(Ok(reply)) => {
                this.settled();
                Poll::Ready(this.value(reply))
            }
            Poll::Ready(Err(_)) => {
                this.settled();
                Poll::Ready(Err(Error::Closed("the node was shut down")))
            }
            Poll::Pending if this.poll_undelivered(cx) => {
                let failure = this.invalid_actor();
                Poll::Ready(this.value(Err(failure)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
