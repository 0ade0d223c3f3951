//! Proxies to one actor.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::caller::{Client, SentCall};
use super::calls::{Answer, Failure, PendingSlot, SlotGuard};
use super::pending::CallObserver;
use super::pending::Pending;
use crate::backend::{Channel, Delivery, Group, Undelivered};
use crate::error::{Error, Result};
use crate::frame::encode_value;
use crate::name::{ActorId, NodeId};
use crate::shared::{within, MAX_WAIT};
use crate::telemetry::{
    caller_outcome, caller_span, error_outcome, trace_context, ProxyMetrics, Stopwatch,
};
use tracing::Instrument;

/// A proxy type for one actor: [`ActorProxy`] itself, or the typed proxy `#[actor]`
/// generates (`GreeterProxy` for `Greeter`), which wraps one.
pub trait TypedProxy: Sized + Send + Sync + 'static {
    /// The methods this proxy calls; a proxy built from a UUID checks that the actor serves
    /// them all.
    const METHODS: &'static [&'static str];

    /// Wraps an untyped proxy.
    fn from_proxy(proxy: ActorProxy) -> Self;

    /// The untyped proxy inside.
    fn untyped(&self) -> &ActorProxy;
}

/// A proxy to one actor, calling methods by name. Cheap to clone.
///
/// Its calls go out on the actor's channel `actor:{uuid}`; replies come back on the node's
/// reply channel `proxy:{node id}`, which all of a node's proxies share (the Python library
/// opened one per proxy).
#[derive(Clone)]
pub struct ActorProxy {
    client: Arc<Client>,
    target: ActorId,
    methods: Arc<[String]>,
    /// The methods the typed proxy wrapping this one calls ([`TypedProxy::METHODS`]): a
    /// call to one of them names it without a copy.
    declared: &'static [&'static str],
    timeout: Duration,
    /// Labelled with the actor's type name, when the proxy was made knowing it.
    metrics: Arc<ProxyMetrics>,
}

impl TypedProxy for ActorProxy {
    const METHODS: &'static [&'static str] = &[];

    fn from_proxy(proxy: ActorProxy) -> Self {
        proxy
    }

    fn untyped(&self) -> &ActorProxy {
        self
    }
}

