//! The registry when Python actors share it: a member of the `actors` SET with no entry key
//! is a Python actor (the Python library writes none), live until it removes itself.
//!
//! rodario's own entries are also listed in the SET `actors:rodario`, so that an entry whose
//! owner's lease ran out (its node died) is still told from a Python actor and removed, as
//! without Python.

use redis::Script;
use rodario_core::error::BackendError;

use crate::names::lease_prefix;
use crate::scripts::with_live_holder;
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
            insert: with_live_holder(INSERT),
            remove: with_live_holder(REMOVE),
            contains: with_live_holder(CONTAINS),
            members: with_live_holder(MEMBERS),
        }
    }
}

/// KEYS: set, entry, rodario set. ARGV: member, owner, owner lease prefix. 1 when inserted,
/// 0 when a live entry or a Python actor holds the member.
const INSERT: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[2]) == 0
    and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then
  return 0
end
if live_holder(KEYS[2], ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
";

/// KEYS: set, entry, rodario set. ARGV: member, owner, '1' to require owner (else remove
/// whoever holds it, and mark a rodario holder's lease disturbed), owner lease prefix. 1
/// when a live entry was removed (a Python actor's too, when no owner is required).
const REMOVE: &str = r"
local live, holder = live_holder(KEYS[2], ARGV[4])
if ARGV[3] == '1' and (not live or holder ~= ARGV[2]) then
  return 0
end
local ours = redis.call('SREM', KEYS[3], ARGV[1])
local was_member = redis.call('SREM', KEYS[1], ARGV[1])
if holder then
  redis.call('DEL', KEYS[2])
  if not live then
    return 0
  end
  if ARGV[3] == '0' then
    redis.call('SET', ARGV[4] .. holder, 'disturbed', 'XX', 'KEEPTTL')
  end
  return was_member
end
if ours == 0 then
  return was_member
end
return 0
";

/// KEYS: set, entry, rodario set. ARGV: member, owner lease prefix. 1 when live: a live
/// entry, or no entry key and not ours (a Python actor). Our member whose owner's lease
/// ended is removed.
const CONTAINS: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local live, holder = live_holder(KEYS[2], ARGV[2])
if live then
  return 1
end
if holder or redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[2])
  return 0
end
return 1
";

/// KEYS: set, rodario set. ARGV: entry key prefix, owner lease prefix. The live members
/// (ours whose owner's lease is live, and Python's); ours whose owner's lease ended are
/// removed.
const MEMBERS: &str = r"
local live = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local entry = ARGV[1] .. member
  local alive, holder = live_holder(entry, ARGV[2])
  if alive then
    live[#live + 1] = member
  elseif holder or redis.call('SISMEMBER', KEYS[2], member) == 1 then
    redis.call('SREM', KEYS[1], member)
    redis.call('SREM', KEYS[2], member)
    redis.call('DEL', entry)
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
        owners: &str,
    ) -> Result<bool, BackendError> {
        let entry = format!("{}{member}", lease_prefix(set));
        let mut script = scripts.insert.key(set);
        script
            .key(&entry)
            .key(rodario_set(set))
            .arg(member)
            .arg(owner)
            .arg(owners);
        let inserted: i64 = self.invoke("registry insert", &script).await?;
        Ok(inserted == 1)
    }

    pub(crate) async fn shared_remove(
        &self,
        scripts: &RegistryScripts,
        set: &str,
        member: &str,
        owner: Option<&str>,
        owners: &str,
    ) -> Result<bool, BackendError> {
        let entry = format!("{}{member}", lease_prefix(set));
        let mut script = scripts.remove.key(set);
        script
            .key(&entry)
            .key(rodario_set(set))
            .arg(member)
            .arg(owner.unwrap_or(""))
            .arg(if owner.is_some() { "1" } else { "0" })
            .arg(owners);
        let removed: i64 = self.invoke("registry remove", &script).await?;
        Ok(removed == 1)
    }

    pub(crate) async fn shared_contains(
        &self,
        scripts: &RegistryScripts,
        set: &str,
        member: &str,
        owners: &str,
    ) -> Result<bool, BackendError> {
        let entry = format!("{}{member}", lease_prefix(set));
        let mut script = scripts.contains.key(set);
        script
            .key(&entry)
            .key(rodario_set(set))
            .arg(member)
            .arg(owners);
        let live: i64 = self.invoke("registry contains", &script).await?;
        Ok(live == 1)
    }

    pub(crate) async fn shared_members(
        &self,
        scripts: &RegistryScripts,
        set: &str,
        owners: &str,
    ) -> Result<Vec<String>, BackendError> {
        let mut script = scripts.members.key(set);
        script
            .key(rodario_set(set))
            .arg(lease_prefix(set))
            .arg(owners);
        self.invoke("registry members", &script).await
    }
}
