//! How logical names map to Redis keys and channels: the Python library's names behind the
//! prefix on one server; on a cluster, the presence keys (registry and memberships, with
//! their leases) under one hash tag (the tables in the crate docs).

use std::io::Write;

use rodario_core::backend::{Channel, Group, LockKey};

use crate::Inner;

/// What follows the prefix in the cluster's hash tag of presence keys: `{` prefix
/// `rodario}`. A tag must not be empty (`{}` is no tag), and the prefix alone may be.
const CLUSTER_TAG: &str = "rodario";

/// The start of every presence key (the group SETs and their lease keys): the prefix on one
/// server, `{prefix rodario}` on a cluster, so that every presence key of a prefix hashes to
/// one slot and each registry script touches one slot.
pub(crate) fn presence_root(prefix: &str, cluster: bool) -> String {
    if cluster {
        format!("{{{prefix}{CLUSTER_TAG}}}")
    } else {
        prefix.to_owned()
    }
}

/// A channel's name as a command argument: the prefix and the channel's two parts, written
/// into the command's buffer as one argument without a `String` of their own (every call's
/// `PUBLISH` names a channel).
pub(crate) struct ChannelArg<'a>([&'a str; 3]);

impl ChannelArg<'_> {
    /// The name's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(|part| part.len()).sum()
    }
}

impl redis::ToRedisArgs for ChannelArg<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        for part in self.0 {
            // The writer appends to the command's buffer, which cannot fail.
            let _ = arg.write_all(part.as_bytes());
        }
    }
}

impl Inner {
    pub(crate) fn channel_name(&self, channel: &Channel) -> String {
        self.channel_arg(channel).0.concat()
    }

    /// [`Inner::channel_name`] as a command argument.
    pub(crate) fn channel_arg<'a>(&'a self, channel: &'a Channel) -> ChannelArg<'a> {
        let (kind, id) = channel.name_parts();
        ChannelArg([self.prefix.as_str(), kind, id])
    }

    pub(crate) fn set_name(&self, group: Group<'_>) -> String {
        format!("{}{}", self.presence_root, group.default_name())
    }

    /// The start of every owner's lease key: the lease of owner `o` is this followed by `o`.
    pub(crate) fn owner_lease_prefix(&self) -> String {
        format!("{}owner:", self.presence_root)
    }

    /// The lease key of `owner` (a node), which its registry entries live by.
    pub(crate) fn owner_lease(&self, owner: &str) -> String {
        format!("{}{owner}", self.owner_lease_prefix())
    }

    pub(crate) fn lock_name(&self, key: &LockKey) -> String {
        format!("{}{}", self.prefix, key.default_name())
    }
}

/// The entry key prefix of `set`: a member's entry key (naming its owner) is this followed
/// by the member. (Named `lease` since entries had leases of their own; older rodario
/// versions still read them there.)
pub(crate) fn lease_prefix(set: &str) -> String {
    format!("{set}:lease:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_keeps_the_prefix_alone() {
        assert_eq!(presence_root("", false), "");
        assert_eq!(presence_root("t2:", false), "t2:");
    }

    #[test]
    fn a_cluster_tags_presence_keys_even_without_a_prefix() {
        assert_eq!(presence_root("", true), "{rodario}");
        assert_eq!(presence_root("t2:", true), "{t2:rodario}");
    }

    #[test]
    fn a_channel_argument_packs_as_its_name_would() {
        let mut written = redis::cmd("PUBLISH");
        written
            .arg(ChannelArg(["t2:", "actor:", "svc"]))
            .arg("frame");
        let mut named = redis::cmd("PUBLISH");
        named.arg("t2:actor:svc").arg("frame");
        assert_eq!(written.get_packed_command(), named.get_packed_command());
        assert_eq!(
            ChannelArg(["t2:", "actor:", "svc"]).len(),
            "t2:actor:svc".len()
        );
        let mut empty = redis::cmd("PUBLISH");
        empty.arg(ChannelArg(["", "", ""]));
        assert_eq!(
            empty.get_packed_command(),
            redis::cmd("PUBLISH").arg("").get_packed_command()
        );
    }
}
