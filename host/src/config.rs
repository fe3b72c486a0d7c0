//! The typed TOML configuration, its loading and its validation.
//!
//! Parsing (`serde`, unknown keys refused) and validation (cross-references,
//! ranges, files) are separate steps; both report the file and the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default address of the WebSocket and HTTP listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default address of the admin API.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";

/// A configuration error, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {key}: {reason}")]
pub struct ConfigError {
    /// The configuration file.
    pub file: String,
    /// The dotted key path, e.g. `routes[0].plugin`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where this config came from (a file path), for error messages.
    #[serde(skip)]
    pub source: String,
    /// Address of the WebSocket/HTTP listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory served over HTTP at `/`, relative to the config file.
    #[serde(default)]
    pub static_dir: Option<PathBuf>,
    /// Directory for host data (compile cache, embedded store), relative to
    /// the working directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Compile cache directory; default `<data_dir>/cache`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// The store back end: `store = "embedded"` (default, durable),
    /// `"memory"` or `"redis://HOST:PORT/DB"`, or a `[store]` table with
    /// `backend` and `heartbeat_ttl_ms`.
    #[serde(default)]
    pub store: StoreConfig,
    /// The admin HTTP API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Global limits; routes may override some of them.
    #[serde(default)]
    pub limits: Limits,
    /// Plugins by name: which component file each one runs.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// WebSocket routes: a path served by a plugin.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// One plugin: a component and its settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The component file (`.wasm`), relative to the config file.
    pub component: PathBuf,
    /// The key/value namespace; default: the plugin's own name. Plugins that
    /// name the same namespace share it; a plugin cannot name another
    /// plugin's default namespace.
    #[serde(default)]
    pub kv_namespace: Option<String>,
    /// Handler limits of this plugin, overriding `[limits]`.
    #[serde(default)]
    pub limits: PluginLimits,
}

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
}

/// Connection limits one route may set for itself (`[routes.limits]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteLimits {
    /// See [`Limits::max_message_bytes`].
    pub max_message_bytes: Option<usize>,
    /// See [`Limits::outbound_queue`].
    pub outbound_queue: Option<usize>,
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

impl Config {
    /// The key/value namespace of plugin `name`.
    pub fn namespace_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.plugins.get(name).and_then(|p| p.kv_namespace.as_deref()).unwrap_or(name)
    }

    /// The compile cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| self.data_dir.join("cache"))
    }
}

/// The store back end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreChoice {
    /// Key/value in `<data_dir>/wharf.redb`, durable when acknowledged.
    #[default]
    Embedded,
    /// Everything in memory; gone when the host stops.
    Memory,
    /// Everything in the Redis server at this URL (`redis://HOST:PORT/DB`),
    /// shared by every host that names it.
    Redis(String),
}

impl std::str::FromStr for StoreChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(StoreChoice::Embedded),
            "memory" => Ok(StoreChoice::Memory),
            url if url.starts_with("redis://") || url.starts_with("redis+unix://") => {
                redis_url_is_valid(url)?;
                Ok(StoreChoice::Redis(url.to_string()))
            }
            other => Err(format!("unknown store `{other}`: use `embedded`, `memory` or `redis://HOST:PORT/DB`")),
        }
    }
}

fn redis_url_is_valid(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    url.into_connection_info()
        .map(|_| ())
        .map_err(|e| format!("`{}` is not a Redis URL: {e}", crate::cluster::redact(url)))
}

impl<'de> Deserialize<'de> for StoreChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Default time after which a silent host is presumed dead.
pub const DEFAULT_HEARTBEAT_TTL_MS: u64 = 10_000;

/// The store: its back end and, for Redis, how hosts watch each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The back end.
    pub backend: StoreChoice,
    /// Redis only: a host that has not renewed its heartbeat for this long is
    /// presumed dead, and its connections leave presence and channels.
    pub heartbeat_ttl_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { backend: StoreChoice::default(), heartbeat_ttl_ms: DEFAULT_HEARTBEAT_TTL_MS }
    }
}

