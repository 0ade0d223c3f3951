//! Validated names: actor UUIDs, node ids, cluster channels.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest name accepted, in bytes; keeps keys and subjects well inside every broker's limits.
pub const MAX_NAME_LEN: usize = 200;

fn check(what: &'static str, name: &str) -> Result<()> {
    let refuse = |reason: &str| Error::InvalidName {
        what,
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(refuse("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(refuse(&format!("it is longer than {MAX_NAME_LEN} bytes")));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse("it contains whitespace or control characters"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(Arc<str>);

        impl $ty {
            #[doc = concat!("A ", $what, " from `name`; empty names, names over [`MAX_NAME_LEN`] bytes and names with whitespace or control characters are refused with [`Error::InvalidName`].")]
            pub fn new(name: impl AsRef<str>) -> Result<Self> {
                let name = name.as_ref();
                check($what, name)?;
                Ok($ty(Arc::from(name)))
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $ty::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                $ty::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                $ty::new(s)
            }
        }
    };
}

name_type!(
    /// An actor's UUID: any valid name (the Python library accepts `"rodario"` as readily as a
    /// UUID); [`ActorId::generate`] makes a random v4 UUID.
    ActorId,
    "actor UUID"
);

name_type!(
    /// A node's id: the `proxyid` of the node's reply channel, shared by all its proxies.
    NodeId,
    "node id"
);

name_type!(
    /// The name of a cluster channel that actors join and cluster proxies broadcast to.
    ClusterName,
    "cluster channel"
);

impl ActorId {
    /// The UUID, shared: a metric label without a copy.
    #[cfg(feature = "metrics")]
    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// A fresh random (v4) UUID.
    pub fn generate() -> Self {
        ActorId(Arc::from(uuid::Uuid::new_v4().to_string()))
    }
}

impl NodeId {
    /// A fresh random node id (a v4 UUID without dashes).
    pub fn generate() -> Self {
        NodeId(Arc::from(uuid::Uuid::new_v4().simple().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_long_and_spaced_names() {
        assert!(matches!(ActorId::new(""), Err(Error::InvalidName { .. })));
        assert!(ActorId::new("a b").is_err());
        assert!(ActorId::new("a\n").is_err());
        assert!(ActorId::new("x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert_eq!(ActorId::new("rodario").unwrap().as_str(), "rodario");
    }

    #[test]
    fn generated_ids_are_v4_uuids() {
        let id = ActorId::generate();
        let parsed = uuid::Uuid::parse_str(id.as_str()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(ActorId::generate(), id);
    }
}
