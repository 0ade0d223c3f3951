//! The JetStream KV buckets of a prefix (one for the registry, one for the leases):
//! opening them, and the revision-checked reads and writes that presence.rs and locks.rs
//! build on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::kv::{Entry, Operation, Store, UpdateError, UpdateErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, Placement, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;
use futures_util::StreamExt;
use rodario_core::backend::check_ttl;
use rodario_core::error::{quote_name, BackendError, BackendErrorKind};

use crate::config::NatsConfig;
use crate::error::{error, kv_error, open_error};
use crate::names;
use crate::NatsConnection;

/// The header that marks a KV message as a deletion (`DEL`) or a purge (`PURGE`).
pub(crate) const KV_OPERATION: &str = "KV-Operation";

/// Attempts of a read-then-compare-and-set before giving up under contention.
pub(crate) const MAX_ATTEMPTS: usize = 32;

/// One KV bucket.
pub(crate) struct Bucket {
    name: String,
    store: Store,
    /// `$KV.{bucket}.`, the subject prefix of every key.
    subject_prefix: String,
    /// The bucket's max_age: the server deletes entries older than this; zero is unlimited.
    max_age: Duration,
    /// Whether a revision-checked write is confirmed after a fence (a replicated bucket).
    fenced: bool,
    /// For deletions, whose revision the KV client does not return.
    context: jetstream::Context,
}

/// The two buckets of one prefix: the registry, and the leases (kept apart so that the
/// leases `singular` calls leave behind do not slow down listing the registry).
pub(crate) struct Kv {
    registry: Bucket,
    locks: Bucket,
}

impl Kv {
    /// Opens the buckets of `config`'s prefix, creating their streams when missing.
    pub(crate) async fn open(
        context: jetstream::Context,
        config: &NatsConfig,
    ) -> Result<Self, BackendError> {
        let (registry, locks) = names::buckets(&config.prefix);
        Ok(Kv {
            registry: Bucket::open(&context, config, registry).await?,
            locks: Bucket::open(&context, config, locks).await?,
        })
    }
}

impl Bucket {
    /// Opens `bucket`, creating its stream when it does not exist.
    ///
    /// The stream is created directly instead of with `create_key_value`, which first asks for
    /// the account info and fails to parse the answer of nats-server 2.9.
    async fn open(
        context: &jetstream::Context,
        config: &NatsConfig,
        bucket: String,
    ) -> Result<Self, BackendError> {
        let stream_name = format!("KV_{bucket}");
        match context.get_stream(&stream_name).await {
            Ok(_) => {}
            Err(err) => match err.kind() {
                GetStreamErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    create_stream(context, config, &bucket, &stream_name).await?;
                }
                _ => return Err(open_error(&bucket, err)),
            },
        }
        let store = context
            .get_key_value(bucket.clone())
            .await
            .map_err(|err| open_error(&bucket, err))?;
        let stream_config = &store.stream.cached_info().config;
        let (max_age, fenced) = (stream_config.max_age, stream_config.num_replicas > 1);
        Ok(Bucket {
            subject_prefix: format!("$KV.{bucket}."),
            name: bucket,
            store,
            max_age,
            fenced,
            context: context.clone(),
        })
    }
}

async fn create_stream(
    context: &jetstream::Context,
    config: &NatsConfig,
    bucket: &str,
    stream_name: &str,
) -> Result<(), BackendError> {
    let max_age = config.kv_max_age;
    let duplicate_window = if max_age.is_zero() {
        Duration::from_secs(120)
    } else {
        max_age.min(Duration::from_secs(120))
    };
    // The settings of a KV bucket with history 1, as the KV clients create it.
    let stream_config = stream::Config {
        name: stream_name.to_owned(),
        description: Some(format!(
            "rodario {} for prefix {}",
            if bucket.ends_with(names::LOCKS_SUFFIX) {
                "leases"
            } else {
                "registry"
            },
            config.prefix
        )),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_messages: -1,
        max_bytes: -1,
        max_message_size: -1,
        max_age,
        duplicate_window,
        storage: if config.kv_memory_storage {
            StorageType::Memory
        } else {
            StorageType::File
        },
        num_replicas: config.kv_replicas,
        placement: (config.kv_cluster.is_some() || !config.kv_tags.is_empty()).then(|| Placement {
            cluster: config.kv_cluster.clone(),
            tags: config.kv_tags.clone(),
        }),
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        // Any replica answers a direct get, also one that is still catching up after a
        // restart, with an entry as old as its copy (a lapsed registration, a released
        // lease): replicated buckets read through the stream's leader instead.
        allow_direct: config.kv_replicas == 1,
        discard: DiscardPolicy::New,
        ..Default::default()
    };
    match context.create_stream(stream_config).await {
        Ok(created) => {
            // A server that cannot replicate may store fewer replicas than asked for rather
            // than refuse: the bucket would then not survive what its settings promise.
            let replicas = created.cached_info().config.num_replicas;
            if replicas < config.kv_replicas {
                let _ = context.delete_stream(stream_name).await;
                return Err(placement_error(
                    config,
                    bucket,
                    &format!("it holds {replicas}"),
                ));
            }
            tracing::info!(bucket, replicas, "created the NATS KV bucket");
            Ok(())
        }
        Err(err) => match err.kind() {
            CreateStreamErrorKind::JetStream(js) if cannot_place(js.error_code()) => {
                let reason = js.to_string();
                Err(placement_error(config, bucket, &reason).with_source(err))
            }
            // Another process created it meanwhile (with other settings); use it as it is.
            _ => {
                tracing::debug!(bucket, %err, "creating the KV stream failed; trying to open it");
                match context.get_stream(stream_name).await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(open_error(bucket, err)),
                }
            }
        },
    }
}

