//! Calls to actors addressed to the node that runs them, so that a node needs one
//! subscription for all of its actors (an async-nats subscription holds about 6 KB of
//! buffers, and the server tracks each one) instead of one per actor.
//!
//! The host side: a node subscribes once to `{prefix}.node.{node}.*` and hands each message
//! to the sink of the actor its last token names. A message for an actor the node does not
//! run (stopped, or never there) is answered on its reply subject with [`NOT_HERE`], as the
//! server answers a subject nobody subscribes to with "no responders"; a message carrying
//! the [`RECEIPT`] header (a checked publish) is answered with [`HERE`] once delivered.
//!
//! The caller side: which node runs an actor is read from its registry entry (`a.{uuid}`,
//! whose value names the owner) once and kept, so that later calls publish at once; when a
//! call finds nobody there, the entry is read again (the actor may have moved), and then the
//! actor's own subject, `{prefix}.actor.{uuid}`, is tried (the subject of rodario before node
//! subjects, and of taps).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use rodario_core::backend::{FrameSink, Subscription};
use rodario_core::error::BackendError;
use tokio::task::JoinHandle;

use crate::names;
use crate::transport::{locked, subscribe_subject};
use crate::Inner;

/// The header a checked publish to a node subject carries: the node answers [`HERE`] or
/// [`NOT_HERE`] on its reply subject.
const RECEIPT: &str = "Rodario-Receipt";

/// A node's answer to a checked publish it delivered.
pub(crate) const HERE: &[u8] = b"here";

/// A node's answer to a message for an actor it does not run.
pub(crate) const NOT_HERE: &[u8] = b"not here";

/// The most actor-to-node mappings a connection keeps; past it, all are forgotten (and read
/// again from the registry as calls need them).
const MAX_OWNERS: usize = 4096;

/// The sinks of one node's actors, by UUID.
type Sinks = Arc<Mutex<HashMap<Box<str>, Arc<dyn FrameSink>>>>;

/// One node's subscription and the actors it serves.
struct NodeRoute {
    sinks: Sinks,
    reader: JoinHandle<()>,
}

impl Drop for NodeRoute {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The node subscriptions of one connection, and the nodes of the actors it called.
#[derive(Default)]
pub(crate) struct Routes {
    nodes: tokio::sync::Mutex<HashMap<Box<str>, NodeRoute>>,
    owners: Mutex<HashMap<Box<str>, Box<str>>>,
}

impl Routes {
    /// The subject of the node that ran `actor` when a call last reached it through this
    /// connection, if one did.
    pub(crate) fn known_subject(
        &self,
        prefix: &str,
        actor: &str,
    ) -> Option<Result<String, BackendError>> {
        let owners = locked(&self.owners);
        let owner = owners.get(actor)?;
        Some(names::node_subject(prefix, owner, actor))
    }

    /// Remembers that `owner` runs `actor`.
    pub(crate) fn remember(&self, actor: &str, owner: &str) {
        let mut owners = locked(&self.owners);
        if owners.len() >= MAX_OWNERS {
            owners.clear();
        }
        owners.insert(actor.into(), owner.into());
    }

    /// Forgets where `actor` runs (the registry no longer names its node).
    pub(crate) fn forget(&self, actor: &str) {
        locked(&self.owners).remove(actor);
    }
}

/// Removes an actor's sink from its node's route when its subscription is closed or
/// dropped, unless a newer subscription of the same UUID replaced it.
struct RouteGuard {
    sinks: Sinks,
    actor: Box<str>,
    sink: Arc<dyn FrameSink>,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        let mut sinks = locked(&self.sinks);
        let ours = sinks
            .get(&self.actor)
            .is_some_and(|s| std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(&self.sink)));
        if ours {
            sinks.remove(&self.actor);
        }
    }
}

/// Serves `actor`'s calls on `node`'s subscription, subscribing the node first if this is
/// its first actor on this connection (active at the server when this returns).
pub(crate) async fn subscribe_actor(
    inner: &Arc<Inner>,
    actor: &str,
    node: &str,
    sink: Arc<dyn FrameSink>,
) -> Result<Subscription, BackendError> {
    names::check_token("actor UUID", actor)?;
    let mut nodes = inner.routes.nodes.lock().await;
    let sinks = match nodes.get(node) {
        Some(route) => route.sinks.clone(),
        None => {
            let subject = names::node_wildcard(&inner.prefix, node)?;
            let subscriber = subscribe_subject(inner, &subject).await?;
            let sinks = Sinks::default();
            let reader = tokio::spawn(route(inner.client.clone(), subscriber, sinks.clone()));
            nodes.insert(
                node.into(),
                NodeRoute {
                    sinks: sinks.clone(),
                    reader,
                },
            );
            sinks
        }
    };
    drop(nodes);
    locked(&sinks).insert(actor.into(), sink.clone());
    let guard = RouteGuard {
        sinks,
        actor: actor.into(),
        sink,
    };
    // Removing the sink stops delivery at once: the node's subscription stays for its
    // other actors (and later ones), so there is nothing to tell the server.
    Ok(Subscription::new(async move { drop(guard) }))
}

/// Hands each message on a node's subscription to the sink of the actor it names, and
/// answers those for actors the node does not run.
async fn route(
    client: async_nats::Client,
    mut messages: impl Stream<Item = Message> + Unpin,
    sinks: Sinks,
) {
    while let Some(message) = messages.next().await {
        let actor = message
            .subject
            .rsplit_once('.')
            .map_or("", |(_, actor)| actor);
        // Cloned out: no lock is held while delivering (a sink may drop what owns it).
        let sink = locked(&sinks).get(actor).cloned();
        match sink {
            Some(sink) => {
                let receipt = receipt_to(&message);
                sink.deliver(message.payload);
                if let Some(reply) = receipt {
                    answer(&client, reply, HERE).await;
                }
            }
            None => {
                if let Some(reply) = message.reply {
                    answer(&client, reply, NOT_HERE).await;
                }
            }
        }
    }
}

/// Where a checked publish wants its receipt, if `message` is one.
pub(crate) fn receipt_to(message: &Message) -> Option<Subject> {
    let asked = message
        .headers
        .as_ref()
        .is_some_and(|headers| headers.get(RECEIPT).is_some());
    message.reply.clone().filter(|_| asked)
}

/// Tells the sender of a message (at `reply`) whether its actor got it.
pub(crate) async fn answer(client: &async_nats::Client, reply: Subject, answer: &'static [u8]) {
    if let Err(err) = client.publish(reply, Bytes::from_static(answer)).await {
        tracing::debug!(%err, "could not answer a call's sender");
    }
}

/// Headers that ask the receiving node for a receipt.
pub(crate) fn receipt_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(RECEIPT, "1");
    headers
}
