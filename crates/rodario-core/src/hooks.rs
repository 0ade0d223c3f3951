//! Before/after hooks on actor methods, and `singular`.
//!
//! The Python library's `DecoratedMethod` wraps a method with decoration tags and lists of
//! before and after hooks. Here a method's hooks are values implementing [`Hook`], attached
//! in `#[rodario(..)]` attributes (or with [`MethodSpec::hook`](crate::actor::MethodSpec::hook)).
//! For each call, the actor runs every hook's [`Hook::before`] in the order they were
//! attached: the first that returns [`Flow::Return`], [`Flow::Decline`] or an error answers
//! the call, and neither the method nor any after hook runs. Otherwise the method runs and
//! every [`Hook::after`] sees the outcome in the same order, each free to replace it.
//!
//! [`Singular`] is such a hook: it makes exactly one member of a cluster run each call.

use std::time::{Duration, SystemTime};

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;
use serde::Serialize;

use crate::error::{RemoteError, RemoteErrorKind};
use crate::frame::{decode_value, encode_value, Outcome};
use crate::locks::{Locks, DEFAULT_LOCK_CONTEXT};
use crate::name::{ActorId, ClusterName, NodeId};
use crate::sync::unix_ms;

/// What a before hook decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on to the next hook, then the method.
    Continue,
    /// Answer with this encoded value without running the method (see [`Flow::value`]).
    Return(Vec<u8>),
    /// Answer "declined": a cluster caller counts it but does not yield it; a direct caller
    /// gets [`Error::Declined`](crate::Error::Declined).
    Decline,
}

impl Flow {
    /// Answer with `value` (encoded as the method's return value would be).
    pub fn value<T: Serialize + ?Sized>(value: &T) -> Result<Flow, RemoteError> {
        encode_value(value, "hook value")
            .map(Flow::Return)
            .map_err(|e| RemoteError::new(RemoteErrorKind::Hook, e.to_string()))
    }
}

/// What a hook knows about the call it wraps.
#[derive(Debug)]
pub struct CallContext<'a> {
    pub(crate) actor: &'a ActorId,
    pub(crate) method: &'a str,
    pub(crate) tags: &'a [&'static str],
    pub(crate) args: &'a [u8],
    pub(crate) call_id: u64,
    pub(crate) caller: &'a NodeId,
    pub(crate) cluster: Option<&'a ClusterName>,
    pub(crate) deadline_ms: u64,
    pub(crate) locks: &'a Locks,
    /// The node took this cluster call's `singular` lease when the call arrived and chose
    /// this member to run it.
    pub(crate) singular_claimed: bool,
}

impl CallContext<'_> {
    /// The actor handling the call.
    pub fn actor(&self) -> &ActorId {
        self.actor
    }

    /// The method called.
    pub fn method(&self) -> &str {
        self.method
    }

    /// The method's decoration tags.
    pub fn tags(&self) -> &[&'static str] {
        self.tags
    }

    /// Whether the method carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.contains(&tag)
    }

    /// The encoded argument tuple.
    pub fn raw_args(&self) -> &[u8] {
        self.args
    }

    /// The arguments decoded as `T` (a tuple of the method's parameter types).
    pub fn args<T: serde::de::DeserializeOwned>(&self) -> Result<T, RemoteError> {
        decode_value(self.args, "arguments")
            .map_err(|e| RemoteError::new(RemoteErrorKind::BadArguments, e.to_string()))
    }

    /// The caller's id for this call; with [`CallContext::caller`] it names the call uniquely.
    pub fn call_id(&self) -> u64 {
        self.call_id
    }

    /// The node that made the call.
    pub fn caller(&self) -> &NodeId {
        self.caller
    }

    /// The cluster channel the call came through, or `None` for a direct call.
    pub fn cluster(&self) -> Option<&ClusterName> {
        self.cluster
    }

    /// How long until the caller gives up (zero once it has).
    pub fn remaining(&self) -> Duration {
        let now = unix_ms(SystemTime::now());
        Duration::from_millis(self.deadline_ms.saturating_sub(now))
    }

    /// The node's lock store.
    pub fn locks(&self) -> &Locks {
        self.locks
    }
}

/// Code that runs before and after an actor method, on the actor's task.
///
/// Hooks see the call's encoded arguments and outcome, not the actor's state; they are for
/// concerns that cut across methods (authorisation, caching, auditing, `singular`).
#[async_trait]
pub trait Hook: Send + Sync + 'static {
    /// Runs before the method; see the [module docs](self) for what each [`Flow`] does.
    async fn before(&self, call: &CallContext<'_>) -> Result<Flow, RemoteError> {
        let _ = call;
        Ok(Flow::Continue)
    }

    /// Runs after the method with its outcome (the encoded value, or the error), and returns
    /// the outcome to send; return it unchanged to leave it be.
    async fn after(
        &self,
        call: &CallContext<'_>,
        outcome: Result<Vec<u8>, RemoteError>,
    ) -> Result<Vec<u8>, RemoteError> {
        let _ = call;
        outcome
    }
}

/// The default lease of [`Singular`]: 3 s, as in the Python library.
pub const DEFAULT_SINGULAR_EXPIRY: Duration = Duration::from_secs(3);

