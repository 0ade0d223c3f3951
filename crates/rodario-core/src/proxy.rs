//! Proxies to one actor, and the pending replies their calls return.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::backend::{Channel, Delivery, Group};
use crate::error::{Error, Result};
use crate::frame::{decode_value, encode_call, encode_value, Outcome, Reply};
use crate::name::ActorId;
use crate::node::{within, Failure, Node, NodeInner, PendingSlot, MAX_WAIT};

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
    node: Node,
    target: ActorId,
    methods: Arc<[String]>,
    timeout: Duration,
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
    pub(crate) fn new(node: Node, target: ActorId, methods: Vec<String>) -> Self {
        let timeout = node.call_timeout();
        ActorProxy {
            node,
            target,
            methods: methods.into(),
            timeout,
        }
    }

    /// The UUID of the actor this proxy calls.
    pub fn uuid(&self) -> &ActorId {
        &self.target
    }

    /// The id of the reply channel (the node's) that this proxy's replies come back on.
    pub fn proxy_id(&self) -> &crate::name::NodeId {
        self.node.id()
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
    /// Fails at once with [`Error::InvalidActor`] if no actor receives the call, with
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

    /// Like [`ActorProxy::call`], with the argument tuple already encoded.
    pub async fn call_encoded<R: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: Vec<u8>,
    ) -> Result<Pending<R>> {
        let node = &self.node.inner;
        let timeout = self.timeout.min(MAX_WAIT);
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let send = async {
            let SentCall {
                registration,
                delivery,
            } = node
                .send_call(
                    &Channel::Actor(self.target.clone()),
                    method,
                    args,
                    (timeout, deadline),
                    PendingSlot::Single(tx),
                )
                .await?;
            let received = match delivery {
                Delivery::Exact(n) => n > 0,
                Delivery::AtLeastOne => true,
                Delivery::Unknown => {
                    node.backend
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
            Ok(registration)
        };
        let registration = within(method, timeout, deadline, send).await?;
        Ok(Pending {
            reply: rx,
            resolved: None,
            _registration: registration,
            timeout,
            method: method.into(),
            target: self.target.clone(),
            _value: PhantomData,
        })
    }
}

/// Removes a call's reply slot when its pending reply is dropped.
pub(crate) struct PendingRegistration {
    pub(crate) node: Arc<NodeInner>,
    pub(crate) id: u64,
}

/// A call that was published: its reply slot, and what the broker knows of its receivers.
pub(crate) struct SentCall {
    pub(crate) registration: PendingRegistration,
    pub(crate) delivery: Delivery,
}

impl NodeInner {
    /// Publishes a call of `method` on `channel`, its replies going to `slot` until the
    /// deadline (`timeout` from now, at `deadline`). The caller bounds this by the same
    /// deadline.
    pub(crate) async fn send_call(
        self: &Arc<Self>,
        channel: &Channel,
        method: &str,
        args: Vec<u8>,
        (timeout, deadline): (Duration, Instant),
        slot: PendingSlot,
    ) -> Result<SentCall> {
        self.check_connected()?;
        self.ensure_reply_channel().await?;
        let id = self.next_call_id();
        let frame = encode_call(
            id,
            self.id.as_str(),
            method,
            &args,
            self.deadline_ms(timeout),
            self.config.max_frame,
        )?;
        self.add_pending(id, slot, deadline);
        // Registered before publishing: a reply can arrive before `publish` returns, and a
        // failed (or abandoned) publish removes the slot again when this is dropped.
        let registration = PendingRegistration {
            node: self.clone(),
            id,
        };
        let delivery = self.publish(channel, frame).await?;
        Ok(SentCall {
            registration,
            delivery,
        })
    }
}

impl Drop for PendingRegistration {
    fn drop(&mut self) {
        self.node.remove_pending(self.id);
    }
}

/// The reply to a published call: the Python library's `Future`.
///
/// Check it without waiting with [`Pending::ready`], wait a bounded time with
/// [`Pending::get`], or `.await` it (it is a [`Future`]) to wait until the call's deadline. Pending replies
/// resolve independently: await them in any order. Dropping one abandons the reply.
#[must_use = "the reply is lost unless awaited"]
pub struct Pending<T> {
    reply: oneshot::Receiver<Result<Reply, Failure>>,
    resolved: Option<Result<Reply, Failure>>,
    _registration: PendingRegistration,
    timeout: Duration,
    method: Box<str>,
    target: ActorId,
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

impl<T: DeserializeOwned> Pending<T> {
    /// Whether the reply has arrived (or the call has failed), without waiting.
    pub fn ready(&mut self) -> bool {
        if self.resolved.is_some() {
            return true;
        }
        match self.reply.try_recv() {
            Ok(reply) => self.resolved = Some(reply),
            Err(oneshot::error::TryRecvError::Empty) => return false,
            Err(oneshot::error::TryRecvError::Closed) => {
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

    fn value(&self, reply: Result<Reply, Failure>) -> Result<T> {
        let reply = match reply {
            Ok(reply) => reply,
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
            Poll::Ready(Ok(reply)) => Poll::Ready(this.value(reply)),
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::Closed("the node was shut down"))),
            Poll::Pending => Poll::Pending,
        }
    }
}
