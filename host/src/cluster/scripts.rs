//! The Lua scripts that make each multi-key change atomic in Redis.
//!
//! Key layout (every key starts with `wharf:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `kv:{len}:{ns}:{key}` | string | a value (with its TTL) |
//! | `kvi:{len}:{ns}` | sorted set, score 0 | the namespace's keys, for ordered `list-keys` |
//! | `c:{id}` | hash | route, plugin, addr, at, host of an open connection; `mbytes`, the bytes of its metadata |
//! | `cm:{id}` / `cmo:{id}` | hash / list | its metadata / the metadata keys in insertion order |
//! | `cc:{id}` | list | its channels, in subscription order |
//! | `ch:{name}` | set | a channel's members |
//! | `conns` / `rc:{route}` | sorted set, score 0 | open connections as 20-digit ids, all / per route |
//! | `h:{host}:conns` | set | the connections a host holds |
//! | `h:{host}:alive` | string with TTL | the host's heartbeat |
//! | `hosts` / `hosts:next` | set / counter | registered hosts / the last host number handed out |

use std::sync::LazyLock;

use redis::Script;

/// `record(id)`: a connection's record as `{route, plugin, addr, at, host,
/// {key, value, ...}, {channel, ...}}`, or false. `close(id)`: removes it
/// everywhere and returns it.
const RECORD_FNS: &str = r#"
local function record(id)
  local r = redis.call('HMGET', 'wharf:c:' .. id, 'route', 'plugin', 'addr', 'at', 'host')
  if not r[1] then return false end
  local meta = {}
  for _, k in ipairs(redis.call('LRANGE', 'wharf:cmo:' .. id, 0, -1)) do
    local v = redis.call('HGET', 'wharf:cm:' .. id, k)
    if v then table.insert(meta, k); table.insert(meta, v) end
  end
  return {r[1], r[2], r[3], r[4], r[5], meta, redis.call('LRANGE', 'wharf:cc:' .. id, 0, -1)}
end

local function close(id)
  local r = record(id)
  if not r then return false end
  for _, ch in ipairs(r[7]) do redis.call('SREM', 'wharf:ch:' .. ch, id) end
  local padded = string.rep('0', 20 - #id) .. id
  redis.call('DEL', 'wharf:c:' .. id, 'wharf:cm:' .. id, 'wharf:cmo:' .. id, 'wharf:cc:' .. id)
  redis.call('ZREM', 'wharf:conns', padded)
  redis.call('ZREM', 'wharf:rc:' .. r[1], padded)
  redis.call('SREM', 'wharf:h:' .. r[5] .. ':conns', id)
  return r
end
"#;

/// Removes a connection everywhere; returns its record, or nil. ARGV: id.
pub static CLOSE: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{RECORD_FNS}\nreturn close(ARGV[1])")));

/// Writes a whole connection record, replacing any earlier one.
/// ARGV: id, route, plugin, addr, at, host, n_meta, (key, value) * n_meta, channels...
pub static OPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{RECORD_FNS}
local id = ARGV[1]
close(id)
local padded = string.rep('0', 20 - #id) .. id
redis.call('HSET', 'wharf:c:' .. id, 'route', ARGV[2], 'plugin', ARGV[3], 'addr', ARGV[4], 'at', ARGV[5], 'host', ARGV[6])
redis.call('ZADD', 'wharf:conns', 0, padded)
redis.call('ZADD', 'wharf:rc:' .. ARGV[2], 0, padded)
redis.call('SADD', 'wharf:h:' .. ARGV[6] .. ':conns', id)
local n = tonumber(ARGV[7])
local i = 8
local bytes = 0
for _ = 1, n do
  redis.call('HSET', 'wharf:cm:' .. id, ARGV[i], ARGV[i + 1])
  redis.call('RPUSH', 'wharf:cmo:' .. id, ARGV[i])
  bytes = bytes + #ARGV[i] + #ARGV[i + 1]
  i = i + 2
end
redis.call('HSET', 'wharf:c:' .. id, 'mbytes', bytes)
while i <= #ARGV do
  redis.call('RPUSH', 'wharf:cc:' .. id, ARGV[i])
  redis.call('SADD', 'wharf:ch:' .. ARGV[i], id)
  i = i + 1
end
return 1"#
    ))
});

/// A connection's record, or nil. ARGV: id.
pub static READ: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{RECORD_FNS}\nreturn record(ARGV[1])")));

/// A page of connections in id order: `{id, record-or-nil, ...}`.
/// ARGV: the sorted set (`wharf:conns` or `wharf:rc:{route}`), the
/// ZRANGEBYLEX start (`-` or `(` and a 20-digit id), the most to return.
pub static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{RECORD_FNS}
local out = {{}}
for _, p in ipairs(redis.call('ZRANGEBYLEX', ARGV[1], ARGV[2], '+', 'LIMIT', 0, ARGV[3])) do
  local id = (string.gsub(p, '^0+', ''))
  table.insert(out, id)
  table.insert(out, record(id))
end
return out"#
    ))
});