/// Whether the server refused a stream because it cannot place its replicas as asked.
fn cannot_place(code: ErrorCode) -> bool {
    [
        ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED,
        ErrorCode::INSUFFICIENT_RESOURCES,
        ErrorCode::CLUSTER_NO_PEERS,
        ErrorCode::CLUSTER_TAGS,
        ErrorCode::CLUSTER_NOT_AVAILABLE,
    ]
    .contains(&code)
}

fn placement_error(config: &NatsConfig, bucket: &str, reason: &str) -> BackendError {
    let mut wanted = format!("{} replicas", config.kv_replicas);
    if let Some(cluster) = &config.kv_cluster {
        wanted.push_str(&format!(" in cluster {cluster:?}"));
    }
    if !config.kv_tags.is_empty() {
        wanted.push_str(&format!(" on servers tagged {:?}", config.kv_tags));
    }
    error(
        BackendErrorKind::InvalidInput,
        format!(
            "the NATS servers cannot hold the KV bucket {bucket:?} with {wanted} ({reason}): \
             lower NatsConfig::kv_replicas to at most the number of JetStream servers in the \
             cluster (1 on a server outside a cluster), or change the placement"
        ),
    )
}

/// A value that expires on its own, as leases and owners' leases are stored (and registry
/// entries were before they lived by their owner's lease, see presence.rs):
/// `{ttl in ms} {owner}`. It expires `ttl` after the server stamped the message that wrote
/// it.
pub(crate) fn encode(owner: &str, ttl: Duration) -> Bytes {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    Bytes::from(format!("{ttl_ms} {owner}"))
}

/// A value of [`encode`]'s, read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expiring<'a> {
    pub(crate) owner: &'a str,
    /// Nanoseconds it had left when read: zero or less once expired.
    pub(crate) left_ns: i128,
}

impl Expiring<'_> {
    pub(crate) fn live(&self) -> bool {
        self.left_ns > 0
    }
}

/// Reads `text`, a value of [`encode`]'s that the server stamped at `created_ns`, at
/// `now_ns`; `None` when it is not one.
pub(crate) fn expiring(text: &str, created_ns: i128, now_ns: i128) -> Option<Expiring<'_>> {
    let (ttl_ms, owner) = text.split_once(' ')?;
    let ttl_ms: i128 = ttl_ms.parse::<u64>().ok()?.into();
    Some(Expiring {
        owner,
        left_ns: created_ns + ttl_ms * 1_000_000 - now_ns,
    })
}

/// The value of an entry that holds one: `None` when it is deleted or not UTF-8.
pub(crate) fn text(entry: &Entry) -> Option<&str> {
    if entry.operation != Operation::Put {
        return None;
    }
    std::str::from_utf8(&entry.value).ok()
}

/// The server's timestamp of the message that wrote `entry`.
pub(crate) fn created_ns(entry: &Entry) -> i128 {
    entry.created.unix_timestamp_nanos()
}

pub(crate) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

/// The owner of a live value of [`encode`]'s, or `None` when it is deleted, expired or
/// unreadable.
fn entry_owner(entry: &Entry, now: i128) -> Option<&str> {
    let value = expiring(text(entry)?, created_ns(entry), now)?;
    value.live().then_some(value.owner)
}

