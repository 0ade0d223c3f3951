//! The errors a rodario caller can see, and the errors backends report.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `Result` with rodario's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in rodario, as variants a caller can match.
///
/// The first five mirror the Python library's exceptions (`InvalidActorException`,
/// `InvalidProxyException`, `UUIDInUseException`, `RegistrationException`,
/// `EmptyClusterException`); the rest are failures the original left silent.
///
/// Errors are `Clone`, so a caller can keep one after matching (say, to report it later).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No live actor answers at this UUID ("No such actor"): it was never started, was
    /// stopped, or its process died and its registration expired.
    #[error("no such actor: {uuid} (not registered, stopped, or its process died)")]
    InvalidActor {
        /// The UUID that was called.
        uuid: String,
    },
    /// The actor a call waited on is gone: it stopped, or its process died and its
    /// registration lapsed, while the call waited for its reply. The call may or may not
    /// have run (the actor may have died mid-way). Calls made afterwards fail with
    /// [`Error::InvalidActor`].
    #[error("actor {uuid} is gone (stopped, or its process died) while the call waited; it may or may not have run")]
    ActorLost {
        /// The UUID that was called.
        uuid: String,
    },
    /// A proxy could not be built: the UUID is not a valid actor name, or the actor does
    /// not serve the methods the typed proxy needs.
    #[error("invalid proxy: {reason}")]
    InvalidProxy {
        /// What was wrong.
        reason: String,
    },
    /// The UUID is already registered by a live actor; pick another or stop that one.
    #[error("UUID already in use: {uuid}")]
    UuidInUse {
        /// The UUID that was taken.
        uuid: String,
    },
    /// Registering the actor failed in the backend (not because the UUID was taken).
    #[error("registering {uuid} failed: {source}")]
    Registration {
        /// The UUID being registered.
        uuid: String,
        /// What the backend reported.
        #[source]
        source: BackendError,
    },
    /// A cluster call reached nobody: no actor has joined the channel.
    #[error("empty cluster: nobody has joined channel {channel:?}")]
    EmptyCluster {
        /// The cluster channel.
        channel: String,
    },
    /// No reply came before the call's deadline, or the broker did not take the call
    /// (a stalled publish) by then.
    ///
    /// The caller cannot know whether the actor ran the method: it may have run it (and
    /// its reply was lost or late), be running it still, or never have received it (the
    /// brokers deliver at most once). Retry only methods that are safe to run twice. (A
    /// call made while the backend reports its connection down is not sent at all: it
    /// fails at once with [`Error::Backend`] instead.)
    #[error("{method} timed out after {after:?}: the actor may or may not have run it")]
    Timeout {
        /// The method that was called.
        method: String,
        /// How long the caller waited.
        after: Duration,
    },
    /// The actor received the call and answered with an error; it keeps running.
    #[error("{method} failed in the actor ({kind}): {message}")]
    Remote {
        /// The method that was called.
        method: String,
        /// What kind of failure.
        kind: RemoteErrorKind,
        /// The actor's message (a handler's error text, or a panic's payload).
        message: String,
    },
    /// The actor does not serve this method. The message quotes the method's name as
    /// [`quote_name`] does.
    #[error("the actor does not serve a method named {}", quote_name(method))]
    UnknownMethod {
        /// The method that was called.
        method: String,
    },
    /// A hook declined the call (for `singular` methods: another member ran it).
    #[error("{method} was declined by the actor (another member took it)")]
    Declined {
        /// The method that was called.
        method: String,
    },
    /// The actor's mailbox was full, so the call was shed instead of queued; retry later or
    /// raise the mailbox capacity.
    #[error("actor {uuid} is overloaded: its mailbox is full, the call was shed")]
    Overloaded {
        /// The actor that shed the call.
        uuid: String,
    },
    /// A value could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(#[from] CodecError),
    /// A frame was refused: too large, wrong version, unknown codec, or malformed.
    #[error("frame error: {0}")]
    Frame(#[from] FrameError),
    /// A name (UUID, cluster channel, lock name) is not valid. The message quotes the name
    /// as [`quote_name`] does; the `name` field holds it whole.
    #[error("invalid {what} {}: {reason}", quote_name(name))]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// The name given, whole.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// The backend failed (connection lost, refused, authentication, protocol).
    #[error("backend error: {0}")]
    Backend(#[from] BackendError),
    /// The node or actor was shut down while the operation was under way.
    #[error("closed: {0}")]
    Closed(&'static str),
}

/// The most characters of a name that [`quote_name`] quotes.
pub const QUOTED_NAME_CHARS: usize = 64;

/// `name` as an error message quotes it: in double quotes with Rust's string escapes, whole
/// when it has at most [`QUOTED_NAME_CHARS`] characters; otherwise only its first
/// [`QUOTED_NAME_CHARS`] characters, followed by `…` and its length in bytes.
///
/// Names come from callers and from the wire; a 10 KB name refused for its length must not
/// make a 10 KB message or log line. Backends use this too when they refuse a name.
///
/// ```
/// use rodario_core::error::quote_name;
/// assert_eq!(quote_name("a.b"), "\"a.b\"");
/// let long = quote_name(&"x".repeat(10_000));
/// assert!(long.len() < 100 && long.ends_with("… (10000 bytes)"), "{long}");
/// ```
pub fn quote_name(name: &str) -> String {
    match name.char_indices().nth(QUOTED_NAME_CHARS) {
        None => format!("{name:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &name[..end], name.len()),
    }
}

impl Error {
    /// True when retrying the same operation later may succeed (timeouts, overload,
    /// connection failures); false for errors that repeat (bad names, unknown methods).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Overloaded { .. } => true,
            Error::Backend(e) => e.kind() == BackendErrorKind::Connection,
            _ => false,
        }
    }
}

/// Why an actor answered a call with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The method returned an `Err`.
    Handler,
    /// The method panicked; the actor caught it and keeps running (its state may be
    /// partly updated).
    Panic,
    /// The arguments did not decode as the method's parameters.
    BadArguments,
    /// A hook returned an error.
    Hook,
    /// The method is not served (mapped to [`Error::UnknownMethod`] for callers).
    UnknownMethod,
    /// The mailbox was full (mapped to [`Error::Overloaded`] for callers).
    Overloaded,
    /// The actor stopped before handling the call (mapped to [`Error::InvalidActor`]).
    Stopped,
}

