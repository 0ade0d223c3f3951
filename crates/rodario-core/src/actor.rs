//! Actors: the [`Actor`] trait (written for you by `#[rodario::actor]`), starting and
//! stopping them, and the loop that handles their calls one at a time.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use bytes::Bytes;

use crate::backend::{Channel, FrameSink, Subscription};
use crate::cluster::TypedCluster;
use crate::error::{quote_name, Error, RemoteError, RemoteErrorKind, Result};
use crate::frame::{encode_value, Call, Outcome};
use crate::hooks::{CallContext, Flow, Hook, Singular};
use crate::name::{ActorId, ClusterName, NodeId};
use crate::node::{decode_call, lock, ClusterHandler, ClusterMember, Node, NodeInner, Outbox};
use crate::proxy::{ActorProxy, TypedProxy};

/// The method a proxy built from a UUID calls to learn the actor's public methods, as the
/// Python library's proxies do. Names starting with `__` are reserved.
pub const METHODS_METHOD: &str = "__methods__";

/// An actor: state plus public methods that other processes call through proxies.
///
/// Write the methods in an `impl` block marked `#[rodario::actor]`; the attribute
/// implements this trait and generates a typed proxy (`{Type}Proxy`) and a typed cluster
/// proxy (`{Type}Cluster`) with the same methods. Implementing it by hand is possible (see
/// [`MethodSpec`] and [`Actor::dispatch`]) but rarely needed.
pub trait Actor: Send + 'static {
    /// The typed proxy for this actor.
    type Proxy: TypedProxy;
    /// The typed cluster proxy for actors of this type.
    type Cluster: TypedCluster;

    /// The public methods, with their tags and hooks. Called once when the actor starts.
    fn methods() -> Vec<MethodSpec>;

    /// Runs `method` with the encoded argument tuple `args` and returns the encoded result.
    fn dispatch<'a>(
        &'a mut self,
        method: &'a str,
        args: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, RemoteError>>;
}

/// A public method: its name, decoration tags and hooks.
#[derive(Clone)]
pub struct MethodSpec {
    name: &'static str,
    tags: Vec<&'static str>,
    hooks: Vec<Arc<dyn Hook>>,
}

impl MethodSpec {
    /// A method named `name` with no tags or hooks.
    pub fn new(name: &'static str) -> Self {
        MethodSpec {
            name,
            tags: Vec::new(),
            hooks: Vec::new(),
        }
    }

    /// Adds a decoration tag.
    pub fn tag(mut self, tag: &'static str) -> Self {
        if !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
        self
    }

    /// Appends a hook; hooks run in the order they were added.
    pub fn hook(mut self, hook: impl Hook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Makes the method singular (see [`Singular`]) and tags it `singular`.
    pub fn singular(self, singular: Singular) -> Self {
        self.tag("singular").hook(singular)
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The method's tags.
    pub fn tags(&self) -> &[&'static str] {
        &self.tags
    }
}

impl fmt::Debug for MethodSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodSpec")
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

/// A public method as an actor describes it to a proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodInfo {
    /// The method's name.
    pub name: String,
    /// Its decoration tags.
    pub tags: Vec<String>,
}

/// A call queued for an actor.
pub(crate) struct Envelope {
    pub(crate) call: Arc<Call>,
    pub(crate) reply_to: NodeId,
    pub(crate) via: Via,
}

/// How a call reached the actor.
pub(crate) enum Via {
    Direct,
    Cluster {
        channel: ClusterName,
        handler: Option<Arc<dyn ClusterHandler>>,
    },
}

/// An actor ready to start; made by [`Node::spawn`].
#[must_use = "an actor does nothing until started"]
pub struct ActorBuilder<A: Actor> {
    node: Node,
    actor: A,
    uuid: Option<String>,
}

impl<A: Actor> ActorBuilder<A> {
    pub(crate) fn new(node: Node, actor: A) -> Self {
        ActorBuilder {
            node,
            actor,
            uuid: None,
        }
    }

    /// Gives the actor this UUID (any valid name) instead of a random v4 UUID.
    pub fn uuid(mut self, uuid: impl Into<String>) -> Self {
        self.uuid = Some(uuid.into());
        self
    }