impl From<StoreChoice> for StoreConfig {
    fn from(backend: StoreChoice) -> Self {
        StoreConfig { backend, ..StoreConfig::default() }
    }
}

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default)]
            backend: StoreChoice,
            #[serde(default = "default_ttl")]
            heartbeat_ttl_ms: u64,
        }
        fn default_ttl() -> u64 {
            DEFAULT_HEARTBEAT_TTL_MS
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StoreConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a store name, a redis:// URL, or a [store] table")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StoreConfig, E> {
                s.parse::<StoreChoice>().map(StoreConfig::from).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<StoreConfig, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(StoreConfig { backend: t.backend, heartbeat_ttl_ms: t.heartbeat_ttl_ms })
            }
        }
        d.deserialize_any(V)
    }
}

/// The admin HTTP API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin API at all.
    pub enabled: bool,
    /// Its listen address; without a token it must be a loopback address.
    pub listen: SocketAddr,
    /// The bearer token (`WHARF_ADMIN_TOKEN` overrides it).
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { enabled: true, listen: DEFAULT_ADMIN_LISTEN.parse().expect("valid default"), token: None }
    }
}

/// How instances are used for a route's events.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Instances {
    /// Warm instances from a bounded per-plugin pool (the default).
    #[default]
    Pooled,
    /// A fresh instance for every event, for strict isolation.
    Fresh,
}

/// One WebSocket route.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The path, starting with `/`.
    pub path: String,
    /// The plugin that handles it (a key of `[plugins]`).
    pub plugin: String,
    /// `pooled` (default) or `fresh`.
    #[serde(default)]
    pub instances: Instances,
    /// Allowed `Origin` header values (e.g. `https://example.com`); a
    /// handshake with another Origin gets 403. Empty: any origin. A request
    /// without an Origin header (not a browser) is allowed.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Subprotocols this route speaks. When set, a client that offers
    /// subprotocols must offer one of them (else 400); the first one it
    /// offers that is listed is chosen unless the handler chooses another
    /// listed one. Empty: the handler alone decides.
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// Connection limits of this route, overriding `[limits]`.
    #[serde(default)]
    pub limits: RouteLimits,
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
    /// Largest inbound message (and frame), in bytes; past it: close 1009.
    pub max_message_bytes: usize,
    /// Messages queued for one connection before it counts as a slow reader.
    pub outbound_queue: usize,
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
    /// Open WebSocket connections on this host at once; past it: 503.
    pub max_connections: usize,
    /// New WebSocket connections per second from one client IP address
    /// (per route); past it: 429. 0: no limit.
    pub connect_rate: u32,
    /// Connections one client IP may open at once before `connect_rate`
    /// applies; default: `connect_rate`.
    pub connect_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            event_timeout_ms: 100,
            memory_mib: 64,
            instance_pool: 16,
            max_instances: 1000,
            max_messages_per_event: 1000,
            max_bytes_per_event: 16 << 20,
            max_store_ops_per_event: 1000,
            max_value_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
            outbound_queue: 1024,
            slow_reader: SlowReader::Close,
            ping_interval_ms: 30_000,
            missed_pongs: 2,
            max_lifetime_ms: 0,
            write_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            max_handshakes: 1024,
            max_connections: 100_000,
            connect_rate: 0,
            connect_burst: 0,
        }
    }
}

impl Limits {
    /// These limits with a plugin's overrides.
    pub fn for_plugin(&self, o: &PluginLimits) -> Limits {
        Limits {
            event_timeout_ms: o.event_timeout_ms.unwrap_or(self.event_timeout_ms),
            memory_mib: o.memory_mib.unwrap_or(self.memory_mib),
            max_messages_per_event: o.max_messages_per_event.unwrap_or(self.max_messages_per_event),
            max_bytes_per_event: o.max_bytes_per_event.unwrap_or(self.max_bytes_per_event),
            max_store_ops_per_event: o.max_store_ops_per_event.unwrap_or(self.max_store_ops_per_event),
            max_value_bytes: o.max_value_bytes.unwrap_or(self.max_value_bytes),
            ..self.clone()
        }
    }

