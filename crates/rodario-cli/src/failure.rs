//! What went wrong, as one line for stderr and an exit code per kind of mistake.

use rodario::error::{BackendError, BackendErrorKind};
use rodario::{Error, RemoteErrorKind};

/// Anything else: the method failed in the actor, a lock is held by someone else, a reply
/// did not decode.
pub const OTHER: u8 = 1;
/// The command line: a usage error, a bad URL, invalid JSON, an invalid name or duration.
pub const USAGE: u8 = 2;
/// The broker: unreachable, refused the credentials, or the connection dropped.
pub const CONNECTION: u8 = 3;
/// No such actor (or it died while the call waited), or nobody on the cluster channel.
pub const NO_SUCH_ACTOR: u8 = 4;
/// The actor does not serve the method, or the arguments do not fit its parameters.
pub const BAD_CALL: u8 = 5;
/// No answer before the deadline.
pub const TIMEOUT: u8 = 6;

/// A failed command: the message printed on stderr and the process's exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code, one of the constants of this module.
    pub code: u8,
    /// One line saying what failed and what to fix.
    pub message: String,
}

impl Failure {
    /// A failure with exit code `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A mistake on the command line ([`USAGE`]).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }

    /// The message on one line: errors from brokers may carry line breaks of their own.
    pub fn line(&self) -> String {
        self.message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let (code, hint) = match &error {
            Error::InvalidActor { .. } | Error::ActorLost { .. } => {
                (NO_SUCH_ACTOR, "; `rodario actors` lists the live ones")
            }
            Error::EmptyCluster { .. } => (
                NO_SUCH_ACTOR,
                "; check the channel's name, and that its actors run",
            ),
            Error::UnknownMethod { .. } => (BAD_CALL, "; `rodario methods UUID` lists them"),
            Error::Remote {
                kind: RemoteErrorKind::BadArguments,
                ..
            } => (
                BAD_CALL,
                "; pass one JSON value per parameter, of the parameter's type",
            ),
            Error::Timeout { .. } => (TIMEOUT, "; raise --timeout if the actor is slow"),
            Error::InvalidName { .. } | Error::InvalidProxy { .. } => (USAGE, ""),
            Error::Backend(e) if e.kind() == BackendErrorKind::InvalidInput => {
                (USAGE, "; check --url (or RODARIO_URL)")
            }
            Error::Backend(_) | Error::Closed(_) => (
                CONNECTION,
                "; check --url (or RODARIO_URL) and that the broker runs",
            ),
            _ => (OTHER, ""),
        };
        Failure::new(code, format!("{error}{hint}"))
    }
}

impl From<BackendError> for Failure {
    fn from(error: BackendError) -> Self {
        Error::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_kind_has_its_code() {
        let code = |e: Error| Failure::from(e).code;
        assert_eq!(
            code(Error::InvalidActor { uuid: "x".into() }),
            NO_SUCH_ACTOR
        );
        assert_eq!(code(Error::UnknownMethod { method: "m".into() }), BAD_CALL);
        assert_eq!(
            code(Error::Timeout {
                method: "m".into(),
                after: Duration::from_secs(1)
            }),
            TIMEOUT
        );
        let backend = |kind| Error::Backend(BackendError::new("redis", kind, "no"));
        assert_eq!(code(backend(BackendErrorKind::Connection)), CONNECTION);
        assert_eq!(code(backend(BackendErrorKind::InvalidInput)), USAGE);
        assert_eq!(
            code(Error::Remote {
                method: "m".into(),
                kind: RemoteErrorKind::Handler,
                message: "boom".into()
            }),
            OTHER
        );
    }

    #[test]
    fn messages_are_one_line() {
        let failure = Failure::new(OTHER, "first\nsecond  third");
        assert_eq!(failure.line(), "first second third");
    }
}