impl Bucket {
    /// Refuses a zero TTL, as every backend does, and one longer than the bucket's max_age.
    pub(crate) fn check_ttl(&self, ttl: Duration) -> Result<(), BackendError> {
        check_ttl(crate::NAME, ttl)?;
        let max_age = self.max_age;
        if !max_age.is_zero() && ttl > max_age {
            return Err(error(
                BackendErrorKind::InvalidInput,
                format!(
                    "a TTL of {ttl:?} is longer than the max_age of the NATS KV bucket {:?} \
                     ({max_age:?}), after which the server deletes entries (raise \
                     NatsConfig::kv_max_age for new buckets)",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    /// The bucket's max_age: the server deletes messages older than this; zero is unlimited.
    pub(crate) fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The last message of `key`: its value, or its deletion.
    pub(crate) async fn entry(&self, key: &str) -> Result<Option<Entry>, BackendError> {
        self.store
            .entry(key)
            .await
            .map_err(|err| kv_error("read", err))
    }

    /// Writes `value` at `key` if its last revision is `revision` (0: no message at all).
    /// Written, it holds the write's revision.
    pub(crate) async fn write(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<Cas, BackendError> {
        match self.store.update(key, value, revision).await {
            Ok(written) => self.confirm(key, written).await,
            Err(err) if is_conflict(&err) => Ok(Cas::Conflict),
            Err(err) => Err(kv_error("write", err)),
        }
    }

    /// Deletes `key` if its last revision is `revision`. A deletion needs no fence: a write
    /// racing it is confirmed by its own writer, who finds the deletion after it and retries,
    /// or stands after it (the deletion happened either way). Written, it holds the revision
    /// of the deletion marker: the deletion is sent as the KV client sends it, but its
    /// acknowledgement is kept, so that the memberships view can apply it (see view.rs).
    pub(crate) async fn delete(&self, key: &str, revision: u64) -> Result<Cas, BackendError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(KV_OPERATION, "DEL");
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            async_nats::HeaderValue::from(revision),
        );
        let subject = format!("{}{key}", self.subject_prefix);
        let acked = async {
            let ack = self
                .context
                .publish_with_headers(subject, headers, Bytes::new())
                .await?;
            ack.await
        };
        match acked.await.map_err(UpdateError::from) {
            Ok(ack) => Ok(Cas::Written(ack.sequence)),
            Err(err) if is_conflict(&err) => Ok(Cas::Conflict),
            Err(err) => Err(kv_error("delete", err)),
        }
    }

    /// The bucket's stream, for the memberships view's consumers.
    pub(crate) fn stream(&self) -> &stream::Stream {
        &self.store.stream
    }

    /// `$KV.{bucket}.`, the subject prefix of every key.
    pub(crate) fn subject_prefix(&self) -> &str {
        &self.subject_prefix
    }

    /// Whether the revision-checked write of revision `written` that the server accepted
    /// stands: whether it is still `key`'s last once every write accepted before it is stored.
    ///
    /// A replicated stream checks the expected revision against what its leader has stored
    /// so far, and some servers (nats-server 2.9) accept a second write expecting the same
    /// revision while the first is still being replicated: both writers would believe they
    /// won. Any write that passed that check before this one's answer is ordered before the
    /// fence written after that answer, so once the fence is stored the entry shows the last
    /// of them, and only its writer is told it won.
    async fn confirm(&self, key: &str, written: u64) -> Result<Cas, BackendError> {
        if !self.fenced {
            return Ok(Cas::Written(written));
        }
        self.store
            .put(names::FENCE_KEY, Bytes::new())
            .await
            .map_err(|err| kv_error("fence write", err))?;
        let last = self.entry(key).await?.map(|entry| entry.revision);
        Ok(if last == Some(written) {
            Cas::Written(written)
        } else {
            Cas::Conflict
        })
    }

    pub(crate) fn contention(key: &str) -> BackendError {
        error(
            BackendErrorKind::Other,
            format!(
                "NATS KV key {} kept changing under {MAX_ATTEMPTS} attempts to update it",
                quote_name(key)
            ),
        )
    }

    /// Creates `key` for `owner` unless a live entry holds it; an expired or deleted entry is
    /// replaced with a revision-checked write, so of racing writers exactly one wins.
    pub(crate) async fn insert(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let value = encode(owner, ttl);
        let mut revision = 0;
        for _ in 0..MAX_ATTEMPTS {
            if let Cas::Written(_) = self.write(key, value.clone(), revision).await? {
                return Ok(true);
            }
            match self.entry(key).await? {
                None => revision = 0,
                Some(entry) if entry_owner(&entry, now_ns()).is_some() => return Ok(false),
                Some(entry) => revision = entry.revision,
            }
        }
        Err(Self::contention(key))
    }

    /// Extends `key` to `ttl` from now if `owner` holds it live.
    pub(crate) async fn renew(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let value = encode(owner, ttl);
        for _ in 0..MAX_ATTEMPTS {
            let Some(entry) = self.entry(key).await? else {
                return Ok(false);
            };
            if entry_owner(&entry, now_ns()) != Some(owner) {
                return Ok(false);
            }
            if let Cas::Written(_) = self.write(key, value.clone(), entry.revision).await? {
                return Ok(true);
            }
        }
        Err(Self::contention(key))
    }

    /// Deletes `key` if it is live and (when `owner` is given) held by `owner`.
    pub(crate) async fn remove(
        &self,
        key: &str,
        owner: Option<&str>,
    ) -> Result<bool, BackendError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(entry) = self.entry(key).await? else {
                return Ok(false);
            };
            match entry_owner(&entry, now_ns()) {
                Some(holder) if owner.is_none_or(|o| o == holder) => {}
                _ => return Ok(false),
            }
            if let Cas::Written(_) = self.delete(key, entry.revision).await? {
                return Ok(true);
            }
        }
        Err(Self::contention(key))
    }

    /// The last message of each key under `root` that holds a value (deleted keys are left
    /// out), with its key: the stream's subjects under the root (one request, a snapshot the
    /// server takes at once), then each key's entry, read concurrently.
    ///
    /// A consumer replaying the last message of each subject would be one request fewer, but
    /// while entries are rewritten it keeps receiving their new messages, so a listing waiting
    /// for it to run dry could miss entries or never end.
    pub(crate) async fn entries_under(&self, root: &str) -> Result<Vec<Entry>, BackendError> {
        let key_prefix = format!("{}{root}", self.subject_prefix);
        let mut subjects = self
            .store
            .stream
            .info_with_subjects(format!("{key_prefix}>"))
            .await
            .map_err(|err| kv_error("listing", err))?;
        let mut keys = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _count) = subject.map_err(|err| kv_error("listing", err))?;
            match subject.strip_prefix(self.subject_prefix.as_str()) {
                Some(key) => keys.push(key.to_owned()),
                None => tracing::warn!(%subject, "skipping a subject outside the KV bucket"),
            }
        }
        let entries = futures_util::future::join_all(keys.iter().map(|key| self.entry(key))).await;
        let mut found = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(entry) = entry? {
                if entry.operation == Operation::Put {
                    found.push(entry);
                }
            }
        }
        Ok(found)
    }
}

