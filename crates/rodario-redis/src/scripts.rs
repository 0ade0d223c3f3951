//! The Lua scripts that make registry and lock updates atomic.
//!
//! Each runs as one `EVALSHA` (redis-rs falls back to `EVAL` after a server restart flushed
//! the script cache). A registry entry is a member of the group's SET plus an entry key
//! (`{set}:lease:{member}`) naming its owner; each owner (a node) holds one lease key
//! (`{root}owner:{owner}`, with a `PX` expiry) that its entries live by, so renewing costs
//! one script per node whatever the number of its actors. An entry key with an expiry of
//! its own is an older rodario's per-entry lease, live until it expires. The owner's lease
//! holds `live`, or `disturbed` once another process removed one of its entries.

use redis::Script;

/// The scripts, hashed once per backend handle.
pub(crate) struct Scripts {
    pub(crate) keep_alive: Script,
    pub(crate) insert: Script,
    pub(crate) held: Script,
    pub(crate) remove: Script,
    pub(crate) contains: Script,
    pub(crate) members: Script,
    pub(crate) unlock: Script,
    pub(crate) relock: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            keep_alive: Script::new(KEEP_ALIVE),
            insert: with_live_holder(INSERT),
            held: Script::new(HELD),
            remove: with_live_holder(REMOVE),
            contains: with_live_holder(CONTAINS),
            members: with_live_holder(MEMBERS),
            unlock: Script::new(UNLOCK),
            relock: Script::new(RELOCK),
        }
    }
}

/// `body` after the definition of `live_holder`, which the registry scripts share.
pub(crate) fn with_live_holder(body: &str) -> Script {
    Script::new(&format!("{LIVE_HOLDER}{body}"))
}

/// `live_holder(entry key, owner lease prefix)`: the entry's owner when the entry is live
/// (its owner's lease exists, or it has an expiry of its own: an older rodario's lease),
/// else `false`; and the owner named, live or not (`nil` when there is no entry key). The
/// owner's lease key is derived, not declared: on a Redis Cluster it shares the registry's
/// hash tag, so it is on the slot the script runs on.
const LIVE_HOLDER: &str = r"
local function live_holder(entry, owners)
  local holder = redis.call('GET', entry)
  if not holder then
    return false, nil
  end
  if redis.call('EXISTS', owners .. holder) == 1 or redis.call('PTTL', entry) > 0 then
    return holder, holder
  end
  return false, holder
end
";

/// KEYS: owner lease. ARGV: ttl in ms. Starts or extends the lease; `live` when it was
/// held, `disturbed` when it was held and marked, `lost` when there was none.
const KEEP_ALIVE: &str = r"
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], 'live', 'PX', ARGV[1])
if not old then
  return 'lost'
end
return old
";

/// KEYS: set, entry. ARGV: member, owner, owner lease prefix. 1 when inserted, 0 when a
/// live entry exists (whoever holds it).
const INSERT: &str = r"
if live_holder(KEYS[2], ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
return 1
";

/// KEYS: set, entry 1..n. ARGV: owner, member 1..n. For each member, 1 when its entry names
/// owner. An entry whose member was removed from the SET by someone else (the Python
/// library's unregister) is deleted instead.
const HELD: &str = r"
local held = {}
for i = 2, #KEYS do
  local ok = 0
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
      ok = 1
    else
      redis.call('DEL', KEYS[i])
    end
  end
  held[#held + 1] = ok
end
return held
";

/// KEYS: set, entry. ARGV: member, owner, '1' to require owner (else remove whoever holds
/// it, and mark the holder's lease disturbed), owner lease prefix. 1 when a live entry was
/// removed.
const REMOVE: &str = r"
local live, holder = live_holder(KEYS[2], ARGV[4])
if ARGV[3] == '1' and (not live or holder ~= ARGV[2]) then
  return 0
end
local was_member = redis.call('SREM', KEYS[1], ARGV[1])
if not holder then
  return 0
end
redis.call('DEL', KEYS[2])
if not live then
  return 0
end
if ARGV[3] == '0' then
  redis.call('SET', ARGV[4] .. holder, 'disturbed', 'XX', 'KEEPTTL')
end
return was_member
";

/// KEYS: set, entry. ARGV: member, owner lease prefix. 1 when live; a member whose owner's
/// lease ended is removed.
const CONTAINS: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if live_holder(KEYS[2], ARGV[2]) then
  return 1
end
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 0
";

/// KEYS: set. ARGV: entry key prefix (`{set}:lease:`), owner lease prefix. The live
/// members; members whose owner's lease ended are removed. (Entry keys are derived here,
/// not declared: on a Redis Cluster they share the SET's hash tag.)
const MEMBERS: &str = r"
local live = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local entry = ARGV[1] .. member
  if live_holder(entry, ARGV[2]) then
    live[#live + 1] = member
  else
    redis.call('SREM', KEYS[1], member)
    redis.call('DEL', entry)
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
