//! Locks as leases in the broker: the Python library's `acquire_lock`, with tokens.

use std::fmt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::backend::{LockKey, LockStore};
use crate::error::{Error, Result};
use crate::hooks::DEFAULT_LOCK_CONTEXT;

/// The default lease length of [`Locks::acquire`].
pub const DEFAULT_LOCK_EXPIRY: Duration = Duration::from_secs(3);

/// A node's handle on the broker's leases.
///
/// ```
/// # async fn demo(node: rodario_core::Node) -> rodario_core::Result<()> {
/// use std::time::Duration;
/// if let Some(lease) = node.locks().acquire("nightly-report").expiry(Duration::from_secs(30)).await? {
///     // ... only one process at a time gets here ...
///     lease.release().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Locks {
    store: Arc<dyn LockStore>,
}

impl Locks {
    pub(crate) fn new(store: Arc<dyn LockStore>) -> Self {
        Locks { store }
    }

    /// Starts a request for the lease `name` in context `global.lock` for 3 s; set
    /// [`LockRequest::context`] and [`LockRequest::expiry`], then `.await` it. It resolves to
    /// `Some(lease)` if this caller took it, `None` if another holds it.
    pub fn acquire(&self, name: &str) -> LockRequest {
        LockRequest {
            store: self.store.clone(),
            key: LockKey {
                context: DEFAULT_LOCK_CONTEXT.to_owned(),
                name: name.to_owned(),
            },
            expiry: DEFAULT_LOCK_EXPIRY,
        }
    }
}

impl fmt::Debug for Locks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locks").finish_non_exhaustive()
    }
}

/// A pending lease request; `.await` it.
#[must_use = "a lock request does nothing until awaited"]
pub struct LockRequest {
    store: Arc<dyn LockStore>,
    key: LockKey,
    expiry: Duration,
}

impl LockRequest {
    /// The lease's context (default `global.lock`); the broker key is `{context}:{name}`.
    pub fn context(mut self, context: &str) -> Self {
        self.key.context = context.to_owned();
        self
    }

    /// How long the lease lasts unless renewed or released (default 3 s).
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }
}

impl IntoFuture for LockRequest {
    type Output = Result<Option<Lease>>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            if self.expiry.is_zero() {
                return Err(Error::InvalidName {
                    what: "lock expiry",
                    name: self.key.default_name(),
                    reason: "a lease must last longer than zero".to_owned(),
                });
            }
            let token = uuid::Uuid::new_v4().simple().to_string();
            let won = self.store.acquire(&self.key, &token, self.expiry).await?;
            Ok(won.then(|| Lease {
                store: self.store,
                key: self.key,
                token,
            }))
        })
    }
}

/// A held lease. Only its holder can release or renew it.
///
/// Dropping a lease does not release it (that would need the broker): it lapses at its
/// expiry. Call [`Lease::release`] to free it at once.
#[must_use = "a lease is held until released or expired"]
pub struct Lease {
    store: Arc<dyn LockStore>,
    key: LockKey,
    token: String,
}

impl Lease {
    /// The lease's key.
    pub fn key(&self) -> &LockKey {
        &self.key
    }

    /// The holder's token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Extends the lease to `expiry` from now; `false` if it had already expired and was lost.
    pub async fn renew(&self, expiry: Duration) -> Result<bool> {
        Ok(self.store.renew(&self.key, &self.token, expiry).await?)
    }

    /// Releases the lease; `false` if it had already expired (and may be someone else's).
    pub async fn release(self) -> Result<bool> {
        Ok(self.store.release(&self.key, &self.token).await?)
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