impl fmt::Debug for ActorProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorProxy")
            .field("uuid", &self.target)
            .field("methods", &self.methods)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ActorProxy {
    pub(crate) fn new(client: Arc<Client>, target: ActorId, methods: Vec<String>) -> Self {
        let timeout = client.shared().config.call_timeout;
        ActorProxy {
            client,
            target,
            methods: methods.into(),
            declared: &[],
            timeout,
            metrics: ProxyMetrics::new("unknown"),
        }
    }

    /// Names the methods `P` calls, as the untyped proxy inside a `P`.
    pub(crate) fn declared_by<P: TypedProxy>(mut self) -> Self {
        self.declared = P::METHODS;
        self
    }

    /// Labels this proxy's calls with the actor's type name.
    pub(crate) fn of_type(mut self, actor_type: &str) -> Self {
        self.metrics = ProxyMetrics::new(actor_type);
        self
    }

    /// The UUID of the actor this proxy calls.
    pub fn uuid(&self) -> &ActorId {
        &self.target
    }

    /// The id of the reply channel (the node's) that this proxy's replies come back on.
    pub fn proxy_id(&self) -> &NodeId {
        &self.client.shared().id
    }

    /// The actor's public methods, as it listed them (or as its type declares them, for a
    /// proxy made from a live actor).
    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// The deadline given to each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same proxy with another call deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls `method` with `args` (a tuple of the method's parameters: `("x",)`, `(1, 2)`, or
    /// `()` for none) and returns the pending reply once the call is published.
    ///
    /// Fails with [`Error::InvalidActor`] if no actor receives the call: at once where the
    /// broker says so when it takes the call (memory, Redis), else through the pending reply
    /// as soon as the broker reports it (NATS reports it one round trip later, and the call
    /// does not wait for that). Fails at once with
    /// [`Error::Frame`] if the arguments make a frame over the size limit, and with
    /// [`Error::Backend`] (a connection error; the call was not sent) while the backend
    /// reports its connection down. Publishing is bounded by the call's deadline too: a
    /// broker that does not take the call in time ends it with [`Error::Timeout`].
    pub async fn call<R: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Result<Pending<R>> {
        let args = encode_value(&args, "arguments")?;
        self.call_encoded(method, args).await
    }

    /// Sends a call of `method` that wants no reply (fire and forget): nothing is kept for
    /// it, and nothing comes back, not even the method's error. Returns once the broker took
    /// it.
    ///
    /// Fails with [`Error::InvalidActor`] when the broker reports that nobody received it
    /// (as for [`ActorProxy::call`]; a backend that cannot tell reports nothing), with [`Error::Frame`] over the size limit, with
    /// [`Error::Backend`] while the connection is down, and with [`Error::Timeout`] when
    /// the broker does not take it within the proxy's deadline. The actor skips a one-way
    /// call still queued when that deadline has passed.
    pub async fn tell(&self, method: &str, args: impl Serialize) -> Result<()> {
        let args = encode_value(&args, "arguments")?;
        self.tell_encoded(method, &args).await
    }

    /// Like [`ActorProxy::tell`], with the argument tuple already encoded.
    pub async fn tell_encoded(&self, method: &str, args: &[u8]) -> Result<()> {
        let client = &self.client;
        let timeout = self.timeout.min(MAX_WAIT);
        let deadline = Instant::now() + timeout;
        let channel = Channel::Actor(self.target.clone());
        let send = async {
            let delivery = client.send_one_way(&channel, method, args, timeout).await?;
            let received = match delivery {
                Delivery::Exact(n) => n > 0,
                Delivery::AtLeastOne | Delivery::Unknown => true,
            };
            if received {
                Ok(())
            } else {
                Err(Error::InvalidActor {
                    uuid: self.target.to_string(),
                })
            }
        };
        let sent = within(method, timeout, deadline, send).await;
        let outcome = caller_outcome(&sent);
        self.metrics.sent("tell", method, outcome, None);
        sent
    }

    /// Like [`ActorProxy::call`], with the argument tuple already encoded.
    pub async fn call_encoded<R: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: Vec<u8>,
    ) -> Result<Pending<R>> {
        let client = &self.client;
        let timeout = self.timeout.min(MAX_WAIT);
        let now = Instant::now();
        let deadline = now + timeout;
        if client.reply_channel_ready() {
            client.shared().check_connected()?;
        } else {
            within(method, timeout, deadline, client.prepare()).await?;
        }
        let started = Stopwatch::at(now);
        let span = caller_span(method, &self.target, client.shared().backend.name());
        let trace = trace_context(&span);
        let (tx, mut rx) = oneshot::channel();
        let send = async {
            let SentCall {
                slot,
                delivery,
                undelivered,
            } = client
                .send_call(
                    &Channel::Actor(self.target.clone()),
                    method,
                    args,
                    (timeout, deadline),
                    PendingSlot::Single(tx),
                    trace.as_deref(),
                )
                .await?;
            let received = match delivery {
                Delivery::Exact(n) => n > 0,
                Delivery::AtLeastOne => true,
                // The broker will say if nobody received it: the reply races that word.
                Delivery::Unknown if undelivered.is_some() => true,
                Delivery::Unknown => {
                    client
                        .shared()
                        .backend
                        .presence()
                        .contains(Group::Actors, self.target.as_str())
                        .await?
                }
            };
            if !received {
                return Err(Error::InvalidActor {
                    uuid: self.target.to_string(),
                });
            }
            Ok((slot, undelivered))
        };
        // The publish is bounded by the call's own slot rather than a timer of its own: the
        // deadline sweeper answers it `TimedOut`, a dropped connection answers it `Lost`,
        // and a reply that beats the publish's acknowledgement answers the call outright.
        // Wrapping moves the future; skip it when no subscriber records spans.
        let sent = if span.is_disabled() {
            tokio::select! {
                biased;
                sent = send => sent.map(Sent::Published),
                early = &mut rx => Ok(Sent::Answered(early)),
            }
        } else {
            tokio::select! {
                biased;
                sent = send.instrument(span.clone()) => sent.map(Sent::Published),
                early = &mut rx => Ok(Sent::Answered(early)),
            }
        };
        let observer = CallObserver::new(span, started, &self.metrics);
        let name = match self.declared.iter().find(|declared| **declared == method) {
            Some(declared) => Cow::Borrowed(*declared),
            None => Cow::Owned(method.to_owned()),
        };
        let called = (name, self.target.clone());
        let error = match sent {
            Ok(Sent::Published((slot, undelivered))) => {
                return Ok(
                    Pending::new(rx, Some(slot), timeout, called, observer).watching(undelivered)
                )
            }
            Ok(Sent::Answered(Ok(Ok(reply)))) => {
                return Ok(Pending::answered(reply, timeout, called, observer))
            }
            Ok(Sent::Answered(Ok(Err(Failure::TimedOut)))) => Error::Timeout {
                method: method.to_owned(),
                after: timeout,
            },
            Ok(Sent::Answered(Ok(Err(Failure::Lost(error))))) => error,
            Ok(Sent::Answered(Err(_))) => Error::Closed("the node was shut down"),
            Err(error) => error,
        };
        if let Some(observer) = observer {
            observer.finish(method, error_outcome(&error));
        }
        Err(error)
    }
}

/// How a call's publish ended: published (its slot now waits for the reply), or answered
/// through its slot first.
enum Sent {
    Published((SlotGuard, Option<Undelivered>)),
    Answered(std::result::Result<std::result::Result<Answer, Failure>, oneshot::error::RecvError>),
}
