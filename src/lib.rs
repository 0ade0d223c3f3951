//! # rodario
//!
//! Actors that live in many processes and are reached through a broker you already run:
//! Redis (the reference backend), NATS, or memory (one process, for unit tests). A Rust
//! take on the Python library of the same name.
//!
//! An actor gets a UUID and registers itself; anyone with a proxy calls its methods and
//! gets a pending reply; a cluster proxy broadcasts one call to every actor on a channel
//! and gathers the replies; `singular` methods run on exactly one member; locks are leases
//! in the broker.
//!
//! ```
//! use rodario::prelude::*;
//! use std::time::Duration;
//!
//! struct Greeter {
//!     name: String,
//! }
//!
//! #[rodario::actor]
//! impl Greeter {
//!     pub async fn greeting(&mut self, prefix: String) -> String {
//!         format!("Hello! My name is {prefix} {}", self.name)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> rodario::Result<()> {
//! let node = Node::memory();
//! let _actor = node.spawn(Greeter { name: "Rodario".into() }).uuid("rodario").start().await?;
//! let proxy: GreeterProxy = node.registry().get_proxy("rodario").await?;
//! let first = proxy.greeting("The Elegant".into()).await?; // sent; the reply is pending
//! let second = proxy.greeting("The Great".into()).await?;
//! assert_eq!(second.get(Duration::from_secs(1)).await?, "Hello! My name is The Great Rodario");
//! assert_eq!(first.await?, "Hello! My name is The Elegant Rodario");
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `memory` | yes | [`memory::MemoryBroker`] and `Node::memory()`: no server needed |
//! | `redis` | no | `rodario::redis` (the `rodario-redis` crate) and `Node::redis(url)`, on one server or a Redis Cluster (`redis+cluster://`) |
//! | `redis-tls` | no | `rediss://` (and `rediss+cluster://`) URLs for Redis |
//! | `nats` | no | `rodario::nats` (the `rodario-nats` crate) and `Node::nats(url)` |
//! | `testkit` | no | `rodario::testkit`: the fault-injecting backend wrapper `testkit::faults::Faults`, the conformance suite, and `Node::simulate_crash` (for a dev-dependency) |
//!
//! [`connect`] picks the backend from a URL's scheme, for programs that take the broker
//! from their configuration.
//!
//! Everything else is re-exported from [`rodario_core`]; backend authors start at
//! [`backend`].

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use rodario_core::*;

/// The in-process backend (feature `memory`).
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory {
    pub use rodario_memory::*;
}

/// The Redis backend (feature `redis`).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis {
    pub use rodario_redis::*;
}

/// The NATS backend (feature `nats`).
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats {
    pub use rodario_nats::*;
}

use rodario_core::backend::Backend;
use rodario_core::error::{BackendError, BackendErrorKind};

/// Opens a backend connection chosen by the URL's scheme:
///
/// | scheme | backend | feature |
/// |---|---|---|
/// | `memory:` | a fresh private in-memory broker | `memory` |
/// | `redis://`, `rediss://` | Redis | `redis` (`redis-tls` for `rediss`) |
/// | `redis+cluster://host:port,host:port,..`, `rediss+cluster://..` | Redis Cluster, through those seed nodes | `redis` (`redis-tls` for `rediss+cluster`) |
/// | `nats://`, `tls://` (comma-separated for several servers) | NATS, prefix `rodario` | `nats` |
///
/// Fails with a [`BackendErrorKind::InvalidInput`] error naming the feature to enable when
/// the scheme's backend is not compiled in, and with the backend's own errors (refused,
/// authentication) when it cannot connect.
pub async fn connect(url: &str) -> Result<Backend> {
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    match scheme {
        "memory" => {
            #[cfg(feature = "memory")]
            return Ok(memory::MemoryBroker::new().backend());
            #[cfg(not(feature = "memory"))]
            return Err(not_enabled(url, "memory"));
        }
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {
            #[cfg(feature = "redis")]
            return Ok(redis::RedisBackend::connect(url).await?);
            #[cfg(not(feature = "redis"))]
            return Err(not_enabled(url, "redis"));
        }
        "nats" | "tls" => {
            #[cfg(feature = "nats")]
            return Ok(nats::NatsBackend::connect_url(url).await?);
            #[cfg(not(feature = "nats"))]
            return Err(not_enabled(url, "nats"));
        }
        _ => Err(Error::Backend(BackendError::new(
            "rodario",
            BackendErrorKind::InvalidInput,
            format!(
                "{url:?}: unknown scheme; expected memory:, redis://, rediss://, \
                 redis+cluster://, rediss+cluster://, nats:// or tls://"
            ),
        ))),
    }
}

#[cfg(any(not(feature = "memory"), not(feature = "redis"), not(feature = "nats")))]
fn not_enabled(url: &str, feature: &str) -> Error {
    Error::Backend(BackendError::new(
        "rodario",
        BackendErrorKind::InvalidInput,
        format!("{url:?} needs rodario's `{feature}` feature, which is not enabled"),
    ))
}

/// Constructors of nodes on the backends enabled by features: `Node::memory()`,
/// `Node::redis(url)`, `Node::nats(url)`.
pub trait NodeExt {
    /// A node on a fresh private in-memory broker (feature `memory`). For several nodes that
    /// see each other, make a [`memory::MemoryBroker`] and give each node its own
    /// `broker.backend()`.
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    fn memory() -> Node;

    /// A node on the Redis server at `url` (feature `redis`; a `redis+cluster://` URL for a
    /// Redis Cluster), with no key prefix. For a prefix or other settings, build a
    /// [`redis::RedisConfig`] and pass its backend to [`Node::builder`].
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    fn redis(url: &str) -> impl std::future::Future<Output = Result<Node>> + Send;

    /// A node on the NATS server(s) at `url` (feature `nats`; several URLs separated by
    /// commas), with the default prefix `rodario`. For other settings, build a
    /// [`nats::NatsConfig`] and pass its backend to [`Node::builder`].
    #[cfg(feature = "nats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    fn nats(url: &str) -> impl std::future::Future<Output = Result<Node>> + Send;
}

impl NodeExt for Node {
    #[cfg(feature = "memory")]
    fn memory() -> Node {
        Node::new(memory::MemoryBroker::new().backend())
    }

    #[cfg(feature = "redis")]
    fn redis(url: &str) -> impl std::future::Future<Output = Result<Node>> + Send {
        let url = url.to_owned();
        async move { Ok(Node::new(redis::RedisBackend::connect(&url).await?)) }
    }

    #[cfg(feature = "nats")]
    fn nats(url: &str) -> impl std::future::Future<Output = Result<Node>> + Send {
        let url = url.to_owned();
        async move { Ok(Node::new(nats::NatsBackend::connect_url(&url).await?)) }
    }
}

/// What most programs need: `use rodario::prelude::*;`.
pub mod prelude {
    pub use crate::NodeExt;
    pub use futures_util::StreamExt as _;
    pub use rodario_core::{
        actor, Actor, ActorHandle, ActorProxy, ClusterProxy, Error, Gather, Node, Pending, Result,
        TypedCluster, TypedProxy,
    };
}