/// Metadata of an open connection: `{0}` when it is not open, `{2}` when a
/// set would pass the caps, else `{1, value-or-nil}` for get and `{1}` for
/// set and delete.
/// ARGV: op (`get`, `set`, `del`), id, key, value, most keys, most bytes.
pub static METADATA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local op, id, k = ARGV[1], ARGV[2], ARGV[3]
local c, cm = 'wharf:c:' .. id, 'wharf:cm:' .. id
if redis.call('EXISTS', c) == 0 then return {0} end
if op == 'get' then return {1, redis.call('HGET', cm, k)} end
local exists = redis.call('HEXISTS', cm, k) == 1
local old = exists and (#k + redis.call('HSTRLEN', cm, k)) or 0
local used = tonumber(redis.call('HGET', c, 'mbytes') or '0')
if op == 'set' then
  local bytes = used - old + #k + #ARGV[4]
  if (not exists and redis.call('HLEN', cm) >= tonumber(ARGV[5])) or bytes > tonumber(ARGV[6]) then return {2} end
  redis.call('HSET', c, 'mbytes', bytes)
  if redis.call('HSET', cm, k, ARGV[4]) == 1 then redis.call('RPUSH', 'wharf:cmo:' .. id, k) end
elseif exists then
  redis.call('HDEL', cm, k)
  redis.call('LREM', 'wharf:cmo:' .. id, 0, k)
  redis.call('HSET', c, 'mbytes', used - old)
end
return {1}"#,
    )
});

/// Channel membership of an open connection: 0 when it is not open, 2 when
/// a subscribe would pass the cap. ARGV: op (`sub`, `unsub`), id, channel,
/// most channels.
pub static MEMBERSHIP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local op, id, ch = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', 'wharf:c:' .. id) == 0 then return 0 end
if op == 'sub' then
  if redis.call('SISMEMBER', 'wharf:ch:' .. ch, id) == 1 then return 1 end
  if redis.call('LLEN', 'wharf:cc:' .. id) >= tonumber(ARGV[4]) then return 2 end
  redis.call('SADD', 'wharf:ch:' .. ch, id)
  redis.call('RPUSH', 'wharf:cc:' .. id, ch)
else
  redis.call('SREM', 'wharf:ch:' .. ch, id)
  redis.call('LREM', 'wharf:cc:' .. id, 0, ch)
end
return 1"#,
    )
});

/// KEYS: value key, index. ARGV: key, value, ttl ms (0: none).
pub static KV_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else redis.call('SET', KEYS[1], ARGV[2]) end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1"#,
    )
});

/// KEYS: value key, index. ARGV: key. Whether the key existed (unexpired).
pub static KV_DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n"#,
    )
});

/// KEYS: value key, index. ARGV: key, delta. `{1, n}`, or `{0}` when the
/// value is not an integer or the sum overflows.
pub static KV_INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.pcall('INCRBY', KEYS[1], ARGV[2])
if type(n) == 'table' and n.err then return {0} end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return {1, n}"#,
    )
});

/// KEYS: value key, index. ARGV: key, has-expected (`1`/`0`), expected,
/// value. Whether the swap happened.
pub static KV_CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if ARGV[2] == '1' then
  if cur ~= ARGV[3] then return 0 end
elseif cur then
  return 0
end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1"#,
    )
});

/// Keys of a namespace in order, skipping (and forgetting) expired ones.
/// KEYS: index. ARGV: value key prefix, range start, range end, limit.
pub static KV_LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out, min, limit = {}, ARGV[2], tonumber(ARGV[4])
while #out < limit do
  local batch = redis.call('ZRANGEBYLEX', KEYS[1], min, ARGV[3], 'LIMIT', 0, 256)
  if #batch == 0 then break end
  for _, k in ipairs(batch) do
    if redis.call('EXISTS', ARGV[1] .. k) == 1 then
      if #out < limit then table.insert(out, k) end
    else
      redis.call('ZREM', KEYS[1], k)
    end
  end
  min = '(' .. batch[#batch]
end
return out"#,
    )
});

/// Registers a host: its heartbeat (holding this host process's token),
/// into `hosts`, and `hosts:next` at least this host's number (a Redis that
/// lost its data must not hand the number out again). 0 when another host
/// process holds the number. ARGV: host, heartbeat ms, token.
pub static REGISTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local h = ARGV[1]
local key = 'wharf:h:' .. h .. ':alive'
local cur = redis.call('GET', key)
if cur and cur ~= ARGV[3] then return 0 end
redis.call('SET', key, ARGV[3], 'PX', ARGV[2])
redis.call('SADD', 'wharf:hosts', h)
local next = tonumber(redis.call('GET', 'wharf:hosts:next') or '0')
if next < tonumber(h) then redis.call('SET', 'wharf:hosts:next', h) end
return 1"#,
    )
});

/// Renews a host's heartbeat: 1 when it is registered, 0 when Redis forgot
/// it, -1 when another host process holds its number.
/// ARGV: host, heartbeat ms, token.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local key = 'wharf:h:' .. ARGV[1] .. ':alive'
local cur = redis.call('GET', key)
if cur and cur ~= ARGV[3] then return -1 end
redis.call('SET', key, ARGV[3], 'PX', ARGV[2])
return redis.call('SISMEMBER', 'wharf:hosts', ARGV[1])"#,
    )
});

/// Removes a dead host's connections everywhere, unless it came back.
/// ARGV: host. How many connections were removed, or -1 when it is alive.
pub static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{RECORD_FNS}
local h = ARGV[1]
if redis.call('EXISTS', 'wharf:h:' .. h .. ':alive') == 1 then return -1 end
local ids = redis.call('SMEMBERS', 'wharf:h:' .. h .. ':conns')
for _, id in ipairs(ids) do close(id) end
redis.call('DEL', 'wharf:h:' .. h .. ':conns')
redis.call('SREM', 'wharf:hosts', h)
return #ids"#
    ))
});
