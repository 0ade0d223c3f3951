//! The memberships view: a connection's copy of the registry bucket's cluster memberships
//! (`m.>`) and owners' leases (`o.>`), kept current by two JetStream consumers, so that
//! counting a cluster channel's members reads no KV key.
//!
//! It starts at the first membership listing and serves listings once both consumers have
//! delivered the keys' last values; until then, and from a consumer's failure or the
//! connection's loss until new consumers have caught up again, listings read the KV as
//! before. Writes made through this connection are applied at once with the revision the
//! server gave them, so that the connection's own next listing sees them; a consumer's
//! message for a key is applied unless the view already holds a later revision of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use rodario_core::backend::ConnectionState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::kv::{self, KV_OPERATION};

/// The key roots the view holds: memberships and owners' leases.
const MEMBERS_ROOT: &str = "m.";
const OWNERS_ROOT: &str = "o.";

/// The pause before following again after a consumer could not be created or failed while
/// the connection stayed up, doubled after each failure that did not catch up, up to
/// [`MAX_RETRY_PAUSE`]: each attempt leaves two consumers on the server until it drops them
/// for inactivity.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// One key's last value known here.
struct Slot {
    revision: u64,
    /// `None`: deleted through this connection, until the consumer delivers the deletion
    /// (which then removes the slot); kept so that an older value it delivers meanwhile is
    /// not applied.
    value: Option<Value>,
}

/// A value and the server's timestamp of the message that wrote it.
pub(crate) struct Value {
    pub(crate) text: String,
    pub(crate) created_ns: i128,
}

/// The keys under one root, as one consumer delivered them.
#[derive(Default)]
struct Keys {
    slots: BTreeMap<String, Slot>,
    /// The last stream sequence the consumer delivered: every message of the root up to it
    /// is applied (or superseded), so a local write at or below it is already here.
    seen: u64,
    /// Whether the consumer has delivered the last value of every key of the root.
    caught_up: bool,
    /// The stream's last sequence just before the consumer was created: a message at or
    /// past it means every earlier one was delivered (an ordered consumer delivers in
    /// stream order). The consumer's own count of pending messages says so too, but
    /// nats-server 2.9 can leave it at 1 for good on a root whose keys are rewritten often
    /// (owners' leases).
    current_at: Option<u64>,
}

impl Keys {
    /// Applies what the consumer delivered: a value (`Some`) or a deletion.
    fn delivered(&mut self, key: String, revision: u64, value: Option<Value>, pending: u64) {
        self.seen = self.seen.max(revision);
        self.caught_up |= pending == 0 || self.current_at.is_some_and(|at| revision >= at);
        if self.slots.get(&key).is_some_and(|s| s.revision > revision) {
            return;
        }
        match value {
            Some(value) => {
                self.slots.insert(
                    key,
                    Slot {
                        revision,
                        value: Some(value),
                    },
                );
            }
            None => {
                self.slots.remove(&key);
            }
        }
    }

    /// Applies a write made through this connection, unless the consumer delivered it (or
    /// later) already.
    fn written(&mut self, key: &str, revision: u64, value: Option<Value>) {
        if revision <= self.seen || self.slots.get(key).is_some_and(|s| s.revision >= revision) {
            return;
        }
        self.slots.insert(key.to_owned(), Slot { revision, value });
    }

    /// Drops values older than `max_age_ns`, which the server has deleted (older servers
    /// tell no consumer).
    fn prune(&mut self, oldest_ns: i128) {
        self.slots.retain(|_, slot| {
            slot.value
                .as_ref()
                .is_none_or(|v| v.created_ns >= oldest_ns)
        });
    }

    fn reset(&mut self) {
        *self = Keys::default();
    }
}

/// The view's state.
#[derive(Default)]
pub(crate) struct State {
    members: Keys,
    owners: Keys,
}

impl State {
    fn keys(&mut self, key: &str) -> Option<&mut Keys> {
        if key.starts_with(MEMBERS_ROOT) {
            Some(&mut self.members)
        } else if key.starts_with(OWNERS_ROOT) {
            Some(&mut self.owners)
        } else {
            None
        }
    }

    /// The values of the membership keys under `root` (which starts with `m.`), with their
    /// keys.
    pub(crate) fn members_under<'a>(
        &'a self,
        root: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.members
            .slots
            .range::<str, _>((std::ops::Bound::Included(root), std::ops::Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(root))
            .filter_map(|(key, slot)| Some((key.as_str(), slot.value.as_ref()?)))
    }

