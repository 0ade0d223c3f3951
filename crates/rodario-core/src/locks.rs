//! Locks as leases in the broker: the Python library's `acquire_lock`, with tokens.

use std::fmt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::backend::{LockKey, LockStore};
use crate::error::{Error, Result};
use crate::shared::broker_within;

/// The default lock context, as in the Python library: lock keys are `{context}:{name}`.
pub const DEFAULT_LOCK_CONTEXT: &str = "global.lock";

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
    backend: &'static str,
    timeout: Duration,
}

impl Locks {
    pub(crate) fn new(store: Arc<dyn LockStore>, backend: &'static str, timeout: Duration) -> Self {
        Locks {
            store,
            backend,
            timeout,
        }
    }

    /// Starts a request for the lease `name` in context `global.lock` for 3 s; set
    /// [`LockRequest::context`] and [`LockRequest::expiry`], then `.await` it. It resolves to
    /// `Some(lease)` if this caller took it, `None` if another holds it.
    ///
    /// Every lease operation is bounded by the node's call timeout (set another with
    /// [`LockRequest::timeout`]): a broker that does not answer in time ends it with a
    /// connection error ([`Error::Backend`]). After a timed-out acquire the lease may or may not have been
    /// taken; if it was, nobody holds its token and it lapses at its expiry.
    pub fn acquire(&self, name: &str) -> LockRequest {
        LockRequest {
            store: self.store.clone(),
            backend: self.backend,
            timeout: self.timeout,
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

/// Refuses a zero `expiry` for the lease `key`: a lease that ends as it starts protects
/// nothing (backends refuse it too, see [`LockStore`]).
fn check_expiry(key: &LockKey, expiry: Duration) -> Result<()> {
    if expiry.is_zero() {
        return Err(Error::InvalidName {
            what: "lock expiry",
            name: key.default_name(),
            reason: "a lease must last longer than zero".to_owned(),
        });
    }
    Ok(())
}

/// A pending lease request; `.await` it. A zero expiry is refused with
/// [`Error::InvalidName`].
#[must_use = "a lock request does nothing until awaited"]
pub struct LockRequest {
    store: Arc<dyn LockStore>,
    backend: &'static str,
    timeout: Duration,
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

    /// How long to wait for the broker's answer (default: the node's call timeout); the
    /// lease's later renewals and release get the same bound.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl IntoFuture for LockRequest {
    type Output = Result<Option<Lease>>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            check_expiry(&self.key, self.expiry)?;
            let token = uuid::Uuid::new_v4().simple().to_string();
            let acquire = async { Ok(self.store.acquire(&self.key, &token, self.expiry).await?) };
            let won =
                broker_within(self.backend, "acquiring a lease", self.timeout, acquire).await?;
            Ok(won.then(|| Lease {
                store: self.store,
                backend: self.backend,
                timeout: self.timeout,
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
    backend: &'static str,
    timeout: Duration,
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
    /// A zero `expiry` is refused with [`Error::InvalidName`], as [`LockRequest`] refuses
    /// it, and leaves the lease as it was (release it to end it now).
    pub async fn renew(&self, expiry: Duration) -> Result<bool> {
        check_expiry(&self.key, expiry)?;
        let renew = async { Ok(self.store.renew(&self.key, &self.token, expiry).await?) };
        broker_within(self.backend, "renewing a lease", self.timeout, renew).await
    }

    /// Releases the lease; `false` if it had already expired (and may be someone else's).
    pub async fn release(self) -> Result<bool> {
        let release = async { Ok(self.store.release(&self.key, &self.token).await?) };
        broker_within(self.backend, "releasing a lease", self.timeout, release).await
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::error::BackendError;

    /// Grants every lease and counts the calls that reach it.
    #[derive(Default)]
    struct Granting(AtomicUsize);

    #[async_trait]
    impl LockStore for Granting {
        async fn acquire(&self, _: &LockKey, _: &str, _: Duration) -> Result<bool, BackendError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(true)
        }

        async fn release(&self, _: &LockKey, _: &str) -> Result<bool, BackendError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(true)
        }

        async fn renew(&self, _: &LockKey, _: &str, _: Duration) -> Result<bool, BackendError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(true)
        }
    }

    #[tokio::test]
    async fn zero_expiry_is_refused_on_acquire_and_renew() {
        let store = Arc::new(Granting::default());
        let locks = Locks::new(store.clone(), "stub", Duration::from_secs(1));
        let zero = locks.acquire("job").expiry(Duration::ZERO).await;
        assert!(
            matches!(
                zero,
                Err(Error::InvalidName {
                    what: "lock expiry",
                    ..
                })
            ),
            "{zero:?}"
        );
        assert_eq!(store.0.load(Ordering::SeqCst), 0);
        let lease = locks.acquire("job").await.unwrap().unwrap();
        let renewed = lease.renew(Duration::ZERO).await;
        assert!(
            matches!(
                renewed,
                Err(Error::InvalidName {
                    what: "lock expiry",
                    ..
                })
            ),
            "{renewed:?}"
        );
        assert_eq!(store.0.load(Ordering::SeqCst), 1, "the store was asked");
        assert!(lease.renew(Duration::from_secs(1)).await.unwrap());
    }
}
