//! The Lua scripts that make each multi-key change atomic in Redis.
//!
//! Key layout (every key starts with `wharf:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `kv:{len}:{ns}:{key}` | string | a value (with its TTL) |
//! | `kvi:{len}:{ns}` | sorted set, score 0 | the namespace's keys, for ordered `list-keys` |
//! | `kvs:{len}:{ns}` | hash | each key's size (key and value bytes), as its quota counts it |
//! | `kvx:{len}:{ns}` | sorted set, score: Unix ms | when each key with a TTL expires, so that its size is forgotten |
//! | `kvu:{len}:{ns}` | hash | `keys` and `bytes` of the namespace |
//! | `c:{id}` | hash | route, plugin, addr, at, host of an open connection; `mbytes`, the bytes of its metadata |
//! | `cm:{id}` / `cmo:{id}` | hash / list | its metadata / the metadata keys in insertion order |
//! | `cc:{id}` | list | its channels, in subscription order |
//! | `ch:{name}` | set | a channel's members |
//! | `conns` / `rc:{route}` | sorted set, score 0 | open connections as 20-digit ids, all / per route |
//! | `h:{host}:conns` | set | the connections a host holds |
//! | `h:{host}:alive` | string with TTL | the host's heartbeat |
//! | `hosts` / `hosts:next` | set / counter | registered hosts / the last host number handed out |
//! | `hm:{channel}` | hash | a channel's history: `epoch`, `top` (the last offset), `bytes` (of the kept payloads) |
//! | `hl:{channel}` | list | its kept publications, oldest first, each its offset (20 digits), `at_ms` (13 digits), kind (`0` text, `1` binary), payload |
//! | `tm:{len}:{plugin}` | hash | a plugin's pending timers: name → the timer (`store::timers::encode`) |
//! | `tq` | sorted set, score: Unix ms | every pending timer as `{len}:{plugin}{name}`, by when it is due, or, while a host holds its lease, when the lease ends |

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

/// What every key/value script shares. KEYS: value key, index, sizes,
/// expiries, usage (see the table above). `reclaim(prefix)` forgets up to
/// 256 keys whose TTL has passed (Redis dropped their values; `prefix` is
/// the namespace's value key prefix); `charge(k, new, max_keys,
/// max_bytes)` records key `k` at `new` bytes if the namespace's quota
/// admits it (a change that adds no key and no bytes always fits);
/// `forget(k)` removes `k` from the counts and indexes; `expire_at(k, ms)`
/// records when `k` expires (0: never).
const KV_FNS: &str = r#"
local vkey, index, sizes, exps, usage = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function forget(k)
  local size = redis.call('HGET', sizes, k)
  if size then
    redis.call('HDEL', sizes, k)
    redis.call('HINCRBY', usage, 'keys', -1)
    redis.call('HINCRBY', usage, 'bytes', -tonumber(size))
  end
  redis.call('ZREM', index, k)
  redis.call('ZREM', exps, k)
end
local function reclaim(prefix)
  local now = now_ms()
  for _, k in ipairs(redis.call('ZRANGEBYSCORE', exps, '-inf', now, 'LIMIT', 0, 256)) do
    local ttl = redis.call('PTTL', prefix .. k)
    if ttl == -2 then forget(k)
    elseif ttl == -1 then redis.call('ZREM', exps, k)
    else redis.call('ZADD', exps, now + ttl, k) end
  end
end
local function charge(k, new, max_keys, max_bytes)
  local old = redis.call('HGET', sizes, k)
  local before = old and tonumber(old) or 0
  local keys = tonumber(redis.call('HGET', usage, 'keys') or '0')
  local bytes = tonumber(redis.call('HGET', usage, 'bytes') or '0')
  if (not old and keys >= max_keys) or (new > before and bytes - before + new > max_bytes) then return false end
  redis.call('HSET', sizes, k, new)
  if not old then redis.call('HINCRBY', usage, 'keys', 1) end
  redis.call('HINCRBY', usage, 'bytes', new - before)
  redis.call('ZADD', index, 0, k)
  return true