    /// The value of the owner's lease at `key`.
    pub(crate) fn lease(&self, key: &str) -> Option<&Value> {
        self.owners.slots.get(key)?.value.as_ref()
    }
}

/// What the view follows: the registry bucket of one connection.
pub(crate) struct Source {
    pub(crate) client: async_nats::Client,
    pub(crate) stream: Stream,
    /// `$KV.{bucket}.`.
    pub(crate) subject_prefix: String,
    /// The bucket's max_age (zero: unlimited).
    pub(crate) max_age: Duration,
    pub(crate) connection: watch::Receiver<ConnectionState>,
}

/// The view of one connection: empty and idle until [`View::start`].
#[derive(Default)]
pub(crate) struct View {
    state: Arc<Mutex<State>>,
    task: OnceLock<JoinHandle<()>>,
}

impl Drop for View {
    fn drop(&mut self) {
        // The task holds a client, which keeps the connection open.
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl View {
    /// Starts following, once; `source` is called only the first time.
    pub(crate) fn start(&self, source: impl FnOnce() -> Source) {
        self.task.get_or_init(|| {
            let state = self.state.clone();
            tokio::spawn(follow(state, source()))
        });
    }

    /// The view, when both consumers have caught up; `None` until then (or never started).
    pub(crate) fn ready(&self) -> Option<MutexGuard<'_, State>> {
        let state = lock(&self.state);
        (state.members.caught_up && state.owners.caught_up).then_some(state)
    }

    /// Applies a write (a value, or a deletion when `None`) that the server accepted at
    /// `revision` through this connection; keys outside the view are ignored.
    pub(crate) fn written(&self, key: &str, revision: u64, text: Option<&[u8]>) {
        if self.task.get().is_none() {
            return;
        }
        let value = match text {
            Some(text) => match std::str::from_utf8(text) {
                // The acknowledgement has no timestamp: now is a little later than the
                // server's, by at most the round trip, until the consumer delivers it.
                Ok(text) => Some(Value {
                    text: text.to_owned(),
                    created_ns: kv::now_ns(),
                }),
                Err(_) => return,
            },
            None => None,
        };
        if let Some(keys) = lock(&self.state).keys(key) {
            keys.written(key, revision, value);
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves no half-applied invariant worth refusing.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Follows the bucket while the connection is up, starting over (from an empty view) after
/// each loss of the connection or failure of a consumer.
async fn follow(state: Arc<Mutex<State>>, mut source: Source) {
    let mut pause = RETRY_PAUSE;
    loop {
        // Up (or the backend is gone, and the task with it).
        if source
            .connection
            .wait_for(|s| *s == ConnectionState::Connected)
            .await
            .is_err()
        {
            return;
        }
        let ended = follow_once(&state, &mut source).await;
        let caught_up = {
            let mut state = lock(&state);
            let caught_up = state.members.caught_up && state.owners.caught_up;
            state.members.reset();
            state.owners.reset();
            caught_up
        };
        if caught_up {
            pause = RETRY_PAUSE;
        }
        match ended {
            Ended::Disconnected => {
                tracing::debug!("NATS connection lost: the memberships view starts over")
            }
            Ended::Failed(err) => {
                tracing::warn!(error = %err, "the NATS memberships view stopped; listings read \
                    the registry until it has caught up again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
        }
    }
}

enum Ended {
    Disconnected,
    Failed(String),
}

/// Opens both consumers and applies what they deliver until one fails or the connection
/// drops.
async fn follow_once(state: &Mutex<State>, source: &mut Source) -> Ended {
    let current_at = match source.stream.get_info().await {
        Ok(info) => info.state.last_sequence,
        Err(err) => return Ended::Failed(format!("reading the registry stream's state: {err}")),
    };
    let members = consume(source, MEMBERS_ROOT).await;
    let owners = consume(source, OWNERS_ROOT).await;
    let ((mut members, members_current), (mut owners, owners_current)) = match (members, owners) {
        (Ok(members), Ok(owners)) => (members, owners),
        (Err(err), _) | (_, Err(err)) => return Ended::Failed(err),
    };
    {
        let mut state = lock(state);
        state.members.caught_up = members_current;
        state.owners.caught_up = owners_current;
        state.members.current_at = Some(current_at);
        state.owners.current_at = Some(current_at);
    }
    let mut prune = tokio::time::interval(source.max_age.max(Duration::from_secs(1)) / 2);
    loop {
        let delivered = tokio::select! {
            // Any event: the watch keeps only the last state, so a drop and the reconnect
            // after it may show as "connected" alone, and the consumers may have missed
            // messages meanwhile.
            _ = source.connection.changed() => return Ended::Disconnected,
            message = members.next() => (MEMBERS_ROOT, message),
            message = owners.next() => (OWNERS_ROOT, message),
            _ = prune.tick(), if !source.max_age.is_zero() => {
                let oldest = kv::now_ns() - i128::try_from(source.max_age.as_nanos()).unwrap_or(i128::MAX);
                let mut state = lock(state);
                state.members.prune(oldest);
                state.owners.prune(oldest);
                continue;
            }
        };
        let message = match delivered.1 {
            Some(Ok(message)) => message,
            Some(Err(err)) => return Ended::Failed(format!("{} consumer: {err}", delivered.0)),
            None => return Ended::Failed(format!("{} consumer ended", delivered.0)),
        };
        let Some(key) = message.subject.strip_prefix(source.subject_prefix.as_str()) else {
            continue;
        };
        let info = match message.info() {
            Ok(info) => info,
            Err(err) => return Ended::Failed(format!("unreadable consumer message: {err}")),
        };
        let deleted = message.headers.as_ref().is_some_and(|headers| {
            headers.get(KV_OPERATION).is_some()
                || headers
                    .get(async_nats::header::NATS_MARKER_REASON)
                    .is_some()
        });
        let value = match (deleted, std::str::from_utf8(&message.payload)) {
            (false, Ok(text)) => Some(Value {
                text: text.to_owned(),
                created_ns: info.published.unix_timestamp_nanos(),
            }),
            _ => None,
        };
        let (revision, pending) = (info.stream_sequence, info.pending);
        let key = key.to_owned();
        if let Some(keys) = lock(state).keys(&key) {
            keys.delivered(key, revision, value, pending);
        }
    }
}

/// An ordered consumer of the last value of each key under `root`, then of every change;
/// with whether there was nothing to deliver.
async fn consume(source: &Source, root: &str) -> Result<(Ordered, bool), String> {
    let consumer = source
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: source.client.new_inbox(),
            description: Some("rodario memberships view".to_owned()),
            filter_subject: format!("{}{root}>", source.subject_prefix),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|err| format!("creating the {root} consumer: {err}"))?;
    let current = consumer.cached_info().num_pending == 0;
    let messages = consumer
        .messages()
        .await
        .map_err(|err| format!("subscribing to the {root} consumer: {err}"))?;
    Ok((messages, current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<Value> {
        Some(Value {
            text: text.to_owned(),
            created_ns: 1,
        })
    }

    #[test]
    fn later_revisions_win() {
        let mut keys = Keys::default();
        keys.delivered("m.c.a".into(), 5, value("@x"), 1);
        assert!(!keys.caught_up);
        // A local write after what the consumer delivered is applied at once...
        keys.written("m.c.a", 9, None);
        assert!(keys.slots["m.c.a"].value.is_none());
        // ...and an older message the consumer delivers after it does not undo it.
        keys.delivered("m.c.a".into(), 7, value("@y"), 1);
        assert!(keys.slots["m.c.a"].value.is_none());
        // The deletion itself removes the key.
        keys.delivered("m.c.a".into(), 9, None, 0);
        assert!(keys.caught_up && keys.slots.is_empty());
        // A local write the consumer delivered already is not applied again.
        keys.written("m.c.b", 8, value("@z"));
        assert!(keys.slots.is_empty());
    }

    /// A consumer whose pending count stays above zero is caught up once it delivers a
    /// message at or past the stream's last sequence when it was created.
    #[test]
    fn a_message_past_the_creation_point_catches_up() {
        let mut keys = Keys {
            current_at: Some(10),
            ..Keys::default()
        };
        keys.delivered("o.a".into(), 4, value("1 a"), 1);
        assert!(!keys.caught_up);
        keys.delivered("o.a".into(), 10, value("1 a"), 1);
        assert!(keys.caught_up);
        // Without a creation point, only the pending count tells.
        let mut keys = Keys::default();
        keys.delivered("o.a".into(), 40, value("1 a"), 1);
        assert!(!keys.caught_up);
    }

    #[test]
    fn members_under_a_root() {
        let mut state = State::default();
        for (key, revision) in [("m.a.1", 1), ("m.ab.2", 2), ("m.a.3", 3), ("o.x", 4)] {
            let keys = state.keys(key).unwrap();
            keys.delivered(key.into(), revision, value("@x"), 0);
        }
        let keys: Vec<_> = state.members_under("m.a.").map(|(key, _)| key).collect();
        assert_eq!(keys, ["m.a.1", "m.a.3"]);
        assert!(state.lease("o.x").is_some());
        assert!(state.keys("a.1").is_none());
    }
}
