//! The caller's leg of a call: proxies and cluster proxies, the pending replies they return,
//! and the [`Client`] that sends calls and routes replies.
//!
//! A call goes out from [`ActorProxy::call`] or [`ClusterProxy::call`] through
//! `Client::send_call`, which registers the call in the [`CallTable`](calls::CallTable)
//! and publishes it; its replies come back on the node's reply channel, where the reply sink
//! hands them to the table, which hands them to the waiting [`Pending`] or [`Gather`]. The
//! table's sweeper ends calls at their deadline, and a dropped connection ends them at once.

mod caller;
mod calls;
mod cluster;
mod pending;
mod proxy;

pub(crate) use caller::Client;
pub use cluster::{ClusterProxy, Gather, TypedCluster};
pub use pending::Pending;
pub use proxy::{ActorProxy, TypedProxy};
