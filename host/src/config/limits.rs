//! Limits on handlers, connections and the host (`[limits]`), each with its
//! default written once here, and the overrides a plugin
//! (`[plugins.NAME.limits]`) or a route (`[routes.limits]`) may set.

use serde::Deserialize;

/// Handler limits one plugin may set for itself (`[plugins.NAME.limits]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// See [`Limits::event_timeout_ms`].
    pub event_timeout_ms: Option<u64>,
    /// See [`Limits::memory_mib`]; at most the global value.
    pub memory_mib: Option<u64>,
    /// See [`Limits::max_messages_per_event`].
    pub max_messages_per_event: Option<u32>,
    /// See [`Limits::max_bytes_per_event`].
    pub max_bytes_per_event: Option<usize>,
    /// See [`Limits::max_store_ops_per_event`].
    pub max_store_ops_per_event: Option<u32>,
    /// See [`Limits::max_value_bytes`].
    pub max_value_bytes: Option<usize>,
    /// See [`Limits::kv_max_keys`].
    pub kv_max_keys: Option<u64>,
    /// See [`Limits::kv_max_bytes`].
    pub kv_max_bytes: Option<u64>,
    /// See [`Limits::max_timers`].
    pub max_timers: Option<u64>,
    /// See [`Limits::timer_firings_per_second`].
    pub timer_firings_per_second: Option<u32>,
}

/// Connection limits one route may set for itself (`[routes.limits]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteLimits {
    /// See [`Limits::max_message_bytes`].
    pub max_message_bytes: Option<usize>,
    /// See [`Limits::outbound_queue`].
    pub outbound_queue: Option<usize>,
    /// See [`Limits::outbound_queue_bytes`].
    pub outbound_queue_bytes: Option<usize>,
    /// See [`Limits::slow_reader`].
    pub slow_reader: Option<SlowReader>,
    /// See [`Limits::ping_interval_ms`].
    pub ping_interval_ms: Option<u64>,
    /// See [`Limits::missed_pongs`].
    pub missed_pongs: Option<u32>,
    /// See [`Limits::max_lifetime_ms`].
    pub max_lifetime_ms: Option<u64>,
    /// See [`Limits::write_timeout_ms`].
    pub write_timeout_ms: Option<u64>,
    /// Open connections on this route at once; past it the handshake gets 503.
    pub max_connections: Option<usize>,
    /// See [`Limits::connect_rate`].
    pub connect_rate: Option<u32>,
    /// See [`Limits::connect_burst`].
    pub connect_burst: Option<u32>,
}

/// What happens when a connection's outbound queue is full.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SlowReader {
    /// Close the connection with 1008 (the default).
    #[default]
    Close,
    /// Drop the oldest queued message to make room (counted in the metrics).
    DropOldest,
}

