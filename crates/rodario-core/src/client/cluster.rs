//! Cluster proxies: one call broadcast to every actor on a channel, replies gathered.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::caller::{Client, SentCall};
use super::calls::{Answer, GatherEvent, PendingSlot, SlotGuard};
use crate::backend::{Channel, Delivery, Group};
use crate::error::{Error, Result};
use crate::frame::{decode_value, encode_value, Outcome};
use crate::name::ClusterName;
use crate::shared::{within, MAX_WAIT};
use crate::telemetry::{call_sent, caller_outcome, caller_span, trace_context};
use tracing::Instrument;

/// A cluster proxy type: [`ClusterProxy`] itself, or the typed one `#[actor]` generates
/// (`GreeterCluster` for `Greeter`).
pub trait TypedCluster: Sized + Send + Sync + 'static {
    /// Wraps an untyped cluster proxy.
    fn from_cluster(cluster: ClusterProxy) -> Self;

    /// The untyped cluster proxy inside.
    fn untyped(&self) -> &ClusterProxy;
}

/// Broadcasts calls to the actors that joined a channel (`cluster:{channel}`) and gathers
/// their replies. Make one with [`Node::cluster`](crate::Node::cluster).
#[derive(Clone)]
pub struct ClusterProxy {
    client: Arc<Client>,
    channel: ClusterName,
    timeout: Duration,
}

impl TypedCluster for ClusterProxy {
    fn from_cluster(cluster: ClusterProxy) -> Self {
        cluster
    }

    fn untyped(&self) -> &ClusterProxy {
        self
    }
}

impl fmt::Debug for ClusterProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterProxy")
            .field("channel", &self.channel)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClusterProxy {
    /// A cluster proxy for `channel` (refused with [`Error::InvalidName`] when invalid).
    pub(crate) fn new(client: Arc<Client>, channel: &str) -> Result<Self> {
        let channel = ClusterName::new(channel)?;
        let timeout = client.shared().config.call_timeout;
        Ok(ClusterProxy {
            client,
            channel,
            timeout,
        })
    }

    /// The cluster channel.
    pub fn channel(&self) -> &ClusterName {
        &self.channel
    }

    /// The same proxy with another deadline for gathering each call's replies.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Broadcasts a call of `method` with `args` (a tuple) to every member of the channel.
    ///
    /// Fails at once with [`Error::EmptyCluster`] when nobody has joined the channel, and
    /// with [`Error::Backend`] (a connection error; the call was not sent) while the backend
    /// reports its connection down. Publishing and counting the members are bounded by the
    /// call's deadline: past it, the call ends with [`Error::Timeout`].
    pub async fn call<R: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Result<Gather<R>> {
        let args = encode_value(&args, "arguments")?;
        self.call_encoded(method, args).await
    }

    /// Broadcasts a call of `method` that wants no reply (fire and forget) to the channel's
    /// members: nothing is kept for it and nothing comes back. A `singular` method still runs
    /// on exactly one member. Returns once the broker took it.
    ///
    /// Fails with [`Error::EmptyCluster`] when the broker reports that nobody received it
    /// (Redis counts receivers; on NATS, where core publishes count nothing, a call to an
    /// empty channel is not detected), and otherwise as [`ClusterProxy::call`] does.
    pub async fn tell(&self, method: &str, args: impl Serialize) -> Result<()> {
        let args = encode_value(&args, "arguments")?;
        self.tell_encoded(method, &args).await
    }

    /// Like [`ClusterProxy::tell`], with the argument tuple already encoded.
    pub async fn tell_encoded(&self, method: &str, args: &[u8]) -> Result<()> {
        let client = &self.client;
        let timeout = self.timeout.min(MAX_WAIT);
        let deadline = Instant::now() + timeout;
        let channel = Channel::Cluster(self.channel.clone());
        let send = async {
            match client.send_one_way(&channel, method, args, timeout).await? {
                Delivery::Exact(0) => Err(self.empty()),
                _ => Ok(()),
            }
        };
        let sent = within(method, timeout, deadline, send).await;
        call_sent(
            "cluster_tell",
            "unknown",
            method,
            caller_outcome(&sent),
            None,
        );
        sent
    }

    /// Like [`ClusterProxy::call`], with the argument tuple already encoded.
    pub async fn call_encoded<R: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: Vec<u8>,
    ) -> Result<Gather<R>> {
        let client = &self.client;
        let timeout = self.timeout.min(MAX_WAIT);
        let deadline = Instant::now() + timeout;
        // Unbounded: at most one expect frame per node and one reply per member arrive.
        let (tx, rx) = mpsc::unbounded_channel();
        let span = caller_span(
            method,
            &Channel::Cluster(self.channel.clone()),
            client.shared().backend.name(),
        );
        let trace = trace_context(&span);
        let send = async {
            client.prepare().await?;
            let SentCall { slot, delivery, .. } = client
                .send_call(
                    &Channel::Cluster(self.channel.clone()),
                    method,
                    args,
                    (timeout, deadline),
                    PendingSlot::Gather(tx),
                    trace.as_deref(),
                )
                .await?;
            let nodes = match delivery {
                Delivery::Exact(n) => n,
                Delivery::AtLeastOne | Delivery::Unknown => client
                    .shared()
                    .backend
                    .presence()
                    .members(Group::Members(&self.channel))
                    .await?
                    .len(),
            };
            Ok((slot, nodes))
        };
        let sent = within(method, timeout, deadline, send)
            .instrument(span.clone())
            .await
            .and_then(|(slot, nodes)| match nodes {
                0 => Err(self.empty()),
                _ => Ok((slot, nodes)),
            });
        let (slot, nodes) = match sent {
            Ok(sent) => sent,
            Err(error) => {
                let outcome = caller_outcome::<()>(&Err(error.clone()));
                span.record("outcome", outcome);
                call_sent("cluster", "unknown", method, outcome, None);
                return Err(error);
            }
        };
        span.record("outcome", "ok");
        call_sent("cluster", "unknown", method, "ok", None);
        Ok(Gather {
            events: rx,
            _slot: slot,
            nodes,
            acks: 0,
            expected: 0,
            answered: 0,
            declined: 0,
            early: VecDeque::new(),
            timeout,
            finished: false,
            method: method.into(),
            channel: self.channel.clone(),
            _span: span,
            _value: PhantomData,
        })
    }

    fn empty(&self) -> Error {
        Error::EmptyCluster {
            channel: self.channel.to_string(),
        }
    }
}