    /// Registers the actor, subscribes it to its channel and starts handling calls.
    ///
    /// Fails with [`Error::UuidInUse`] if a live actor holds the UUID, with
    /// [`Error::InvalidName`] if the UUID is not valid, and with [`Error::Registration`] or
    /// [`Error::Backend`] if the broker fails.
    pub async fn start(self) -> Result<ActorHandle<A>> {
        let id = match self.uuid {
            Some(uuid) => ActorId::new(uuid)?,
            None => ActorId::generate(),
        };
        let node = self.node.inner.clone();
        node.register_actor(&id).await?;
        let (mailbox, inbox) = mpsc::channel(node.config.mailbox);
        let sink = Arc::new(ActorSink {
            node: Arc::downgrade(&node),
            id: id.clone(),
            mailbox: mailbox.clone(),
            last_caller: Mutex::new(None),
        });
        let subscription = match node
            .backend
            .transport()
            .subscribe(&Channel::Actor(id.clone()), sink)
            .await
        {
            Ok(subscription) => subscription,
            Err(e) => {
                let _ = node.unregister_actor(&id, false).await;
                return Err(e.into());
            }
        };
        let methods: HashMap<&'static str, MethodSpec> =
            A::methods().into_iter().map(|m| (m.name, m)).collect();
        let (stop, stopped) = watch::channel(false);
        let alive = Arc::new(AtomicBool::new(true));
        let worker = tokio::spawn(run_worker(
            Worker {
                actor: self.actor,
                id: id.clone(),
                methods,
                node: node.clone(),
            },
            inbox,
            stopped,
            alive.clone(),
        ));
        let shared = Arc::new(ActorShared {
            id,
            node: node.clone(),
            mailbox,
            stop,
            alive,
            joined: Mutex::new(Vec::new()),
            running: tokio::sync::Mutex::new(Some((subscription, worker))),
        });
        node.track_actor(shared.clone());
        Ok(ActorHandle {
            shared,
            _actor: PhantomData,
        })
    }
}

/// What a node keeps about a running actor, whatever its type.
pub(crate) struct ActorShared {
    pub(crate) id: ActorId,
    node: Arc<NodeInner>,
    mailbox: mpsc::Sender<Envelope>,
    stop: watch::Sender<bool>,
    alive: Arc<AtomicBool>,
    joined: Mutex<Vec<ClusterName>>,
    /// The actor's subscription and worker task, until it stops.
    running: tokio::sync::Mutex<Option<(Subscription, JoinHandle<()>)>>,
}

impl ActorShared {
    /// Unregisters, parts every channel, stops reading, and waits for the call being handled
    /// (if any) to finish; calls still queued are answered "stopped".
    pub(crate) async fn stop(&self) {
        let Some((subscription, worker)) = self.running.lock().await.take() else {
            return;
        };
        if let Err(e) = self.node.unregister_actor(&self.id, false).await {
            tracing::warn!(actor = %self.id, error = %e, "could not unregister a stopping actor");
        }
        let joined: Vec<ClusterName> = std::mem::take(&mut *lock(&self.joined));
        for channel in joined {
            if let Err(e) = self.node.part_cluster(&channel, &self.id).await {
                tracing::warn!(actor = %self.id, %channel, error = %e, "could not part a channel");
            }
        }
        subscription.close().await;
        let _ = self.stop.send(true);
        // An actor stopping itself from one of its own methods must not wait for that
        // method to end: the worker ends right after it.
        if tokio::task::try_id() != Some(worker.id()) {
            let _ = worker.await;
        }
        self.node.untrack_actor(&self.id);
    }

    /// Ends the actor's tasks at once, leaving its registrations to expire.
    #[cfg(feature = "testkit")]
    pub(crate) fn abort(&self) {
        if let Ok(mut running) = self.running.try_lock() {
            if let Some((subscription, worker)) = running.take() {
                drop(subscription);
                worker.abort();
            }
        }
        self.alive.store(false, Ordering::Release);
    }
}

/// A running actor: its UUID, liveness, cluster membership, and proxies to it.
///
/// Dropping the handle does not stop the actor (as a dropped `JoinHandle` does not stop a
/// task): it runs until [`ActorHandle::stop`] or [`Node::shutdown`].
pub struct ActorHandle<A: Actor> {
    shared: Arc<ActorShared>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle {
            shared: self.shared.clone(),
            _actor: PhantomData,
        }
    }
}