end
local function expire_at(k, ms)
  if ms > 0 then redis.call('ZADD', exps, ms, k) else redis.call('ZREM', exps, k) end
end
"#;

fn kv_script(body: &str) -> Script {
    Script::new(&format!("{KV_FNS}\n{body}"))
}

/// ARGV: key, value, ttl ms (0: none), value key prefix, most keys, most
/// bytes. 1, or 2 when past the quota.
pub static KV_SET: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r#"
local k, v, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
reclaim(ARGV[4])
if not charge(k, #k + #v, tonumber(ARGV[5]), tonumber(ARGV[6])) then return 2 end
if ttl > 0 then
  redis.call('SET', vkey, v, 'PX', ttl)
  expire_at(k, now_ms() + ttl)
else
  redis.call('SET', vkey, v)
  expire_at(k, 0)
end
return 1"#,
    )
});

/// ARGV: key. Whether the key existed (unexpired).
pub static KV_DELETE: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r#"
local n = redis.call('DEL', vkey)
forget(ARGV[1])
return n"#,
    )
});

/// ARGV: key, delta, value key prefix, most keys, most bytes. `{1, n}`,
/// `{0}` when the value is not an integer or the sum overflows, `{2}` when
/// past the quota (the value stays as it was).
pub static KV_INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r#"
local k = ARGV[1]
reclaim(ARGV[3])
local before = redis.call('GET', vkey)
local n = redis.pcall('INCRBY', vkey, ARGV[2])
if type(n) == 'table' and n.err then return {0} end
if not charge(k, #k + redis.call('STRLEN', vkey), tonumber(ARGV[4]), tonumber(ARGV[5])) then
  if before then redis.call('SET', vkey, before, 'KEEPTTL') else redis.call('DEL', vkey) end
  return {2}
end
return {1, n}"#,
    )
});

/// ARGV: key, has-expected (`1`/`0`), expected, value, value key prefix,
/// most keys, most bytes. 1 when swapped, 0 when the value differed, 2 when
/// past the quota.
pub static KV_CAS: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r#"
local k, v = ARGV[1], ARGV[4]
reclaim(ARGV[5])
local cur = redis.call('GET', vkey)
if ARGV[2] == '1' then
  if cur ~= ARGV[3] then return 0 end
elseif cur then
  return 0
end
if not charge(k, #k + #v, tonumber(ARGV[6]), tonumber(ARGV[7])) then return 2 end
redis.call('SET', vkey, v)
expire_at(k, 0)
return 1"#,
    )
});

/// The namespace's `{keys, bytes}`, after reclaiming expired keys. KEYS[1]
/// unused. ARGV: value key prefix.
pub static KV_USAGE: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r#"
reclaim(ARGV[1])
return {tonumber(redis.call('HGET', usage, 'keys') or '0'), tonumber(redis.call('HGET', usage, 'bytes') or '0')}"#,
    )
});

/// Keys of a namespace in order, skipping (and forgetting) expired ones.
/// KEYS[1] unused. ARGV: value key prefix, range start, range end, limit.
pub static KV_LIST: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r#"
local out, min, limit = {}, ARGV[2], tonumber(ARGV[4])
while #out < limit do
  local batch = redis.call('ZRANGEBYLEX', index, min, ARGV[3], 'LIMIT', 0, 256)
  if #batch == 0 then break end
  for _, k in ipairs(batch) do
    if redis.call('EXISTS', ARGV[1] .. k) == 1 then
      if #out < limit then table.insert(out, k) end
    else
      forget(k)
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