/// First come, first served: exactly one member of a cluster runs each cluster call of the
/// method; the others answer "declined", which a cluster caller counts but does not yield.
///
/// Each node decides for its members as soon as a cluster call arrives, before it reaches
/// any mailbox: it takes the call's lease once, hands the call to one idle member if it won
/// (a busy one only when none is idle), and answers "declined" at once for every other
/// member. So a cluster call of a singular method ends as soon as the one member has run
/// it, however busy the others are.
///
/// The first member to take the lease `{context}:{method}:{caller}.{call_id}` runs the call.
/// The lease is never released, only left to expire, and lasts at least until the caller's
/// deadline, so a member that arrives late (even after the winner has finished) still
/// finds it taken: a call runs once, unlike the Python library, whose lock a slow member
/// could take again after the winner released it. Direct calls (not through a cluster)
/// always run. Members' clocks should agree to within the call timeout.
#[derive(Clone, Debug)]
pub struct Singular {
    expiry: Duration,
    context: String,
}

impl Default for Singular {
    fn default() -> Self {
        Singular {
            expiry: DEFAULT_SINGULAR_EXPIRY,
            context: DEFAULT_LOCK_CONTEXT.to_owned(),
        }
    }
}

impl Singular {
    /// A singular hook with the defaults: context [`DEFAULT_LOCK_CONTEXT`] (`global.lock`),
    /// expiry 3 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shortest time each call's lease is kept (it is kept longer when the caller's
    /// deadline is further away).
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// The lock context (the first part of the lease's key).
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = context.into();
        self
    }
}

impl Singular {
    /// Takes the lease of cluster call `call_id` from `caller` to `method`, asking the
    /// broker for no longer than `remaining` (the caller's time left): true if this process
    /// won it, false if another member did.
    pub(crate) async fn claim(
        &self,
        locks: &Locks,
        method: &str,
        caller: &NodeId,
        call_id: u64,
        remaining: Duration,
    ) -> Result<bool, RemoteError> {
        let name = format!("{method}:{caller}.{call_id}");
        let lease = self.expiry.max(remaining + Duration::from_secs(1));
        // The lease is asked for no longer than the caller waits: a broker slow to answer
        // must not keep the actor (and its other callers) waiting past that.
        let acquired = locks
            .acquire(&name)
            .context(&self.context)
            .expiry(lease)
            .timeout(remaining)
            .await;
        match acquired {
            Ok(won) => Ok(won.is_some()),
            Err(e) => Err(RemoteError::new(
                RemoteErrorKind::Hook,
                format!("singular could not take its lease: {e}"),
            )),
        }
    }
}

#[async_trait]
impl Hook for Singular {
    async fn before(&self, call: &CallContext<'_>) -> Result<Flow, RemoteError> {
        if call.cluster().is_none() || call.singular_claimed {
            return Ok(Flow::Continue);
        }
        let won = self
            .claim(
                call.locks(),
                call.method(),
                call.caller(),
                call.call_id(),
                call.remaining(),
            )
            .await?;
        Ok(if won { Flow::Continue } else { Flow::Decline })
    }
}

/// The hooks of one method, in the order they were attached. [`HookChain::run`] runs every
/// before hook in order (the first that answers, declines or fails ends the call), then the
/// method, then every after hook in order, each free to replace the outcome. A panic
/// anywhere is caught and answered as a [`RemoteErrorKind::Panic`] error: the actor keeps
/// running.
#[derive(Clone, Default)]
pub(crate) struct HookChain {
    hooks: Vec<Arc<dyn Hook>>,
}

impl HookChain {
    pub(crate) fn push(&mut self, hook: Arc<dyn Hook>) {
        self.hooks.push(hook);
    }

    pub(crate) fn len(&self) -> usize {
        self.hooks.len()
    }

    /// Runs the chain around `method` for the call described by `context`.
    pub(crate) async fn run(
        &self,
        context: &CallContext<'_>,
        method: impl Future<Output = Result<Vec<u8>, RemoteError>>,
    ) -> Outcome {
        for hook in &self.hooks {
            match guarded("a before hook panicked: ", hook.before(context)).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Return(value)) => return Outcome::Ok(value),
                Ok(Flow::Decline) => return Outcome::Declined,
                Err(error) => return Outcome::Err(error),
            }
        }
        let mut result = guarded("", method).await;
        if result
            .as_ref()
            .is_err_and(|e| e.kind == RemoteErrorKind::Panic)
        {
            tracing::error!(actor = %context.actor(), method = context.method(), "method panicked");
        }
        for hook in &self.hooks {
            result = guarded("an after hook panicked: ", hook.after(context, result)).await;
        }
        match result {
            Ok(value) => Outcome::Ok(value),
            Err(error) => Outcome::Err(error),
        }
    }
}

/// Runs `step`, answering a panic in it as a [`RemoteErrorKind::Panic`] error whose message
/// is `prefix` and the panic's payload.
pub(crate) async fn guarded<T>(
    prefix: &str,
    step: impl Future<Output = Result<T, RemoteError>>,
) -> Result<T, RemoteError> {
    AssertUnwindSafe(step)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(RemoteError::new(
                RemoteErrorKind::Panic,
                format!("{prefix}{}", panic_message(panic)),
            ))
        })
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
