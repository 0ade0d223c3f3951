//! How logical names map to Redis keys and channels: the Python library's names behind the
//! prefix (the table in the crate docs).

use rodario_core::backend::{Channel, Group, LockKey};

use crate::Inner;

impl Inner {
    pub(crate) fn channel_name(&self, channel: &Channel) -> String {
        format!("{}{}", self.prefix, channel.default_name())
    }

    pub(crate) fn set_name(&self, group: Group<'_>) -> String {
        format!("{}{}", self.prefix, group.default_name())
    }

    pub(crate) fn lock_name(&self, key: &LockKey) -> String {
        format!("{}{}", self.prefix, key.default_name())
    }
}

/// The lease key prefix of `set`: a member's lease is this followed by the member.
pub(crate) fn lease_prefix(set: &str) -> String {
    format!("{set}:lease:")
}
