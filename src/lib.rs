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
//!
//! Everything else is re-exported from [`rodario_core`]; backend authors start at
//! [`backend`].

#![warn(missing_docs)]

pub use rodario_core::*;

/// The in-process backend (feature `memory`).
#[cfg(feature = "memory")]
pub mod memory {
    pub use rodario_memory::*;
}

/// Constructors of nodes on the backends enabled by features: `Node::memory()`.
pub trait NodeExt {
    /// A node on a fresh private in-memory broker (feature `memory`). For several nodes that
    /// see each other, make a [`memory::MemoryBroker`] and give each node its own
    /// `broker.backend()`.
    #[cfg(feature = "memory")]
    fn memory() -> Node;
}

impl NodeExt for Node {
    #[cfg(feature = "memory")]
    fn memory() -> Node {
        Node::new(memory::MemoryBroker::new().backend())
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