impl fmt::Display for RemoteErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteErrorKind::Handler => "handler error",
            RemoteErrorKind::Panic => "panic",
            RemoteErrorKind::BadArguments => "bad arguments",
            RemoteErrorKind::Hook => "hook error",
            RemoteErrorKind::UnknownMethod => "unknown method",
            RemoteErrorKind::Overloaded => "overloaded",
            RemoteErrorKind::Stopped => "stopped",
        })
    }
}

/// An error an actor sends back in place of a value; on the caller's side it becomes an
/// [`Error`]. Hooks and handlers build it with [`RemoteError::new`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RemoteError {
    /// What kind of failure.
    pub kind: RemoteErrorKind,
    /// A message for the caller.
    pub message: String,
}

impl RemoteError {
    /// An error of `kind` carrying `message`.
    pub fn new(kind: RemoteErrorKind, message: impl Into<String>) -> Self {
        RemoteError {
            kind,
            message: message.into(),
        }
    }

    /// The caller-side [`Error`] for this reply to `method` sent to `uuid`.
    pub(crate) fn into_error(self, method: &str, uuid: &str) -> Error {
        match self.kind {
            RemoteErrorKind::UnknownMethod => Error::UnknownMethod {
                method: method.to_owned(),
            },
            RemoteErrorKind::Overloaded => Error::Overloaded {
                uuid: uuid.to_owned(),
            },
            RemoteErrorKind::Stopped => Error::InvalidActor {
                uuid: uuid.to_owned(),
            },
            kind => Error::Remote {
                method: method.to_owned(),
                kind,
                message: self.message,
            },
        }
    }
}