/// The history helpers: `trim` drops what is over a channel's limits, and
/// `meta` reads (or starts) its epoch. A channel's keys expire a day after
/// its last publication has.
const HISTORY_FNS: &str = r#"
local function meta(ch, epoch)
  local m = 'wharf:hm:' .. ch
  local e = redis.call('HGET', m, 'epoch')
  if not e then
    redis.call('DEL', 'wharf:hl:' .. ch)
    redis.call('HSET', m, 'epoch', epoch, 'top', 0, 'bytes', 0)
    redis.call('PEXPIRE', m, 86400000)
    e = epoch
  end
  return e, tonumber(redis.call('HGET', m, 'top')), tonumber(redis.call('HGET', m, 'bytes'))
end

local function trim(ch, size, ttl, maxb, now, bytes)
  local l = 'wharf:hl:' .. ch
  local len = redis.call('LLEN', l)
  while len > 0 do
    local head = redis.call('LINDEX', l, 0)
    local at = tonumber(string.sub(head, 21, 33))
    if len > size or bytes > maxb or at + ttl <= now then
      redis.call('LPOP', l)
      bytes = bytes - (#head - 34)
      len = len - 1
    else
      break
    end
  end
  redis.call('HSET', 'wharf:hm:' .. ch, 'bytes', bytes)
  return len
end

-- ARGV 1 to 6 of both scripts: the channel, its limits, now, and the
-- epoch to start when it has none; then its epoch, top and bytes.
local function channel_args()
  local ch = ARGV[1]
  local epoch, top, bytes = meta(ch, ARGV[6])
  return ch, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), epoch, top, bytes
end

local function u32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end
"#;

/// Appends a publication to a channel's history and publishes it to every
/// host at its offset, in one step. ARGV: channel, size, ttl_ms, max_bytes,
/// now_ms, a new epoch (used when the channel has none), kind (`0` text,
/// `1` binary, `2` the inside of a JSON object to stamp), payload, the
/// frame's prefix (`envelope::recorded_prefix`), the bus channel. Returns
/// `{offset, epoch}`.
pub static HISTORY_APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{HISTORY_FNS}
local ch, size, ttl, maxb, now, epoch, top, bytes = channel_args()
top = redis.call('HINCRBY', 'wharf:hm:' .. ch, 'top', 1)
local kind, payload = ARGV[7], ARGV[8]
if kind == '2' then
  local sep = ','
  if string.match(payload, '^%s*}}') then sep = '' end
  payload = '{{"offset":' .. string.format('%d', top) .. ',"epoch":"' .. epoch .. '"' .. sep .. payload
  kind = '0'
end
if #payload <= maxb then
  redis.call('RPUSH', 'wharf:hl:' .. ch, string.format('%020d', top) .. string.format('%013d', now) .. kind .. payload)
  bytes = bytes + #payload
end
trim(ch, size, ttl, maxb, now, bytes)
redis.call('PEXPIRE', 'wharf:hm:' .. ch, ttl + 86400000)
redis.call('PEXPIRE', 'wharf:hl:' .. ch, ttl)
local msgkind = '\0'
if kind == '1' then msgkind = '\1' end
local frame = ARGV[9] .. string.format('%020d', top) .. u32(#epoch) .. epoch .. msgkind .. u32(#payload) .. payload
redis.call('PUBLISH', ARGV[10], frame)
return {{top, epoch}}
"#
    ))
});

/// Reads a channel's history. ARGV: channel, size, ttl_ms, max_bytes,
/// now_ms, a new epoch (used when the channel has none), since offset (``
/// for none), since epoch, limit. Returns `{top, epoch, recovered (0/1),
/// entries...}`.
pub static HISTORY_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{HISTORY_FNS}
local ch, size, ttl, maxb, now, epoch, top, bytes = channel_args()
local l = 'wharf:hl:' .. ch
local len = trim(ch, size, ttl, maxb, now, bytes)
local function offset(i) return tonumber(string.sub(redis.call('LINDEX', l, i), 1, 20)) end
local first = top + 1
if len > 0 then first = offset(0) end
local limit = tonumber(ARGV[9])
local from, recovered = 0, 1
if ARGV[7] == '' then
  from = math.max(0, len - limit)