    /// These limits with a route's overrides; the route's own connection
    /// cap is [`RouteLimits::max_connections`].
    pub fn for_route(&self, o: &RouteLimits) -> Limits {
        Limits {
            max_message_bytes: o.max_message_bytes.unwrap_or(self.max_message_bytes),
            outbound_queue: o.outbound_queue.unwrap_or(self.outbound_queue),
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
    fn check(&self, prefix: &str) -> Result<(), (String, &'static str)> {
        let l = self;
        let checks: [(&str, bool, &'static str); 17] = [
            ("event_timeout_ms", (1..=60_000).contains(&l.event_timeout_ms), "must be 1..=60000"),
            ("memory_mib", (1..=4096).contains(&l.memory_mib), "must be 1..=4096"),
            ("instance_pool", l.instance_pool <= 4096, "must be at most 4096"),
            ("max_instances", (1..=20_000).contains(&l.max_instances), "must be 1..=20000"),
            ("max_messages_per_event", (1..=100_000).contains(&l.max_messages_per_event), "must be 1..=100000"),
            ("max_bytes_per_event", (1..=(1 << 30)).contains(&l.max_bytes_per_event), "must be 1..=1073741824"),
            ("max_store_ops_per_event", (1..=100_000).contains(&l.max_store_ops_per_event), "must be 1..=100000"),
            ("max_value_bytes", (1..=(64 << 20)).contains(&l.max_value_bytes), "must be 1..=67108864"),
            ("max_message_bytes", (16..=(64 << 20)).contains(&l.max_message_bytes), "must be 16..=67108864"),
            ("outbound_queue", (1..=1 << 20).contains(&l.outbound_queue), "must be 1..=1048576"),
            ("ping_interval_ms", l.ping_interval_ms == 0 || l.ping_interval_ms >= 10, "must be 0 (off) or at least 10"),
            ("missed_pongs", (1..=100).contains(&l.missed_pongs), "must be 1..=100"),
            ("write_timeout_ms", (10..=600_000).contains(&l.write_timeout_ms), "must be 10..=600000"),
            ("handshake_timeout_ms", (10..=600_000).contains(&l.handshake_timeout_ms), "must be 10..=600000"),
            ("max_handshakes", (1..=1_000_000).contains(&l.max_handshakes), "must be 1..=1000000"),
            ("max_connections", (1..=10_000_000).contains(&l.max_connections), "must be 1..=10000000"),
            ("connect_burst", l.connect_burst <= 1_000_000, "must be at most 1000000"),
        ];
        match checks.into_iter().find(|(_, ok, _)| !ok) {
            Some((key, _, reason)) => Err((format!("{prefix}.{key}"), reason)),
            None => Ok(()),
        }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default address")
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".wharf")
}

impl Config {
    /// Reads, parses and validates a config file. Relative component and
    /// static paths are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        let mut config = Config::parse(&text, &file)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate(&file)?;
        Ok(config)
    }

    /// Parses TOML text; `file` names the source in errors. Does not validate.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let err = |key: String, reason: String| ConfigError { file: file.to_string(), key, reason };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| err("(syntax)".into(), one_line(e.message(), text, e.span())))?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            // An empty key (`"" = 1`) has an empty path: name the table.
            let key = match e.path().to_string() {
                p if p == "." || p.is_empty() => "(top level)".to_string(),
                p => p,
            };
            let inner = e.into_inner();
            err(key, one_line(inner.message(), text, inner.span()))
        })?;
        config.source = file.to_string();
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        for plugin in self.plugins.values_mut() {
            plugin.component = base.join(&plugin.component);
        }
        if let Some(dir) = &self.static_dir {
            self.static_dir = Some(base.join(dir));
        }
    }

    /// Checks cross-references and ranges; `file` names the source in errors.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, reason: String| ConfigError { file: file.to_string(), key, reason };
        for (name, plugin) in &self.plugins {
            let valid = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid(name) {
                return Err(err(
                    format!("plugins.{name}"),
                    "a plugin name uses only letters, digits, `-` and `_`".into(),
                ));
            }
            if let Some(ns) = &plugin.kv_namespace {
                if !valid(ns) {
                    return Err(err(
                        format!("plugins.{name}.kv_namespace"),
                        "a namespace uses only letters, digits, `-` and `_`".into(),
                    ));
                }
                if let Some(owner) = self.plugins.get(ns)
                    && ns != name
                    && owner.kv_namespace.is_none()
                {
                    return Err(err(
                        format!("plugins.{name}.kv_namespace"),
                        format!(
                            "`{ns}` is plugin `{ns}`'s own namespace; to share it, set the same kv_namespace on both"
                        ),
                    ));
                }
            }
        }
        if self.admin.enabled && self.admin.token.is_none() && !self.admin.listen.ip().is_loopback() {
            return Err(err(
                "admin.listen".into(),
                format!(
                    "refusing to serve the admin API on non-loopback {} without a token (set WHARF_ADMIN_TOKEN or admin.token)",
                    self.admin.listen
                ),
            ));
        }
        if self.admin.token.as_deref() == Some("") {
            return Err(err("admin.token".into(), "must not be empty".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            if !route.path.starts_with('/') {
                return Err(err(format!("routes[{i}].path"), format!("`{}` must start with `/`", route.path)));
            }
            if !seen.insert(route.path.as_str()) {
                return Err(err(format!("routes[{i}].path"), format!("`{}` is mounted twice", route.path)));
            }
            if !self.plugins.contains_key(&route.plugin) {
                return Err(err(
                    format!("routes[{i}].plugin"),
                    format!("no plugin named `{}` in [plugins]", route.plugin),
                ));
            }
        }
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return Err(err("static_dir".into(), format!("`{}` is not a directory", dir.display())));
        }
        if !(1_000..=3_600_000).contains(&self.store.heartbeat_ttl_ms) {
            return Err(err("store.heartbeat_ttl_ms".into(), "must be 1000..=3600000".into()));
        }
        let limits_err = |(key, reason): (String, &str)| err(key, reason.to_string());
        self.limits.check("limits").map_err(limits_err)?;
        for (name, plugin) in &self.plugins {
            self.limits.for_plugin(&plugin.limits).check(&format!("plugins.{name}.limits")).map_err(limits_err)?;
            if plugin.limits.memory_mib.is_some_and(|m| m > self.limits.memory_mib) {
                return Err(err(
                    format!("plugins.{name}.limits.memory_mib"),
                    format!("must be at most limits.memory_mib ({})", self.limits.memory_mib),
                ));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            self.limits.for_route(&route.limits).check(&format!("routes[{i}].limits")).map_err(limits_err)?;
            if route.limits.max_connections == Some(0) {
                return Err(err(format!("routes[{i}].limits.max_connections"), "must be at least 1".into()));
            }
            for (j, origin) in route.origins.iter().enumerate() {
                if origin.is_empty() || origin.ends_with('/') || !origin.contains("://") {
                    return Err(err(
                        format!("routes[{i}].origins[{j}]"),
                        format!("`{origin}` is not an origin like `https://example.com` (scheme, host, optional port)"),
                    ));
                }
            }
            for (j, p) in route.subprotocols.iter().enumerate() {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) {
                    return Err(err(format!("routes[{i}].subprotocols[{j}]"), format!("`{p}` is not a valid token")));
                }
            }
        }
        Ok(())
    }
}