/// The replies to one cluster call: the Python library's cluster `Future`, as a [`Stream`].
///
/// It first learns how many replies to expect ([`Gather::expected`]): every node that got
/// the call says how many of its actors did. Then it yields each reply as it arrives
/// (`Ok(value)`, or `Err` for a member that failed), skipping members that declined a
/// `singular` call (counted in [`Gather::declined`]). At the deadline it yields one
/// [`Error::Timeout`] and ends.
#[must_use = "streams do nothing unless polled"]
pub struct Gather<T> {
    events: mpsc::UnboundedReceiver<GatherEvent>,
    _slot: SlotGuard,
    nodes: usize,
    acks: usize,
    expected: usize,
    answered: usize,
    declined: usize,
    early: VecDeque<Answer>,
    timeout: Duration,
    finished: bool,
    method: Box<str>,
    channel: ClusterName,
    /// The call's `rodario.call` span, open while the replies are gathered.
    _span: tracing::Span,
    _value: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Gather<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gather")
            .field("method", &self.method)
            .field("channel", &self.channel)
            .field("expected", &self.expected)
            .field("answered", &self.answered)
            .field("declined", &self.declined)
            .finish()
    }
}

impl<T: DeserializeOwned + Send + 'static> Gather<T> {
    /// How many replies to expect (declines included): waits until every node that got the
    /// call has said how many of its actors did. Fails with [`Error::EmptyCluster`] if none
    /// did, or [`Error::Timeout`] at the deadline.
    ///
    /// For a `singular` method the count is the same (every member answers), but each node
    /// answers "declined" at once for the members that do not run the call, so the gather
    /// ends as soon as the one member that runs it has answered.
    pub async fn expected(&mut self) -> Result<usize> {
        while self.acks < self.nodes {
            match self.events.recv().await {
                Some(GatherEvent::TimedOut) => {
                    self.finished = true;
                    return Err(self.timeout_error());
                }
                Some(GatherEvent::Expect(count)) => self.count(count),
                Some(GatherEvent::Reply(reply)) => self.early.push_back(reply),
                Some(GatherEvent::Failed(error)) => {
                    self.finished = true;
                    return Err(error);
                }
                None => return Err(Error::Closed("the node was shut down")),
            }
        }
        if self.expected == 0 {
            return Err(Error::EmptyCluster {
                channel: self.channel.to_string(),
            });
        }
        Ok(self.expected)
    }

    /// How many members declined the call so far (another member ran a `singular` call).
    pub fn declined(&self) -> usize {
        self.declined
    }

    /// How many members have answered so far, declines included.
    pub fn answered(&self) -> usize {
        self.answered
    }

    /// Waits for every reply and returns the values; fails on the first member error, or
    /// with [`Error::Timeout`] if some member has not answered by the deadline.
    pub async fn all(mut self) -> Result<Vec<T>> {
        let mut values = Vec::new();
        while let Some(value) = self.next().await {
            values.push(value?);
        }
        Ok(values)
    }

    fn count(&mut self, count: u32) {
        self.acks += 1;
        self.expected += count as usize;
    }

    fn timeout_error(&self) -> Error {
        Error::Timeout {
            method: self.method.to_string(),
            after: self.timeout,
        }
    }

    fn done(&self) -> bool {
        self.acks >= self.nodes && self.answered >= self.expected
    }

    /// Counts a reply; `None` for a decline, which is not yielded.
    fn take(&mut self, reply: Answer) -> Option<Result<T>> {
        self.answered += 1;
        let reply = match reply {
            Answer::Value(value) => {
                return Some(decode_value(value.value(), "return value").map_err(Error::from))
            }
            Answer::Reply(reply) => reply,
        };
        match reply.outcome {
            Outcome::Ok(bytes) => Some(decode_value(&bytes, "return value").map_err(Error::from)),
            Outcome::Err(error) => Some(Err(error.into_error(&self.method, &reply.from))),
            Outcome::Declined => {
                self.declined += 1;
                None
            }
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> Stream for Gather<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if let Some(reply) = this.early.pop_front() {
                match this.take(reply) {
                    Some(item) => return Poll::Ready(Some(item)),
                    None => continue,
                }
            }
            if this.done() {
                this.finished = true;
                if this.expected == 0 {
                    return Poll::Ready(Some(Err(Error::EmptyCluster {
                        channel: this.channel.to_string(),
                    })));
                }
                return Poll::Ready(None);
            }
            match this.events.poll_recv(cx) {
                Poll::Ready(Some(GatherEvent::Expect(count))) => this.count(count),
                Poll::Ready(Some(GatherEvent::Reply(reply))) => {
                    if let Some(item) = this.take(reply) {
                        return Poll::Ready(Some(item));
                    }
                }
                Poll::Ready(Some(GatherEvent::Failed(error))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(Some(GatherEvent::TimedOut)) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(this.timeout_error())));
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(Error::Closed("the node was shut down"))));
                }
                // The node's deadline sweeper sends `TimedOut` when the deadline passes.
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
