//! The NATS backend for rodario: core NATS pub/sub for frames, JetStream KV for the
//! registry and the leases.
//!
//! ```no_run
//! # async fn run() -> Result<(), rodario_core::error::BackendError> {
//! use rodario_nats::{NatsBackend, NatsConfig};
//!
//! // RODARIO_NATS_URL, else nats://127.0.0.1:4222; prefix "rodario".
//! let backend = NatsBackend::connect(NatsConfig::new()).await?;
//! let other_tenant =
//!     NatsBackend::connect(NatsConfig::from_url("nats://10.0.0.5:4222").prefix("tenant2")).await?;
//! # drop((backend, other_tenant));
//! # Ok(())
//! # }
//! ```
//!
//! Each [`NatsBackend::connect`] opens one connection, as one process would: give each node
//! its own. The server must run JetStream (`nats-server -js`). It works with nats-server 2.9
//! and newer.
//!
//! # Subjects
//!
//! With the prefix `{prefix}` (one or more subject tokens, default `rodario`):
//!
//! | channel | subject |
//! |---|---|
//! | the calls to an actor a node runs ([`Transport::subscribe_actor`](rodario_core::backend::Transport::subscribe_actor)) | `{prefix}.node.{node id}.{uuid}` |
//! | an actor's own channel (`Channel::Actor`: taps, and actors of rodario before node subjects) | `{prefix}.actor.{uuid}` |
//! | a node's replies (`Channel::Reply`) | `{prefix}.reply.{node id}` |
//! | a cluster channel (`Channel::Cluster`) | `{prefix}.cluster.{name}` |
//!
//! A name must be one subject token: names that are empty or contain `.`, `*`, `>`,
//! whitespace or control characters are refused with
//! [`BackendErrorKind::InvalidInput`](rodario_core::error::BackendErrorKind::InvalidInput),
//! never rewritten (rewriting could make two names share a subject).
//!
//! # Actors: one subscription per node
//!
//! A node subscribes once to `{prefix}.node.{node id}.*` and hands each message to the
//! actor its last token names, so that a node's actors cost the server one subscription and
//! the node one async-nats subscription (whose buffers are about 6 KB) instead of one each:
//! `tests/nats.rs`, `one_subscription_serves_all_of_a_nodes_actors`; an idle actor's memory
//! in BENCHMARKS.md. A message for an actor the node does not run (stopped, or never there)
//! is answered on its reply subject with `not here`, as the server answers a subject nobody
//! subscribes to with "no responders".
//!
//! A caller learns which node runs an actor from the actor's registry entry (`a.{uuid}` →
//! `@{node id}`, one KV read at the first call to it) and keeps it (up to 4,096 actors per
//! connection; past that, all are read again as they are called). When a call finds nobody
//! there (`not here`, or "no responders" from a node that is gone), the caller reads the
//! entry again and, if it names another node (the actor moved), publishes the call there;
//! else it tries the actor's own subject `{prefix}.actor.{uuid}`, where an
//! actor of an older rodario, or a tap, listens. Only when that also finds nobody does the
//! call fail with `InvalidActor` (`tests/nats.rs`, `calls_follow_an_actor_to_another_node`).
//! A call to a UUID the registry does not know goes to its own subject at once. While the
//! registry cannot be read (a JetStream cluster electing a leader), the caller keeps the node
//! it knew, so that calls reach the actor again as soon as its node is back, with core NATS
//! (`tests/cluster.rs`, `losing_the_connected_server_keeps_registrations_and_leases`).
//!
//! A subscription to `Channel::Actor` itself (a tap: the CLI's `tail`) listens on the
//! actor's own subject and on `{prefix}.node.*.{uuid}`, so it sees the calls whichever node
//! runs the actor. Older rodario nodes publish calls on `{prefix}.actor.{uuid}` only: they
//! reach the actors of older nodes, not those of newer ones, so upgrade every node of a
//! prefix before relying on calls from older nodes to newer ones.
//!
//! # KV layout
//!
//! Two KV buckets per prefix: one for the registry, one for the leases (kept apart so that
//! the leases `singular` calls leave behind until they expire do not slow down listing the
//! registry). Their names are the prefix escaped to the characters bucket names allow:
//! `[A-Za-z0-9-]` stand for themselves and any other byte of the UTF-8 name is `_` and two
//! upper-case hex digits (`.` is `_2E`, `_` is `_5F`); the leases bucket adds `_locks`. So
//! prefix `rodario` has buckets `rodario` and `rodario_locks` (streams `KV_rodario`,
//! `KV_rodario_locks`), and `shop.orders` has `shop_2Eorders` and `shop_2Eorders_locks`.
//! Keys, with every name escaped the same way (reversibly, so `members` returns the names
//! as given, and no two names share a key):
//!
//! | bucket | what | key | value |
//! |---|---|---|---|
//! | registry | a registered actor (`Group::Actors`) | `a.{uuid}` | `@{owner}` |
//! | registry | a cluster member (`Group::Members(channel)`) | `m.{channel}.{node id}` | `@{owner}` |
//! | registry | an owner's lease, one per node (`Presence::keep_alive`) | `o.{owner}` | `{ttl ms} {owner}`, or `!{ttl ms} {owner}` once disturbed |
//! | leases | a lease (`LockKey { context, name }`) | `{context}.{name}` | `{ttl ms} {token}` |
//!
//! A bucket is created, when missing, as a KV bucket with history 1 (the stream
//! `KV_{bucket}` on subjects `$KV.{bucket}.>`, one message per subject, rollups allowed,
//! deletes through markers, direct gets), created directly rather than through
//! `create_key_value`, which cannot read nats-server 2.9's account info.
//!
//! A `{ttl ms} {…}` value (an owner's lease, a lease) is live until `ttl` after the
//! server's timestamp of the message that wrote it; an expired one counts as absent and is
//! replaced by a revision-checked write. A registry entry names its owner and is live while
//! the owner's lease is: a node renews its one lease every third of its liveness TTL (a read
//! and a revision-checked write, whatever the number of its actors), and ending the lease
//! (at shutdown, or by not renewing it) ends all its entries at once. `contains` reads the
//! entry, then its owner's lease; `members` lists the group's keys (one request for the
//! stream's subjects under the group's root), reads their entries, then the lease of each
//! of their owners once (cluster channels' members come from a view kept current instead,
//! see Memberships below). A `remove` without an owner (another process's `unregister`)
//! deletes the entry, then rewrites the holder's lease with the time it had left and a
//! leading `!`; the holder's next renewal finds the mark, writes the lease without it and
//! reports [`LeaseRenewal::Disturbed`](rodario_core::backend::LeaseRenewal::Disturbed).
//!
//! Registry entries written by rodario before entries lived by their owner's lease hold
//! `{ttl ms} {owner}` (a leading digit, where entries now lead with `@`): they are still
//! read, live by their own TTL, and their owner's `held` rewrites them in the new form, so
//! that older and newer nodes can share a prefix during an upgrade. Older nodes do not read
//! the new form: to them newer nodes' actors and memberships are absent (their listings
//! leave them out, and their inserts may take those names), so upgrade every node of a
//! prefix before relying on newer nodes' registrations from older ones.
//!
//! Inserting and acquiring write with "expected last revision" 0 (or the dead entry's
//! revision), renewing and releasing read the entry and write or delete with its revision:
//! of racing writers exactly one wins, the others see a revision conflict and re-read. Each
//! bucket's `max_age` ([`NatsConfig::kv_max_age`], default 1 hour) makes the server delete
//! messages older than it: abandoned leases, and the leases and entries of crashed nodes
//! (left until then: deleting an entry would leave a deletion marker in its place, as long
//! to list and newer). A TTL longer than it is refused. Since a registry entry is written
//! once, a node rewrites its entries every half `max_age`
//! ([`Presence::refresh_every`](rodario_core::backend::Presence::refresh_every), through
//! [`Presence::held`](rodario_core::backend::Presence::held)). So at rest a node costs the
//! server two messages per renewal (its lease's read and write) and, every half `max_age`,
//! two per entry it holds (a read and a rewrite); `tests/at_rest.rs` counts them.
//!
//! # Clusters
//!
//! Give every server of a cluster (`nats://a:4222,nats://b:4222,nats://c:4222`): the client
//! moves to another when its server goes, and its subscriptions follow. With
//! [`NatsConfig::kv_replicas`] 3 (and [`NatsConfig::kv_cluster`] / [`NatsConfig::kv_tags`]
//! for placement), the buckets keep the registry and the leases through the loss of a
//! server. A replicated bucket differs in two ways: reads go through the stream's leader (no
//! direct gets, which a replica still catching up would answer with old entries), and each
//! revision-checked write is confirmed by a fence (a write to the key `_fence`) and a read,
//! since some servers accept two writes expecting the same revision while the first is
//! being replicated; of such writers only the last is told it won.
//!
//! # Delivery
//!
//! Core NATS does not say who received a message. With [`NatsConfig::check_delivery`] on
//! (the default), a publish on an actor or cluster channel carries a reply subject of this
//! connection's own inbox, and the server answers a message nobody is subscribed to with a
//! "no responders" status there. How the answer is used depends on what was published:
//!
//! - **A call to one actor** ([`Transport::publish_call`](rodario_core::backend::Transport::publish_call)) returns at once: its
//!   pending reply races the status, which fails it with `InvalidActor` as soon as it
//!   comes (one round trip), so a call costs no round trip of its own beyond its reply.
//! - **Other publishes** (one-way calls, cluster calls) are followed by a marker message to
//!   the inbox, and wait for its echo, which the server writes after the status: they
//!   return [`Delivery::Exact(0)`](rodario_core::backend::Delivery::Exact) if the status came, else [`Delivery::AtLeastOne`](rodario_core::backend::Delivery::AtLeastOne)
//!   (the server does not say how many). A checked publish costs one extra small message
//!   and one round trip: measured on loopback, about 70–90 µs for a publish awaited alone
//!   against 1–2 µs unchecked, and 6–8 µs each with 64 publishes in flight. A one-way
//!   call to an actor on a node subject carries a `Rodario-Receipt` header instead of the
//!   marker: the node answers `here` once it handed it to the actor (or `not here`), since
//!   the server only knows that the node listens; it is then tried elsewhere as a call is.
//! - **Repeated one-way calls to one actor** skip that round trip: once a checked publish
//!   found an actor's subject received, publishes there for the next 2 s are sent
//!   unchecked (reporting [`Delivery::Unknown`](rodario_core::backend::Delivery::Unknown)) but still with a reply subject; the first that
//!   nobody receives brings a status that ends the finding, and the next publish is
//!   checked again. One-way calls sent within that round trip after an actor stopped are
//!   lost without an error (`tests/nats.rs`, `tells_to_a_stopped_actor_fail_soon`).
//!
//! Publishes on reply channels, and all publishes with the check off, return
//! [`Delivery::Unknown`](rodario_core::backend::Delivery::Unknown) at no extra cost. The
//! backend does not count receivers ([`Transport::counts_receivers`](rodario_core::backend::Transport::counts_receivers) is false), so nodes
//! record cluster memberships in the registry.
//!
//! # Memberships
//!
//! So each cluster call counts its channel's members (`Presence::members` of
//! `Group::Members`). Instead of listing the registry each time (a stream info for the
//! keys, a read per entry and one per owner's lease), a connection keeps a view of the
//! registry's memberships and owners' leases (`m.>` and `o.>`), fed by two ordered
//! consumers of the registry stream (one filter subject each, as nats-server 2.9 allows)
//! that first deliver each key's last value, then every change. It starts at the
//! connection's first membership listing (a node that makes no cluster call pays nothing)
//! and answers once both consumers have caught up (a consumer has when its pending count
//! is 0, or when it delivers a message at or past the stream's last sequence at its
//! creation: nats-server 2.9 can leave the count at 1 on keys rewritten often); until then
//! listings read the registry as before. The view applies the same rules as a listing: a member is live while its
//! owner's lease is (its server timestamp plus its TTL is after now, so a member whose node
//! died drops out when the lease runs out, with no message needed), an older entry by its
//! own TTL; a deleted key leaves the view. Writes made through the connection are applied to
//! it at once with the revision the server gave them, so the connection's own next cluster
//! call sees its joins and leaves; other nodes' show within the consumers' delay (one
//! delivery from the server after the write: on loopback, another node's join showed in
//! the caller's very next cluster call). When the connection drops or a
//! consumer fails (a missed heartbeat, a deleted consumer), the view is emptied and
//! listings read the registry again until new consumers have caught up. It holds one value
//! per membership and per owner (kept at most the bucket's `max_age`, which it prunes), not
//! per actor; `Group::Actors` listings always read the registry. Tested in
//! `tests/memberships.rs`.
//!
//! # Service API
//!
//! Each node answers the NATS service API (the "micro" services protocol of the NATS
//! clients) as one instance of a service, so that `nats micro ls`, `nats micro info {name}` and
//! `nats micro stats {name}` show a rodario deployment. It subscribes (plain core NATS
//! subscriptions) to `$SRV.{VERB}`, `$SRV.{VERB}.{name}` and `$SRV.{VERB}.{name}.{id}` for
//! the verbs `PING`, `INFO` and `STATS`, from when the node is built until it shuts down,
//! and answers with the API's JSON (`io.nats.micro.v1.ping_response`, `info_response`,
//! `stats_response`):
//!
//! | field | value |
//! |---|---|
//! | `name` | the prefix escaped as bucket names are (`rodario`; `shop.orders` is `shop_2Eorders`) |
//! | `id` | the node id |
//! | `version` | this crate's version |
//! | `metadata` | `{"prefix": "{prefix}"}` |
//! | `description` (`INFO`) | `rodario actors under the NATS prefix {prefix}` |
//! | `started` (`STATS`) | when the node started answering, RFC 3339 in UTC |
//! | `endpoints` | one per public method of each actor the node runs, ordered by actor, then method |
//!
//! An endpoint is named `{type}-{method}` (characters other than `[A-Za-z0-9_-]`, which
//! endpoint names do not allow, shown as `_`); its `subject` is the one the actor's calls
//! arrive on, `{prefix}.node.{node id}.{uuid}`, and its `queue_group` is empty (a node's
//! subscription is a plain one). In `INFO` answers its `metadata` holds `actor` (the UUID), `type`,
//! `method`, `params` (`n: u64, label: String`) and `tags` (comma-separated); in `STATS`
//! answers, `num_requests` and `num_errors` count the calls the method handled since the
//! actor started and those that failed, `last_error` is the last failure's message (empty
//! when none), `processing_time` and `average_processing_time` are in nanoseconds. Two
//! actors of one type on a node give endpoints of the same name: their subjects tell them
//! apart.
//!
//! The `$SRV` subjects are the same for every prefix. Each prefix is its own service, so
//! `nats micro ls` lists one line per prefix and `nats micro info rodario` only its nodes;
//! but anyone who may subscribe on the server sees every prefix's actors and methods (not
//! their arguments or results). Keep tenants in separate NATS accounts to hide them from
//! each other, or turn the API off with [`NatsConfig::service_api`]. A user the server
//! does not let subscribe to `$SRV.>` still runs and calls actors; its nodes just do not
//! answer (the server's refusals are logged as warnings). The answers are
//! built and sent from a task of the node's own, never from the client's connection task;
//! the subscriptions follow reconnects, and a node built while the connection is down
//! answers once it is back. An `INFO` or `STATS` answer larger than the server's
//! `max_payload` (thousands of methods) is not sent, with a warning. Tested in
//! `tests/service.rs`.
//!
//! # What NATS guarantees, compared with Redis
//!
//! - Pub/sub is at most once on both: a frame published while a subscriber is disconnected is
//!   lost. NATS also drops frames for a subscriber whose client-side buffer is full ("slow
//!   consumer", logged) where Redis disconnects the subscriber.
//! - Redis counts receivers of a publish; NATS only tells "nobody" from "somebody" (above).
//! - Redis expires keys on its own clock. Here expiry compares the server's write timestamp
//!   plus the TTL with the reader's clock, so a client whose clock runs ahead of the server's
//!   sees entries expire early (and behind, late): keep clocks synchronised (NTP), as for any
//!   lease. The server itself deletes entries only after the bucket's `max_age`.
//! - Registry and lease writes are persisted by JetStream (file storage by default, replicated
//!   with [`NatsConfig::kv_replicas`] in a cluster), so they survive a server restart.
//! - Frames larger than the server's `max_payload` (1 MiB by default) are refused;
//!   [`Transport::max_payload`](rodario_core::backend::Transport::max_payload) reports the limit.
//!
//! # Connection loss
//!
//! The client reconnects forever, with a pause that starts at 50 ms and doubles up to
//! [`NatsConfig::reconnect_max_delay`], and restores subscriptions on its own: a
//! subscription's stream stays open across the outage. While the connection is down,
//! publishes, subscriptions and registry and lease operations fail at once with
//! [`BackendErrorKind::Connection`](rodario_core::error::BackendErrorKind::Connection), and
//! so does an operation under way when it drops, as soon as the client notices (its request
//! is lost with the connection, so waiting on could only end at [`NatsConfig::timeout`]).
//! An operation waits up to [`NatsConfig::timeout`] only while the connection is up and the
//! server does not answer.
//! At [`NatsBackend::connect`], refused credentials are
//! [`BackendErrorKind::Auth`](rodario_core::error::BackendErrorKind::Auth) and an unreachable
//! server [`BackendErrorKind::Connection`](rodario_core::error::BackendErrorKind::Connection).
//!
//! # Source files
//!
//! The files of every rodario backend: `config.rs` (settings and connecting),
//! `transport.rs` (the [`Transport`](rodario_core::backend::Transport), with the round
//! trips that check delivery; `routes.rs` holds its node subscriptions and the nodes of the
//! actors it called), `presence.rs` (the
//! [`Presence`](rodario_core::backend::Presence)), `locks.rs` (the
//! [`LockStore`](rodario_core::backend::LockStore)), `names.rs` (subjects, bucket names and
//! keys, above), `error.rs` (async-nats errors as [`BackendError`]s); `lib.rs` holds the
//! connection handle the three share. `kv.rs` is NATS's own: the two KV buckets and the
//! revision-checked writes that presence and leases are built on; `view.rs`, the
//! memberships view above; and `service.rs`, the
//! [`Discovery`](rodario_core::observe::Discovery) that answers the service API.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod kv;
mod locks;
mod names;
mod presence;
mod routes;
mod service;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
mod transport;
mod view;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_nats::connection::State;
use rodario_core::backend::ConnectionState;
use rodario_core::error::BackendError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{NatsBackend, NatsConfig, DEFAULT_PREFIX, DEFAULT_URL, URL_ENV};