/// Limits on handlers and connections (`[limits]`). Plugins override the
/// handler limits, routes the connection limits.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget of one handler event, in milliseconds; past it the
    /// event is stopped and its connection closed with 1011.
    pub event_timeout_ms: u64,
    /// Linear memory cap of one instance, in MiB.
    pub memory_mib: u64,
    /// Warm instances kept per plugin.
    pub instance_pool: usize,
    /// Linear memory all live instances of every plugin may hold together,
    /// in MiB; a grow past it fails inside the guest. At most the machine's
    /// memory (checked at start-up).
    pub instance_memory_mib: u64,
    /// A warm instance whose memory grew by more than this many MiB since
    /// it was instantiated is dropped instead of kept in the pool. Unset: by
    /// the component's language, 4 for compiled code (Rust), 16 for
    /// JavaScript and Python, whose heaps grow in steps before their
    /// collectors settle.
    pub pool_growth_mib: Option<u64>,
    /// Instances alive at once across all plugins (pooling allocator slots);
    /// an event that finds none free fails with 1011.
    pub max_instances: u32,
    /// Messages (emit, broadcast, publish) one event may send.
    pub max_messages_per_event: u32,
    /// Bytes of messages one event may send.
    pub max_bytes_per_event: usize,
    /// Store operations (key/value, metadata, presence) one event may make.
    pub max_store_ops_per_event: u32,
    /// Largest key/value or metadata value.
    pub max_value_bytes: usize,
    /// Keys one key/value namespace may hold; past it a write of a new key
    /// returns `quota-exceeded`.
    pub kv_max_keys: u64,
    /// Bytes of keys and values one key/value namespace may hold; past it a
    /// write that grows the namespace returns `quota-exceeded`.
    pub kv_max_bytes: u64,
    /// Largest inbound message (and frame), in bytes; past it: close 1009.
    pub max_message_bytes: usize,
    /// Messages queued for one connection before it counts as a slow reader.
    pub outbound_queue: usize,
    /// Payload bytes queued for one connection before it counts as a slow
    /// reader (a message larger than this still goes to an empty queue).
    /// Bounding bytes rather than messages absorbs bursts of small messages
    /// (16,384 of 64 bytes fit) while a reader that stops reading pins at
    /// most about this much.
    pub outbound_queue_bytes: usize,
    /// What a full outbound queue does: `close` (1008) or `drop-oldest`.
    pub slow_reader: SlowReader,
    /// Server ping interval in milliseconds; 0 disables pings.
    pub ping_interval_ms: u64,
    /// Pings left unanswered (no frame at all from the client) before the
    /// connection is closed with 1001.
    pub missed_pongs: u32,
    /// Longest a connection may stay open, in milliseconds (then 1001);
    /// 0: no limit.
    pub max_lifetime_ms: u64,
    /// Longest a write to a client may block (its socket full because it
    /// does not read), in milliseconds; then the connection is closed
    /// (1008) and dropped.
    pub write_timeout_ms: u64,
    /// Time a client has to send its handshake request, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// TCP connections still in their HTTP handshake at once; past it a new
    /// one gets 503 and is closed.
    pub max_handshakes: usize,
    /// Of those, how many one client IP address may hold, so that one
    /// address sending partial requests (slowloris) cannot take them all;
    /// past it its new connections get 503.
    pub max_handshakes_per_ip: usize,
    /// Open WebSocket connections on this host at once; past it: 503.
    pub max_connections: usize,
    /// Metadata keys one connection may hold; past it `set-metadata`
    /// returns `quota-exceeded` (an accept with more is refused, 500).
    pub max_metadata_keys: usize,
    /// Bytes of metadata keys and values one connection may hold.
    pub max_metadata_bytes: usize,
    /// Channels one connection may be a member of; past it `subscribe`
    /// returns `quota-exceeded`.
    pub max_channels_per_connection: usize,
    /// New WebSocket connections per second from one client IP address
    /// (per route); past it: 429. 0: no limit. The default (1,000/s after a
    /// burst of 2,000) lets a NAT of many users reconnect at once after an
    /// outage, and stops one machine from opening tens of thousands per
    /// second.
    pub connect_rate: u32,
    /// Connections one client IP may open at once before `connect_rate`
    /// applies; 0: `connect_rate`.
    pub connect_burst: u32,
    /// Timers one plugin may have pending; past it `timers.set` of a new
    /// name returns `quota-exceeded`.
    pub max_timers: u64,
    /// Timer firings per second one host runs for one plugin; due timers
    /// past it wait for the next second (they fire late, never lost).
    pub timer_firings_per_second: u32,
    /// Times a timer whose `on-timer` failed (trapped, ran out of time) is
    /// run again before it is dropped (counted in
    /// `wharf_timers_dropped_total`).
    pub timer_retries: u32,
    /// The delay before a failed timer's first retry, in milliseconds;
    /// it doubles with each further one.
    pub timer_retry_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            event_timeout_ms: 100,
            memory_mib: 64,
            instance_pool: 16,
            instance_memory_mib: 2048,
            pool_growth_mib: None,
            max_instances: 1000,
            max_messages_per_event: 1000,
            max_bytes_per_event: 16 << 20,
            max_store_ops_per_event: 1000,
            max_value_bytes: 1 << 20,
            kv_max_keys: 1_000_000,
            kv_max_bytes: 256 << 20,
            max_message_bytes: 1 << 20,
            outbound_queue: 16_384,
            outbound_queue_bytes: 1 << 20,
            slow_reader: SlowReader::Close,
            ping_interval_ms: 30_000,
            missed_pongs: 2,
            max_lifetime_ms: 0,
            write_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            max_handshakes: 1024,
            max_handshakes_per_ip: 64,
            max_connections: 100_000,
            max_metadata_keys: 64,
            max_metadata_bytes: 64 << 10,
            max_channels_per_connection: 128,
            connect_rate: 1000,
            connect_burst: 2000,
            max_timers: 100_000,
            timer_firings_per_second: 10_000,
            timer_retries: 5,
            timer_retry_ms: 1000,
        }
    }
}