/// Whether a revision-checked write lost to another write: its revision was not the last
/// one. A clustered server refuses a write whose revision another write still being
/// replicated will change with a code of its own (10164), which the client does not map to
/// [`UpdateErrorKind::WrongLastRevision`] but passes on as the source of the error.
fn is_conflict(err: &async_nats::error::Error<UpdateErrorKind>) -> bool {
    if err.kind() == UpdateErrorKind::WrongLastRevision {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(js) = cause.downcast_ref::<jetstream::Error>() {
            return js.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT;
        }
        source = cause.source();
    }
    false
}

/// The outcome of a revision-checked write.
pub(crate) enum Cas {
    /// Written at this revision.
    Written(u64),
    Conflict,
}

impl NatsConnection {
    /// Runs a KV operation with the connection check, failing as soon as the connection
    /// drops, and the operation timeout.
    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        self.inner.while_connected(what, op).await
    }

    pub(crate) fn registry_bucket(&self) -> &Bucket {
        &self.inner.kv.registry
    }

    pub(crate) fn locks_bucket(&self) -> &Bucket {
        &self.inner.kv.locks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expire_after_their_ttl() {
        let value = encode("node 1", Duration::from_millis(1500));
        assert_eq!(&value[..], b"1500 node 1");
        let text = std::str::from_utf8(&value).unwrap();
        let created = 1_000_000_000_000;
        let live = |now| expiring(text, created, now).filter(Expiring::live);
        assert_eq!(live(created).unwrap().owner, "node 1");
        assert_eq!(live(created + 1_499_999_999).unwrap().left_ns, 1);
        assert_eq!(live(created + 1_500_000_000), None);
        assert_eq!(expiring("garbage", created, created), None);
        assert_eq!(expiring("@node 1", created, created), None);
    }
}
