//! The Lua scripts that make registry and lock updates atomic.
//!
//! Each runs as one `EVALSHA` (redis-rs falls back to `EVAL` after a server restart flushed
//! the script cache). Registry entries are a member of the group's SET plus a lease key
//! (`{set}:lease:{member}`) holding the owner with a `PX` expiry; an entry is live while
//! both exist.

use redis::Script;

/// The scripts, hashed once per backend handle.
pub(crate) struct Scripts {
    pub(crate) insert: Script,
    pub(crate) renew: Script,
    pub(crate) remove: Script,
    pub(crate) contains: Script,
    pub(crate) members: Script,
    pub(crate) unlock: Script,
    pub(crate) relock: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            insert: Script::new(INSERT),
            renew: Script::new(RENEW),
            remove: Script::new(REMOVE),
            contains: Script::new(CONTAINS),
            members: Script::new(MEMBERS),
            unlock: Script::new(UNLOCK),
            relock: Script::new(RELOCK),
        }
    }
}

/// KEYS: set, lease. ARGV: member, owner, ttl in ms. 1 when inserted, 0 when a live lease
/// exists (whoever holds it).
const INSERT: &str = r"
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  redis.call('SADD', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// KEYS: set, lease 1..n. ARGV: owner, ttl in ms, member 1..n. For each member, 1 when its
/// lease was held by owner and is extended. A lease whose member was removed from the SET
/// by someone else (the Python library's unregister) is deleted instead.
const RENEW: &str = r"
local renewed = {}
for i = 2, #KEYS do
  local ok = 0
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    if redis.call('SISMEMBER', KEYS[1], ARGV[i + 1]) == 1 then
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
      ok = 1
    else
      redis.call('DEL', KEYS[i])
    end
  end
  renewed[#renewed + 1] = ok
end
return renewed
";

/// KEYS: set, lease. ARGV: member, owner, '1' to require owner (else remove whoever holds
/// it). 1 when a live entry was removed.
const REMOVE: &str = r"
local holder = redis.call('GET', KEYS[2])
if ARGV[3] == '1' and holder ~= ARGV[2] then
  return 0
end
local was_member = redis.call('SREM', KEYS[1], ARGV[1])
if holder then
  redis.call('DEL', KEYS[2])
  return was_member
end
return 0
";

/// KEYS: set, lease. ARGV: member. 1 when live; a member whose lease expired is removed
/// from the SET.
const CONTAINS: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 1
end
redis.call('SREM', KEYS[1], ARGV[1])
return 0
";

/// KEYS: set. ARGV: lease key prefix (`{set}:lease:`). The live members; members whose
/// lease expired are removed from the SET. (Lease keys are derived here, not declared: on a
/// Redis Cluster they share the SET's hash tag, so they are on its slot, which a script may
/// touch.)
const MEMBERS: &str = r"
local live = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. member) == 1 then
    live[#live + 1] = member
  else
    redis.call('SREM', KEYS[1], member)
  end
end
return live
";

/// KEYS: lock. ARGV: token. 1 when the token held the lock and it is released.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// KEYS: lock. ARGV: token, ttl in ms. 1 when the token holds the lock and it is extended.
const RELOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";