impl Limits {
    /// What one key/value namespace may hold.
    pub fn kv_quota(&self) -> crate::store::KvQuota {
        crate::store::KvQuota { max_keys: self.kv_max_keys, max_bytes: self.kv_max_bytes }
    }

    /// What one connection's record may hold.
    pub fn record_caps(&self) -> crate::store::RecordCaps {
        crate::store::RecordCaps {
            max_metadata_keys: self.max_metadata_keys,
            max_metadata_bytes: self.max_metadata_bytes,
            max_channels: self.max_channels_per_connection,
        }
    }

    /// These limits with a plugin's overrides.
    pub fn for_plugin(&self, o: &PluginLimits) -> Limits {
        Limits {
            event_timeout_ms: o.event_timeout_ms.unwrap_or(self.event_timeout_ms),
            memory_mib: o.memory_mib.unwrap_or(self.memory_mib),
            max_messages_per_event: o.max_messages_per_event.unwrap_or(self.max_messages_per_event),
            max_bytes_per_event: o.max_bytes_per_event.unwrap_or(self.max_bytes_per_event),
            max_store_ops_per_event: o.max_store_ops_per_event.unwrap_or(self.max_store_ops_per_event),
            max_value_bytes: o.max_value_bytes.unwrap_or(self.max_value_bytes),
            kv_max_keys: o.kv_max_keys.unwrap_or(self.kv_max_keys),
            kv_max_bytes: o.kv_max_bytes.unwrap_or(self.kv_max_bytes),
            max_timers: o.max_timers.unwrap_or(self.max_timers),
            timer_firings_per_second: o.timer_firings_per_second.unwrap_or(self.timer_firings_per_second),
            ..self.clone()
        }
    }

    /// These limits with a route's overrides; the route's own connection
    /// cap is [`RouteLimits::max_connections`].
    pub fn for_route(&self, o: &RouteLimits) -> Limits {
        Limits {
            max_message_bytes: o.max_message_bytes.unwrap_or(self.max_message_bytes),
            outbound_queue: o.outbound_queue.unwrap_or(self.outbound_queue),
            outbound_queue_bytes: o.outbound_queue_bytes.unwrap_or(self.outbound_queue_bytes),
            slow_reader: o.slow_reader.unwrap_or(self.slow_reader),
            ping_interval_ms: o.ping_interval_ms.unwrap_or(self.ping_interval_ms),
            missed_pongs: o.missed_pongs.unwrap_or(self.missed_pongs),
            max_lifetime_ms: o.max_lifetime_ms.unwrap_or(self.max_lifetime_ms),
            write_timeout_ms: o.write_timeout_ms.unwrap_or(self.write_timeout_ms),
            connect_rate: o.connect_rate.unwrap_or(self.connect_rate),
            connect_burst: o.connect_burst.unwrap_or(self.connect_burst),
            ..self.clone()
        }
    }