use crate::error::{dropped, not_connected, timed_out};
use crate::transport::Probes;

/// The backend's name in [`Backend::name`](rodario_core::backend::Backend::name) and in
/// errors.
pub const NAME: &str = "nats";

/// Everything one backend connection holds; shared by its three trait objects and by the
/// close futures of its subscriptions.
pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    check_delivery: bool,
    inbox: String,
    next_probe: AtomicU64,
    probes: Arc<Probes>,
    probe_task: JoinHandle<()>,
    pub(crate) kv: crate::kv::Kv,
    /// The client's connection events, as the state core watches.
    state: watch::Sender<ConnectionState>,
    /// The registry's memberships and owners' leases, for cluster calls (see view.rs).
    pub(crate) view: crate::view::View,
    /// The node subscriptions that serve this connection's actors, and the nodes of the
    /// actors it called (see routes.rs).
    pub(crate) routes: crate::routes::Routes,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The task holds the probe subscription, which keeps the connection open.
        self.probe_task.abort();
    }
}

impl Inner {
    /// The connection's state, from now on.
    pub(crate) fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    pub(crate) fn ensure_connected(&self) -> Result<(), BackendError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(not_connected()),
        }
    }

    /// Runs `op`, one operation that waits for the server (`what` names it in errors): fails
    /// at once when the connection is down, as soon as it drops while `op` waits, and after
    /// the operation timeout. A request or marker sent before a drop is lost with the
    /// connection (the client resends subscriptions after reconnecting, not requests), so
    /// waiting on would only end at the timeout, long after the client knew.
    pub(crate) async fn while_connected<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        self.ensure_connected()?;
        // Most operations (a publish that only has to be queued) finish at the first poll:
        // they set up no timer and no watch.
        let mut op = pin!(op);
        let first = std::future::poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx))).await;
        if let Poll::Ready(result) = first {
            return result;
        }
        // A new receiver counts the current state as seen, so a drop during the first poll
        // is checked here, and only a later one ends the wait below.
        let mut state = self.state.subscribe();
        if *state.borrow_and_update() == ConnectionState::Disconnected {
            return Err(dropped(what));
        }
        let drop = async move {
            loop {
                if state.changed().await.is_err() {
                    // The sender lives in `self`, so this does not happen while `op` runs.
                    return std::future::pending().await;
                }
                if *state.borrow_and_update() == ConnectionState::Disconnected {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            result = tokio::time::timeout(self.timeout, op.as_mut()) => {
                result.unwrap_or_else(|_| Err(timed_out(what, self.timeout)))
            }
            () = drop => Err(dropped(what)),
        }
    }
}

/// One connection to NATS; implements the three backend traits.
pub(crate) struct NatsConnection {
    pub(crate) inner: Arc<Inner>,
}