impl<A: Actor> fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorHandle")
            .field("uuid", &self.shared.id)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl<A: Actor> ActorHandle<A> {
    /// The actor's UUID.
    pub fn uuid(&self) -> &ActorId {
        &self.shared.id
    }

    /// Whether the actor is still handling calls.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    /// A typed proxy to this actor; no round trip, the methods are known here.
    pub fn proxy(&self) -> A::Proxy {
        let names = A::methods().iter().map(|m| m.name.to_owned()).collect();
        A::Proxy::from_proxy(ActorProxy::new(
            Node {
                inner: self.shared.node.clone(),
            },
            self.shared.id.clone(),
            names,
        ))
    }

    /// Joins the cluster `channel`: its calls are dispatched to this actor's methods.
    pub async fn join(&self, channel: &str) -> Result<()> {
        self.join_cluster(channel, None).await
    }

    /// Joins the cluster `channel` with a custom handler for its calls instead of the
    /// actor's methods (the Python library's `join(channel, func)`). The handler runs on the
    /// actor's task, one call at a time with the actor's other calls.
    pub async fn join_with(&self, channel: &str, handler: impl ClusterHandler) -> Result<()> {
        self.join_cluster(channel, Some(Arc::new(handler))).await
    }

    async fn join_cluster(
        &self,
        channel: &str,
        handler: Option<Arc<dyn ClusterHandler>>,
    ) -> Result<()> {
        if !self.is_alive() {
            return Err(Error::Closed("the actor was stopped"));
        }
        let channel = ClusterName::new(channel)?;
        let member = ClusterMember {
            actor: self.shared.id.clone(),
            mailbox: self.shared.mailbox.clone(),
            handler,
        };
        self.shared.node.join_cluster(&channel, member).await?;
        let mut joined = lock(&self.shared.joined);
        if !joined.contains(&channel) {
            joined.push(channel);
        }
        Ok(())
    }

    /// Leaves the cluster `channel`; returns whether the actor had joined it.
    pub async fn part(&self, channel: &str) -> Result<bool> {
        let channel = ClusterName::new(channel)?;
        lock(&self.shared.joined).retain(|c| c != &channel);
        self.shared
            .node
            .part_cluster(&channel, &self.shared.id)
            .await
    }

    /// Stops the actor: unregisters it, parts its channels, lets the call being handled
    /// finish, and answers queued calls with "stopped" (callers see
    /// [`Error::InvalidActor`]). Stopping a stopped actor does nothing.
    pub async fn stop(&self) {
        self.shared.stop().await;
    }
}

/// Queues the calls on an actor's own channel in its mailbox as the backend reads them,
/// shedding them with an "overloaded" reply when the mailbox is full, so the broker never
/// sees a slow subscriber.
struct ActorSink {
    node: std::sync::Weak<NodeInner>,
    id: ActorId,
    mailbox: mpsc::Sender<Envelope>,
    last_caller: Mutex<Option<NodeId>>,
}

impl FrameSink for ActorSink {
    fn deliver(&self, bytes: Bytes) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        let decoded = decode_call(&node, &bytes, &self.id, &mut lock(&self.last_caller));
        let Some((call, reply_to)) = decoded else {
            return;
        };
        let envelope = Envelope {
            call: Arc::new(call),
            reply_to,
            via: Via::Direct,
        };
        if let Err(mpsc::error::TrySendError::Full(envelope)) = self.mailbox.try_send(envelope) {
            tracing::warn!(actor = %self.id, "mailbox full: shedding a call");
            // A sink must not wait, so the refusal is sent from a task of its own.
            let id = self.id.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        let error = RemoteError::new(RemoteErrorKind::Overloaded, "mailbox full");
                        node.reply(
                            &envelope.reply_to,
                            envelope.call.id,
                            &id,
                            Outcome::Err(error),
                        )
                        .await;
                    });
                }
                Err(_) => tracing::warn!(actor = %id, "no runtime to send the refusal from"),
            }
        }
    }
}

struct Worker<A> {
    actor: A,
    id: ActorId,
    methods: HashMap<&'static str, MethodSpec>,
    node: Arc<NodeInner>,
}

/// Marks the actor dead when the worker ends, however it ends.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn run_worker<A: Actor>(
    mut worker: Worker<A>,
    mut inbox: mpsc::Receiver<Envelope>,
    mut stop: watch::Receiver<bool>,
    alive: Arc<AtomicBool>,
) {
    let _alive = AliveGuard(alive);
    let mut outbox = Outbox::new();
    let stopped = stop.wait_for(|stop| *stop);
    tokio::pin!(stopped);
    loop {
        let envelope = tokio::select! {
            biased;
            _ = &mut stopped => break,
            () = outbox.progress(), if outbox.is_busy() => continue,
            next = inbox.recv() => match next {
                Some(envelope) => envelope,
                None => break,
            },
        };
        if let Some(reply) = worker.handle(envelope).await {
            outbox.send(reply).await;
        }
    }
    inbox.close();
    while let Ok(envelope) = inbox.try_recv() {
        let error = RemoteError::new(RemoteErrorKind::Stopped, "the actor stopped");
        let reply = worker.node.reply_later(
            envelope.reply_to,
            envelope.call.id,
            worker.id.clone(),
            Outcome::Err(error),
        );
        outbox.send(reply).await;
    }
    outbox.flush().await;
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "the method panicked".to_owned()
    }
}