    /// Checks every range; `prefix` is the table the limits came from.
    pub(super) fn check(&self, prefix: &str) -> Result<(), (String, &'static str)> {
        let l = self;
        let checks: [(&str, bool, &'static str); 30] = [
            ("event_timeout_ms", (1..=60_000).contains(&l.event_timeout_ms), "must be 1..=60000"),
            ("memory_mib", (1..=4096).contains(&l.memory_mib), "must be 1..=4096"),
            ("instance_pool", l.instance_pool <= 4096, "must be at most 4096"),
            ("instance_memory_mib", (1..=1 << 24).contains(&l.instance_memory_mib), "must be 1..=16777216"),
            ("pool_growth_mib", l.pool_growth_mib.is_none_or(|v| v <= 4096), "must be at most 4096"),
            ("max_instances", (1..=20_000).contains(&l.max_instances), "must be 1..=20000"),
            ("max_messages_per_event", (1..=100_000).contains(&l.max_messages_per_event), "must be 1..=100000"),
            ("max_bytes_per_event", (1..=(1 << 30)).contains(&l.max_bytes_per_event), "must be 1..=1073741824"),
            ("max_store_ops_per_event", (1..=100_000).contains(&l.max_store_ops_per_event), "must be 1..=100000"),
            ("max_value_bytes", (1..=(64 << 20)).contains(&l.max_value_bytes), "must be 1..=67108864"),
            ("kv_max_keys", (1..=1_000_000_000).contains(&l.kv_max_keys), "must be 1..=1000000000"),
            ("kv_max_bytes", (1..=1 << 40).contains(&l.kv_max_bytes), "must be 1..=1099511627776"),
            ("max_message_bytes", (16..=(64 << 20)).contains(&l.max_message_bytes), "must be 16..=67108864"),
            ("outbound_queue", (1..=1 << 20).contains(&l.outbound_queue), "must be 1..=1048576"),
            ("outbound_queue_bytes", (1..=1 << 30).contains(&l.outbound_queue_bytes), "must be 1..=1073741824"),
            ("ping_interval_ms", l.ping_interval_ms == 0 || l.ping_interval_ms >= 10, "must be 0 (off) or at least 10"),
            ("missed_pongs", (1..=100).contains(&l.missed_pongs), "must be 1..=100"),
            ("write_timeout_ms", (10..=600_000).contains(&l.write_timeout_ms), "must be 10..=600000"),
            ("handshake_timeout_ms", (10..=600_000).contains(&l.handshake_timeout_ms), "must be 10..=600000"),
            ("max_handshakes", (1..=1_000_000).contains(&l.max_handshakes), "must be 1..=1000000"),
            ("max_handshakes_per_ip", (1..=1_000_000).contains(&l.max_handshakes_per_ip), "must be 1..=1000000"),
            ("max_connections", (1..=10_000_000).contains(&l.max_connections), "must be 1..=10000000"),
            ("max_metadata_keys", (1..=100_000).contains(&l.max_metadata_keys), "must be 1..=100000"),
            ("max_metadata_bytes", (1..=(64 << 20)).contains(&l.max_metadata_bytes), "must be 1..=67108864"),
            (
                "max_channels_per_connection",
                (1..=100_000).contains(&l.max_channels_per_connection),
                "must be 1..=100000",
            ),
            ("connect_burst", l.connect_burst <= 1_000_000, "must be at most 1000000"),
            ("max_timers", (1..=100_000_000).contains(&l.max_timers), "must be 1..=100000000"),
            ("timer_firings_per_second", (1..=1_000_000).contains(&l.timer_firings_per_second), "must be 1..=1000000"),
            ("timer_retries", l.timer_retries <= 100, "must be at most 100"),
            ("timer_retry_ms", (1..=86_400_000).contains(&l.timer_retry_ms), "must be 1..=86400000"),
        ];
        match checks.into_iter().find(|(_, ok, _)| !ok) {
            Some((key, _, reason)) => Err((format!("{prefix}.{key}"), reason)),
            None => Ok(()),
        }
    }
}
