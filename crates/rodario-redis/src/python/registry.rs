//! The registry when Python actors share it: a member of the `actors` SET with no lease is
//! a Python actor (the Python library writes no lease), live until it removes itself.
//!
//! rodario's own entries are also listed in the SET `actors:rodario`, so that an entry whose
//! lease ran out (its node died) is still told from a Python actor and removed, as without
//! Python.

use redis::Script;
use rodario_core::error::BackendError;

use crate::names::lease_prefix;
use crate::Inner;

/// The name of the SET of rodario's entries of `set`.
fn rodario_set(set: &str) -> String {
    format!("{set}:rodario")
}

/// The scripts, hashed once per backend handle.
pub(crate) struct RegistryScripts {
    insert: Script,
    remove: Script,
    contains: Script,
    members: Script,
}

impl RegistryScripts {
    pub(crate) fn new() -> Self {
        RegistryScripts {
            insert: Script::new(INSERT),
            remove: Script::new(REMOVE),
            contains: Script::new(CONTAINS),
            members: Script::new(MEMBERS),
        }
    }
}

/// KEYS: set, lease, rodario set. ARGV: member, owner, ttl in ms. 1 when inserted, 0 when a
/// live lease or a Python actor holds the member.
const INSERT: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[2]) == 0
    and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then
  return 0
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[3], ARGV[1])
  return 1
end
return 0
";

/// KEYS: set, lease, rodario set. ARGV: member, owner, '1' to require owner. 1 when a live
/// entry was removed (a Python actor's too, when no owner is required).
const REMOVE: &str = r"
local holder = redis.call('GET', KEYS[2])
if ARGV[3] == '1' and holder ~= ARGV[2] then
  return 0
end
local ours = redis.call('SREM', KEYS[3], ARGV[1])
local was_member = redis.call('SREM', KEYS[1], ARGV[1])
if holder then
  redis.call('DEL', KEYS[2])
  return was_member
end
if ours == 0 then
  return was_member
end
return 0
";

/// KEYS: set, lease, rodario set. ARGV: member. 1 when live: a lease, or no lease and not
/// ours (a Python actor). Our member whose lease expired is removed.
const CONTAINS: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 1
end
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
  return 0
end
return 1
";

/// KEYS: set, rodario set. ARGV: lease key prefix. The live members (leased, or Python's);
/// ours whose lease expired are removed.
const MEMBERS: &str = r"
local live = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. member) == 1 then
    live[#live + 1] = member
  elseif redis.call('SISMEMBER', KEYS[2], member) == 1 then
    redis.call('SREM', KEYS[1], member)
    redis.call('SREM', KEYS[2], member)
  else
    live[#live + 1] = member
  end
end
return live
";

impl Inner {
    pub(crate) async fn shared_insert(
        &self,
        scripts: &RegistryScripts,
        set: &str,
        member: &str,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<bool, BackendError> {
        let lease = format!("{}{member}", lease_prefix(set));
        let mut script = scripts.insert.key(set);
        script
            .key(&lease)
            .key(rodario_set(set))
            .arg(member)
            .arg(owner)
            .arg(ttl_ms);
        let inserted: i64 = self.invoke("registry insert", &script).await?;
        Ok(inserted == 1)
    }

    pub(crate) async fn shared_remove(
        &self,
        scripts: &RegistryScripts,
        set: &str,
        member: &str,
        owner: Option<&str>,
    ) -> Result<bool, BackendError> {
        let lease = format!("{}{member}", lease_prefix(set));
        let mut script = scripts.remove.key(set);
        script
            .key(&lease)
            .key(rodario_set(set))
            .arg(member)
            .arg(owner.unwrap_or(""))
            .arg(if owner.is_some() { "1" } else { "0" });
        let removed: i64 = self.invoke("registry remove", &script).await?;
        Ok(removed == 1)
    }

    pub(crate) async fn shared_contains(
        &self,
        scripts: &RegistryScripts,
        set: &str,
        member: &str,
    ) -> Result<bool, BackendError> {
        let lease = format!("{}{member}", lease_prefix(set));
        let mut script = scripts.contains.key(set);
        script.key(&lease).key(rodario_set(set)).arg(member);
        let live: i64 = self.invoke("registry contains", &script).await?;
        Ok(live == 1)
    }

    pub(crate) async fn shared_members(
        &self,
        scripts: &RegistryScripts,
        set: &str,
    ) -> Result<Vec<String>, BackendError> {
        let mut script = scripts.members.key(set);
        script.key(rodario_set(set)).arg(lease_prefix(set));
        self.invoke("registry members", &script).await
    }
}
