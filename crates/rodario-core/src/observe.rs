//! What a node tells about the actors it runs: their methods and how each is used.
//!
//! [`Node::local_actors`](crate::Node::local_actors) reads it in-process. A backend that
//! can answer the broker's own discovery requests (NATS's service API, so that `nats micro
//! ls` and `nats micro stats` show a rodario deployment) implements [`Discovery`] and is
//! bundled with it ([`Backend::with_discovery`](crate::backend::Backend::with_discovery));
//! each node on that backend then serves its [`Directory`] until it shuts down.
//!
//! Counting costs each handled call two clock reads and two relaxed atomic additions (about
//! 150 instructions); a failed one adds a third and a short lock to keep its message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::actor::MethodInfo;
use crate::backend::Subscription;
use crate::error::BackendError;
use crate::sync::locked;

/// An actor this node runs, with its methods' use since it started.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LocalActor {
    /// The actor's UUID.
    pub uuid: String,
    /// Its type name ([`Actor::type_name`](crate::Actor::type_name)).
    pub type_name: String,
    /// Its public methods.
    pub methods: Vec<MethodUse>,
}

/// A public method of a running actor, and how it was used since the actor started.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MethodUse {
    /// The method as discovery describes it.
    pub info: MethodInfo,
    /// Calls handled (direct and cluster), whatever their outcome.
    pub calls: u64,
    /// Calls that ended in an error (the method's, a hook's, bad arguments, a panic).
    pub errors: u64,
    /// Time spent handling them, hooks included.
    pub processing: Duration,
    /// The last error's message, if any.
    pub last_error: Option<String>,
}

/// A node's answer to "what runs here": what a [`Discovery`] backend serves.
pub trait Directory: Send + Sync + 'static {
    /// The node's id (its reply channel's `proxyid`).
    fn node_id(&self) -> &str;

    /// The actors the node runs now, with their methods' use.
    fn actors(&self) -> Vec<LocalActor>;
}

/// A backend's part that answers the broker's discovery requests about a node.
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// Answers discovery requests from `directory` until the returned subscription is closed
    /// or dropped. A node calls it once, when it is built, and keeps the subscription until
    /// it shuts down.
    async fn serve(&self, directory: Arc<dyn Directory>) -> Result<Subscription, BackendError>;
}

/// The counters of one method of one running actor.
#[derive(Default)]
pub(crate) struct MethodCounters {
    calls: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl MethodCounters {
    /// Counts a handled call that took `elapsed`, failed with `error` if any.
    pub(crate) fn record(&self, elapsed: Duration, error: Option<&str>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(message) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            *locked(&self.last_error) = Some(message.to_owned());
        }
    }

    pub(crate) fn snapshot(&self, info: &MethodInfo) -> MethodUse {
        MethodUse {
            info: info.clone(),
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            processing: Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
            last_error: locked(&self.last_error).clone(),
        }
    }
}