else
  local since = tonumber(ARGV[7])
  if ARGV[8] ~= epoch or since > top then
    from, recovered = len, 0
  else
    -- Offsets are consecutive but for publications too large to keep.
    from = math.min(math.max(since + 1 - first, 0), len)
    while from > 0 and offset(from - 1) > since do from = from - 1 end
    if since + 1 < first then recovered = 0 end
  end
end
local out = {{top, epoch, recovered}}
if limit > 0 and from < len then
  for _, e in ipairs(redis.call('LRANGE', l, from, from + limit - 1)) do
    table.insert(out, e)
  end
end
return out
"#
    ))
});

/// The timer functions: `member(plugin, name)` is its `tq` entry,
/// `timers(plugin)` the key of its hash.
const TIMER_FNS: &str = r#"
local function member(plugin, name) return #plugin .. ':' .. plugin .. name end
local function timers(plugin) return 'wharf:tm:' .. #plugin .. ':' .. plugin end
"#;

/// Sets a timer, replacing one of its name; 0 when it would add one past
/// the plugin's cap. ARGV: plugin, name, timer, due ms, max pending.
pub static TIMER_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{TIMER_FNS}
local plugin, name = ARGV[1], ARGV[2]
local key = timers(plugin)
if redis.call('HEXISTS', key, name) == 0 and redis.call('HLEN', key) >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', key, name, ARGV[3])
redis.call('ZADD', 'wharf:tq', ARGV[4], member(plugin, name))
return 1"#
    ))
});

/// Cancels a timer; 1 when it was pending. ARGV: plugin, name.
pub static TIMER_CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{TIMER_FNS}
redis.call('ZREM', 'wharf:tq', member(ARGV[1], ARGV[2]))
return redis.call('HDEL', timers(ARGV[1]), ARGV[2])"#
    ))
});

/// Leases the timers due at ARGV[1] (at most ARGV[3]) until ARGV[2]:
/// `{{plugin, name, timer}, ...}, next due (or ''), pending}`. A queue
/// entry without its timer is dropped.
pub static TIMER_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{TIMER_FNS}
local due = redis.call('ZRANGEBYSCORE', 'wharf:tq', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {{}}
for _, m in ipairs(due) do
  local colon = string.find(m, ':', 1, true)
  local n = tonumber(string.sub(m, 1, colon - 1))
  local plugin = string.sub(m, colon + 1, colon + n)
  local name = string.sub(m, colon + n + 1)
  local t = redis.call('HGET', timers(plugin), name)
  if t then
    redis.call('ZADD', 'wharf:tq', ARGV[2], m)
    table.insert(out, {{plugin, name, t}})
  else
    redis.call('ZREM', 'wharf:tq', m)
  end
end
local first = redis.call('ZRANGE', 'wharf:tq', 0, 0, 'WITHSCORES')
return {{out, first[2] or '', redis.call('ZCARD', 'wharf:tq')}}"#
    ))
});

/// Ends a claimed timer's firing, unless it was set again: removes it
/// (ARGV: plugin, name, the timer as claimed) or, with ARGV[4] (the timer
/// to keep) and ARGV[5] (when it is due), keeps it due again.
pub static TIMER_FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{TIMER_FNS}
local plugin, name = ARGV[1], ARGV[2]
local key = timers(plugin)
if redis.call('HGET', key, name) ~= ARGV[3] then return 0 end
if ARGV[4] then
  redis.call('HSET', key, name, ARGV[4])
  redis.call('ZADD', 'wharf:tq', ARGV[5], member(plugin, name))
else
  redis.call('HDEL', key, name)
  redis.call('ZREM', 'wharf:tq', member(plugin, name))
end
return 1"#
    ))
});