/// Turns a parser message plus byte span into one line with line and column.
fn one_line(message: &str, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let message = message.trim();
    match span {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{message} (line {line}, column {column})")
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> ConfigError {
        Config::parse(text, "t.toml")
            .and_then(|c| c.validate("t.toml").map(|_| c))
            .expect_err("config should be refused")
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let e = parse_err("listen = \"127.0.0.1:1\"\nlisten_port = 3\n");
        assert_eq!(e.file, "t.toml");
        assert!(e.reason.contains("listen_port"), "{e}");
        assert!(e.reason.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_value_names_its_key() {
        let e = parse_err("[limits]\nmemory_mib = \"lots\"\n");
        assert_eq!(e.key, "limits.memory_mib", "{e}");
        let e = parse_err("listen = \"not an address\"\n");
        assert_eq!(e.key, "listen", "{e}");
        let e = parse_err(
            "[plugins.a]\ncomponent = \"a.wasm\"\n[[routes]]\npath = \"/a\"\nplugin = \"a\"\ninstances = \"sometimes\"\n",
        );
        assert_eq!(e.key, "routes[0].instances", "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let e = parse_err("[[routes]]\npath = \"/a\"\nplugin = \"missing\"\n");
        assert_eq!(e.key, "routes[0].plugin");
        assert!(e.reason.contains("missing"));
        let e = parse_err("[plugins.a]\ncomponent = \"a.wasm\"\n[[routes]]\npath = \"a\"\nplugin = \"a\"\n");
        assert_eq!(e.key, "routes[0].path");
        let e = parse_err("[limits]\nevent_timeout_ms = 0\n");
        assert_eq!(e.key, "limits.event_timeout_ms");
        let e = parse_err("[limits]\nmax_instances = 0\n");
        assert_eq!(e.key, "limits.max_instances");
        let text = "[plugins.a]\ncomponent = \"a.wasm\"\n[[routes]]\npath = \"/a\"\nplugin = \"a\"\n[[routes]]\npath = \"/a\"\nplugin = \"a\"\n";
        assert_eq!(parse_err(text).key, "routes[1].path");
    }

    #[test]
    fn namespaces_are_shared_only_when_both_plugins_say_so() {
        let base = "[plugins.a]\ncomponent = \"a.wasm\"\n[plugins.b]\ncomponent = \"b.wasm\"\n";
        let e = parse_err(&format!("{base}kv_namespace = \"a\"\n"));
        assert_eq!(e.key, "plugins.b.kv_namespace");
        let ok = "[plugins.a]\ncomponent = \"a.wasm\"\nkv_namespace = \"shop\"\n[plugins.b]\ncomponent = \"b.wasm\"\nkv_namespace = \"shop\"\n";
        let c = Config::parse(ok, "t.toml").unwrap();
        c.validate("t.toml").unwrap();
        assert_eq!(c.namespace_of("a"), c.namespace_of("b"));
        let c = Config::parse(base, "t.toml").unwrap();
        assert_ne!(c.namespace_of("a"), c.namespace_of("b"));
        let e = parse_err("[plugins.\"bad name\"]\ncomponent = \"a.wasm\"\n");
        assert_eq!(e.key, "plugins.bad name");
    }

    #[test]
    fn admin_without_token_stays_on_loopback() {
        let e = parse_err("[admin]\nlisten = \"0.0.0.0:8081\"\n");
        assert_eq!(e.key, "admin.listen");
        let c = Config::parse("[admin]\nlisten = \"0.0.0.0:8081\"\ntoken = \"t\"\n", "t.toml").unwrap();
        c.validate("t.toml").unwrap();
        let e = parse_err("store = \"cloud\"\n");
        assert_eq!(e.key, "store");
    }

    #[test]
    fn the_store_is_a_name_a_redis_url_or_a_table() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.store, StoreConfig { backend: StoreChoice::Embedded, heartbeat_ttl_ms: 10_000 });
        let c = Config::parse("store = \"memory\"\n", "t.toml").unwrap();
        assert_eq!(c.store.backend, StoreChoice::Memory);
        let c = Config::parse("store = \"redis://127.0.0.1:6379/2\"\n", "t.toml").unwrap();
        assert_eq!(c.store.backend, StoreChoice::Redis("redis://127.0.0.1:6379/2".into()));
        let table = "[store]\nbackend = \"redis://10.0.0.5:6380/0\"\nheartbeat_ttl_ms = 4000\n";
        let c = Config::parse(table, "t.toml").unwrap();
        c.validate("t.toml").unwrap();
        assert_eq!(c.store.backend, StoreChoice::Redis("redis://10.0.0.5:6380/0".into()));
        assert_eq!(c.store.heartbeat_ttl_ms, 4000);

        let e = parse_err("store = \"redis://127.0.0.1:notaport/0\"\n");
        assert_eq!(e.key, "store");
        assert!(e.reason.contains("not a Redis URL"), "{e}");
        let e = parse_err("[store]\nbackend = \"redis://h:1/0\"\nheartbeat_ttl_ms = 10\n");
        assert_eq!(e.key, "store.heartbeat_ttl_ms");
        let e = parse_err("[store]\nbackend = \"memory\"\nttl = 3\n");
        assert!(e.key.starts_with("store"), "{e}");
        assert!(e.reason.contains("ttl"), "{e}");
        assert_eq!("redis://h:1/0".parse::<StoreChoice>(), Ok(StoreChoice::Redis("redis://h:1/0".into())));
        assert!("postgres://h".parse::<StoreChoice>().unwrap_err().contains("redis://HOST:PORT/DB"));
    }

    #[test]
    fn plugin_and_route_limits_override_and_are_checked() {
        let base = "[limits]\nmemory_mib = 32\nping_interval_ms = 1000\n[plugins.a]\ncomponent = \"a.wasm\"\n";
        let route = "[[routes]]\npath = \"/a\"\nplugin = \"a\"\n";
        let ok = format!(
            "{base}[plugins.a.limits]\nevent_timeout_ms = 20\n{route}origins = [\"https://x.example\"]\n\
             subprotocols = [\"v1\"]\n[routes.limits]\nping_interval_ms = 0\nslow_reader = \"drop-oldest\"\n"
        );
        let c = Config::parse(&ok, "t.toml").unwrap();
        c.validate("t.toml").unwrap();
        let plugin = c.limits.for_plugin(&c.plugins["a"].limits);
        assert_eq!((plugin.event_timeout_ms, plugin.memory_mib), (20, 32));
        let r = c.limits.for_route(&c.routes[0].limits);
        assert_eq!((r.ping_interval_ms, r.slow_reader, r.memory_mib), (0, SlowReader::DropOldest, 32));

        let e = parse_err(&format!("{base}[plugins.a.limits]\nmemory_mib = 64\n"));
        assert_eq!(e.key, "plugins.a.limits.memory_mib");
        assert!(e.reason.contains("at most limits.memory_mib (32)"), "{e}");
        let e = parse_err(&format!("{base}[plugins.a.limits]\nevent_timeout_ms = 0\n"));
        assert_eq!(e.key, "plugins.a.limits.event_timeout_ms");
        let e = parse_err(&format!("{base}{route}[routes.limits]\nmissed_pongs = 0\n"));
        assert_eq!(e.key, "routes[0].limits.missed_pongs");
        let e = parse_err(&format!("{base}{route}[routes.limits]\nmax_connections = 0\n"));
        assert_eq!(e.key, "routes[0].limits.max_connections");
        let e = parse_err(&format!("{base}{route}origins = [\"x.example/\"]\n"));
        assert_eq!(e.key, "routes[0].origins[0]");
        let e = parse_err(&format!("{base}{route}subprotocols = [\"a b\"]\n"));
        assert_eq!(e.key, "routes[0].subprotocols[0]");
        let e = parse_err(&format!("{base}{route}[routes.limits]\nslow_reader = \"drop-newest\"\n"));
        assert_eq!(e.key, "routes[0].limits.slow_reader");
        let e = parse_err("[limits]\nwrite_timeout_ms = 1\n");
        assert_eq!(e.key, "limits.write_timeout_ms");
    }

    #[test]
    fn an_empty_key_is_named_by_its_table() {
        let e = parse_err("\"\" = 1\n");
        assert_eq!(e.key, "(top level)", "{e}");
        assert!(e.reason.contains("unknown field ``"), "{e}");
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse_err("listen = \n");
        assert_eq!(e.key, "(syntax)");
        assert!(e.reason.contains("line 1"), "{e}");
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{edits, mutate, tomlish};
        use proptest::prelude::*;

        const KEYS: &[&str] = &[
            "listen",
            "static_dir",
            "store",
            "data_dir",
            "[limits]",
            "[admin]",
            "[plugins.a]",
            "[[routes]]",
            "[routes.limits]",
            "[plugins.a.limits]",
            "component",
            "path",
            "plugin",
            "instances",
            "origins",
            "subprotocols",
            "memory_mib",
            "max_connections",
            "ping_interval_ms",
            "slow_reader",
            "\"drop-oldest\"",
            "\"/a\"",
            "\"a\"",
            "\"a.wasm\"",
            "token",
            "enabled",
            "true",
            "kv_namespace",
            "connect_rate",
        ];

        /// Parsing and validating never panics; a refusal names the file, a
        /// key and a reason, on one line.
        fn check(text: &str) {
            if let Err(e) = Config::parse(text, "fuzz.toml").and_then(|c| c.validate("fuzz.toml")) {
                assert_eq!(e.file, "fuzz.toml");
                assert!(!e.key.is_empty() && !e.reason.is_empty(), "{e:?}");
                assert!(!e.to_string().contains('\n'), "one line: {e}");
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn edited_example_configs(edits in edits(6)) {
                let text = include_str!("../../examples/wharf.toml");
                check(&mutate(text, &edits));
            }

            #[test]
            fn token_soup(text in tomlish(KEYS)) {
                check(&text);
            }

            #[test]
            fn random_text(text in ".{0,200}") {
                check(&text);
            }
        }
    }

    #[test]
    fn example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wharf.toml");
        let c = Config::load(&path).expect("examples/wharf.toml is valid");
        let paths: Vec<_> = c.routes.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/echo", "/chat", "/broadcast", "/counter"]);
        assert!(c.static_dir.is_some());
    }
}