impl<A: Actor> Worker<A> {
    /// Runs one call; returns the publish of its reply (none for a call whose caller gave up).
    async fn handle(&mut self, envelope: Envelope) -> Option<BoxFuture<'static, ()>> {
        let Envelope {
            call,
            reply_to,
            via,
        } = envelope;
        if self.node.deadline_ms(std::time::Duration::ZERO) > call.deadline_ms {
            tracing::debug!(actor = %self.id, call = call.id, "skipped a call whose caller gave up");
            return None;
        }
        let outcome = match via {
            Via::Cluster {
                handler: Some(handler),
                ..
            } => {
                let handled = AssertUnwindSafe(handler.handle(&call.method, &call.args))
                    .catch_unwind()
                    .await;
                match handled {
                    Ok(Ok(value)) => Outcome::Ok(value),
                    Ok(Err(error)) => Outcome::Err(error),
                    Err(panic) => Outcome::Err(RemoteError::new(
                        RemoteErrorKind::Panic,
                        panic_message(panic),
                    )),
                }
            }
            Via::Cluster { channel, .. } => self.run_method(&call, &reply_to, Some(&channel)).await,
            Via::Direct => self.run_method(&call, &reply_to, None).await,
        };
        Some(
            self.node
                .reply_later(reply_to, call.id, self.id.clone(), outcome),
        )
    }

    async fn run_method(
        &mut self,
        call: &Call,
        caller: &NodeId,
        cluster: Option<&ClusterName>,
    ) -> Outcome {
        if call.method == METHODS_METHOD {
            let infos: Vec<MethodInfo> = self
                .methods
                .values()
                .map(|m| MethodInfo {
                    name: m.name.to_owned(),
                    tags: m.tags.iter().map(|t| (*t).to_owned()).collect(),
                })
                .collect();
            return match encode_value(&infos, "method list") {
                Ok(bytes) => Outcome::Ok(bytes),
                Err(e) => Outcome::Err(RemoteError::new(RemoteErrorKind::Handler, e.to_string())),
            };
        }
        let Worker {
            actor,
            id,
            methods,
            node,
        } = self;
        let Some(spec) = methods.get(call.method.as_str()) else {
            return Outcome::Err(RemoteError::new(
                RemoteErrorKind::UnknownMethod,
                format!("no method named {}", quote_name(&call.method)),
            ));
        };
        let context = CallContext {
            actor: id,
            method: &call.method,
            tags: &spec.tags,
            args: &call.args,
            call_id: call.id,
            caller,
            cluster,
            deadline_ms: call.deadline_ms,
            locks: &node.locks,
        };
        for hook in &spec.hooks {
            let decided = AssertUnwindSafe(hook.before(&context)).catch_unwind().await;
            match decided {
                Ok(Ok(Flow::Continue)) => {}
                Ok(Ok(Flow::Return(value))) => return Outcome::Ok(value),
                Ok(Ok(Flow::Decline)) => return Outcome::Declined,
                Ok(Err(error)) => return Outcome::Err(error),
                Err(panic) => {
                    return Outcome::Err(RemoteError::new(
                        RemoteErrorKind::Panic,
                        format!("a before hook panicked: {}", panic_message(panic)),
                    ))
                }
            }
        }
        let ran = AssertUnwindSafe(actor.dispatch(&call.method, &call.args))
            .catch_unwind()
            .await;
        let mut result = ran.unwrap_or_else(|panic| {
            tracing::error!(actor = %id, method = %call.method, "method panicked");
            Err(RemoteError::new(
                RemoteErrorKind::Panic,
                panic_message(panic),
            ))
        });
        for hook in &spec.hooks {
            result = AssertUnwindSafe(hook.after(&context, result))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(RemoteError::new(
                        RemoteErrorKind::Panic,
                        format!("an after hook panicked: {}", panic_message(panic)),
                    ))
                });
        }
        match result {
            Ok(value) => Outcome::Ok(value),
            Err(error) => Outcome::Err(error),
        }
    }
}