/// A value that could not be encoded or decoded with the frame's codec.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Encoding a value failed (for example a map with non-string keys where the codec
    /// needs strings).
    #[error("cannot encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The codec's message.
        message: String,
    },
    /// The bytes did not decode as the expected type.
    #[error("cannot decode {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The codec's message.
        message: String,
    },
}

/// A frame a receiver refuses, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is larger than the configured limit (see `NodeBuilder::max_frame_bytes`;
    /// NATS refuses payloads over its `max_payload`, 1 MiB by default).
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The frame is shorter than its header.
    #[error("frame of {size} bytes is shorter than the 2-byte header")]
    Truncated {
        /// The frame's size.
        size: usize,
    },
    /// The frame's version byte is not one this build reads.
    #[error("frame version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The frame's codec tag is not one this build reads.
    #[error("codec tag {0} is not supported by this build")]
    UnsupportedCodec(u8),
    /// The body did not decode as a rodario frame.
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// The frame decoded, but is not the kind expected on this channel.
    #[error("unexpected {found} frame on a channel that carries {expected} frames")]
    Unexpected {
        /// What was found.
        found: &'static str,
        /// What the channel carries.
        expected: &'static str,
    },
}

/// Broad classes of backend failure, for callers deciding whether to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The broker could not be reached, or the connection dropped.
    Connection,
    /// The broker refused the credentials or the operation's permissions.
    Auth,
    /// The broker answered something the backend did not expect.
    Protocol,
    /// The request is not valid for this backend (for example a name it cannot carry).
    InvalidInput,
    /// Anything else.
    Other,
}

/// An error reported by a backend adapter: which backend, what kind, and the cause.
/// Cloning shares the cause.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct BackendError {
    backend: &'static str,
    kind: BackendErrorKind,
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl BackendError {
    /// An error from `backend` (for example `"redis"`) of `kind`, saying `message`.
    pub fn new(backend: &'static str, kind: BackendErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            backend,
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The backend that failed.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// What kind of failure.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// The message, without the backend's name.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::ActorId;

    #[test]
    fn short_names_are_quoted_whole() {
        assert_eq!(quote_name(""), "\"\"");
        assert_eq!(quote_name("a \"b\""), "\"a \\\"b\\\"\"");
        let exactly = "é".repeat(QUOTED_NAME_CHARS);
        assert_eq!(quote_name(&exactly), format!("{exactly:?}"));
    }

    #[test]
    fn long_names_are_cut_and_their_length_stated() {
        let huge = "x".repeat(10 * 1024);
        let quoted = quote_name(&huge);
        assert_eq!(
            quoted,
            format!("{:?}… (10240 bytes)", "x".repeat(QUOTED_NAME_CHARS))
        );
        // Cut on a character boundary, however wide the characters.
        let wide = "🦀".repeat(QUOTED_NAME_CHARS + 1);
        assert_eq!(
            quote_name(&wide),
            format!(
                "{:?}… ({} bytes)",
                "🦀".repeat(QUOTED_NAME_CHARS),
                wide.len()
            )
        );
    }

    #[test]
    fn a_refused_huge_name_makes_a_short_message() {
        let huge = "x".repeat(10 * 1024);
        let err = ActorId::new(&huge).unwrap_err();
        let message = err.to_string();
        assert!(message.len() < 200, "{} bytes: {message}", message.len());
        assert!(message.contains("10240 bytes"), "{message}");
        assert!(matches!(err, Error::InvalidName { ref name, .. } if *name == huge));
        let unknown = Error::UnknownMethod { method: huge };
        assert!(unknown.to_string().len() < 200, "{unknown}");
    }
}
