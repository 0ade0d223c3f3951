//! How logical names map to the broker's: the Python library's names behind the
//! connection's prefix.

use std::sync::Arc;

use rodario_core::backend::{Channel, Group, LockKey};

use crate::MemoryConnection;

/// A channel as the broker names it: the connection's prefix and the logical channel
/// (kept apart rather than formatted into one string, so publishing allocates nothing).
pub(crate) type ChannelKey = (Arc<str>, Channel);

impl MemoryConnection {
    pub(crate) fn channel_key(&self, channel: &Channel) -> ChannelKey {
        (self.prefix.clone(), channel.clone())
    }

    pub(crate) fn group_name(&self, group: Group<'_>) -> String {
        format!("{}{}", self.prefix, group.default_name())
    }

    pub(crate) fn lock_name(&self, key: &LockKey) -> String {
        format!("{}{}", self.prefix, key.default_name())
    }
}
