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

/// The counters of one running actor's methods, by each method's index among its type's
/// descriptions.
pub(crate) struct ActorCounters {
    methods: Box<[MethodCounters]>,
    /// The last error message of each method that failed, by index: apart from the counters,
    /// since most methods of most actors never fail and an idle actor's memory counts.
    last_errors: Mutex<Vec<(usize, String)>>,
}

/// The counters of one method of one running actor.
#[derive(Default)]
struct MethodCounters {
    calls: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
}

impl ActorCounters {
    /// Zeroed counters for an actor of `methods` methods.
    pub(crate) fn new(methods: usize) -> Self {
        ActorCounters {
            methods: (0..methods).map(|_| MethodCounters::default()).collect(),
            last_errors: Mutex::new(Vec::new()),
        }
    }

    /// Counts a handled call of method `method` that took `elapsed`, failed with `error` if
    /// any.
    pub(crate) fn record(&self, method: usize, elapsed: Duration, error: Option<&str>) {
        let Some(counters) = self.methods.get(method) else {
            return;
        };
        counters.calls.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        counters.nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(message) = error {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            let mut last_errors = locked(&self.last_errors);
            match last_errors.iter_mut().find(|(index, _)| *index == method) {
                Some((_, last)) => message.clone_into(last),
                None => last_errors.push((method, message.to_owned())),
            }
        }
    }

    /// How method `method`, described by `info`, was used.
    pub(crate) fn snapshot(&self, method: usize, info: &MethodInfo) -> MethodUse {
        let load = |pick: fn(&MethodCounters) -> &AtomicU64| {
            self.methods
                .get(method)
                .map_or(0, |counters| pick(counters).load(Ordering::Relaxed))
        };
        MethodUse {
            info: info.clone(),
            calls: load(|counters| &counters.calls),
            errors: load(|counters| &counters.errors),
            processing: Duration::from_nanos(load(|counters| &counters.nanos)),
            last_error: locked(&self.last_errors)
                .iter()
                .find(|(index, _)| *index == method)
                .map(|(_, message)| message.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> MethodInfo {
        MethodInfo {
            name: name.to_owned(),
            params: Vec::new(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn each_method_keeps_its_own_counts_and_last_error() {
        let counters = ActorCounters::new(3);
        counters.record(0, Duration::from_millis(2), None);
        counters.record(1, Duration::from_millis(1), Some("first"));
        counters.record(2, Duration::from_millis(1), Some("other"));
        counters.record(1, Duration::from_millis(3), Some("second"));
        let add = counters.snapshot(0, &info("add"));
        assert_eq!((add.calls, add.errors, add.last_error), (1, 0, None));
        assert_eq!(add.processing, Duration::from_millis(2));
        let fail = counters.snapshot(1, &info("fail"));
        assert_eq!((fail.calls, fail.errors), (2, 2));
        assert_eq!(fail.last_error.as_deref(), Some("second"));
        assert_eq!(fail.processing, Duration::from_millis(4));
        let other = counters.snapshot(2, &info("other"));
        assert_eq!(other.last_error.as_deref(), Some("other"));
    }

    #[test]
    fn a_method_index_out_of_range_counts_nothing() {
        let counters = ActorCounters::new(1);
        counters.record(5, Duration::from_millis(1), Some("lost"));
        let used = counters.snapshot(5, &info("ghost"));
        assert_eq!((used.calls, used.errors, used.last_error), (0, 0, None));
        assert_eq!(counters.snapshot(0, &info("only")).calls, 0);
    }
}
