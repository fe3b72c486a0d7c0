//! The typed TOML configuration, its loading and its validation.
//!
//! Parsing (`serde`, unknown keys refused) and validation (cross-references,
//! ranges, files) are separate steps; both report the file and the key.
//!
//! - this module: the file's tables (listen, plugins, routes, admin) and
//!   loading;
//! - [`limits`]: every limit with its default, written once, and the
//!   plugin and route overrides;
//! - [`store`]: the choice of store back end;
//! - `validate.rs`: cross-references and ranges.

mod auth;
mod backend;
mod limits;
mod store;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use auth::AuthConfig;
pub use backend::{BackendConfig, DEFAULT_BACKEND_NAMESPACE};
pub use limits::{Limits, PluginLimits, RouteLimits, SlowReader};
pub use store::{DEFAULT_HEARTBEAT_TTL_MS, StoreChoice, StoreConfig};

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
    /// Load balancers and proxies (CIDRs or addresses) whose `Forwarded` or
    /// `X-Forwarded-For` header names the client: its address is what
    /// handlers, the per-address limits and the logs see.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// TLS on the WebSocket/HTTP listener: `[tls]` with `cert` and `key`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
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
    /// WebSocket routes: a path served by a plugin or a backend.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Channels that keep history: `[[channels]]` tables, the first that
    /// matches a channel wins; a channel no table matches keeps none.
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
}

/// One `[[channels]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// A channel name as plugins name it (`lobby`), or a prefix ending in
    /// `*` (`room*`; `*` alone matches every channel).
    #[serde(rename = "match")]
    pub pattern: String,
    /// Only channels of this channel namespace; default: any.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Publications kept per channel, 1 to 10,000.
    pub history_size: usize,
    /// How long each publication is kept, in milliseconds.
    pub history_ttl_ms: u64,
    /// Bytes of payload kept per channel; default 1 MiB, at most 64 MiB.
    #[serde(default = "default_history_bytes")]
    pub history_max_bytes: usize,
}

fn default_history_bytes() -> usize {
    1 << 20
}

impl Config {
    /// The `[[channels]]` tables as history rules.
    pub fn history_rules(&self) -> crate::history::Rules {
        crate::history::Rules(
            self.channels
                .iter()
                .map(|c| crate::history::Rule {
                    pattern: c.pattern.clone(),
                    namespace: c.namespace.clone(),
                    limits: crate::history::Limits {
                        size: c.history_size,
                        ttl: std::time::Duration::from_millis(c.history_ttl_ms),
                        max_bytes: c.history_max_bytes,
                    },
                })
                .collect(),
        )
    }
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
    /// The channel namespace; default: the plugin's own name. Plugins that
    /// name the same namespace share their channels (`publish`, `subscribe`,
    /// `members`); a plugin cannot name another plugin's default namespace.
    #[serde(default)]
    pub channel_namespace: Option<String>,
    /// Handler limits of this plugin, overriding `[limits]`.
    #[serde(default)]
    pub limits: PluginLimits,
}

impl Config {
    /// The key/value namespace of plugin `name`.
    pub fn namespace_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.plugins.get(name).and_then(|p| p.kv_namespace.as_deref()).unwrap_or(name)
    }

    /// The channel namespace of plugin `name`.
    pub fn channel_namespace_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.plugins.get(name).and_then(|p| p.channel_namespace.as_deref()).unwrap_or(name)
    }

    /// Every channel namespace (of plugins and backends), ascending, once
    /// each.
    pub fn channel_namespaces(&self) -> Vec<String> {
        let plugins = self.plugins.keys().map(|n| self.channel_namespace_of(n));
        let backends = self.routes.iter().filter_map(|r| r.backend.as_ref()).map(BackendConfig::channel_namespace);
        let set: std::collections::BTreeSet<&str> = plugins.chain(backends).collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// The compile cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| self.data_dir.join("cache"))
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
    /// The channel namespace of a channel the API is given without
    /// `?namespace=`; needed only when there is more than one.
    pub default_channel_namespace: Option<String>,
    /// The key of the HS256 JWTs GRIP publishers may sign their bearer
    /// token with (gripcontrol's `control_iss` and `key`), accepted by
    /// `/publish/` beside the admin token; when set, an unsigned publish is
    /// refused even without an admin token.
    pub publish_key: Option<String>,
    /// TLS on the admin listener: `[admin.tls]` with `cert` and `key`.
    pub tls: Option<TlsConfig>,
}

/// A listener's certificate and key: PEM files, relative to the config
/// file, re-read on SIGHUP and when they change.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: DEFAULT_ADMIN_LISTEN.parse().expect("valid default"),
            token: None,
            default_channel_namespace: None,
            publish_key: None,
            tls: None,
        }
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
    /// The plugin that handles it (a key of `[plugins]`); a route names a
    /// plugin, a chain of them (`plugins`) or a backend.
    #[serde(default)]
    pub plugin: Option<String>,
    /// The plugins that handle it, in order (`plugins = ["auth", "chat"]`):
    /// every one runs the open (any may refuse it) and the close (in
    /// reverse order); messages go to the last, or where `select` says.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// Messages routed by a field: `[routes.select]`.
    #[serde(default)]
    pub select: Option<SelectConfig>,
    /// The WebSocket-over-HTTP backend that handles it instead of a plugin:
    /// its URL, or a `[routes.backend]` table.
    #[serde(default, deserialize_with = "backend::url_or_table")]
    pub backend: Option<BackendConfig>,
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
    /// A connection token (JWT) every client must present: `[routes.auth]`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// permessage-deflate (RFC 7692): `"deflate"` or `"off"` (the default).
    #[serde(default)]
    pub compression: Compression,
}

/// Which handler each message of a route goes to (`[routes.select]`), by
/// a top-level field of a JSON text message.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    /// The field, e.g. `action` (needed with `handlers`; without them every
    /// message goes to `default`).
    #[serde(default)]
    pub field: String,
    /// Its values and the plugin each goes to (`[routes.select.handlers]`,
    /// `join = "rooms"`); a plugin named here need not be in the route's
    /// chain, and then it gets messages only.
    #[serde(default)]
    pub handlers: std::collections::BTreeMap<String, String>,
    /// Where every other message goes (binary, not JSON, a value not
    /// listed); without it those get an error reply.
    pub default: Option<String>,
}

impl RouteConfig {
    /// The plugins every connection's open and close go through, in order
    /// (`plugins`, or the one `plugin`); empty for a backend.
    pub fn chain(&self) -> Vec<&str> {
        match &self.plugin {
            Some(p) if self.plugins.is_empty() => vec![p.as_str()],
            _ => self.plugins.iter().map(String::as_str).collect(),
        }
    }
}

/// Whether a route compresses messages.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// No extension is negotiated.
    #[default]
    Off,
    /// permessage-deflate when the client offers it.
    Deflate,
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
        for auth in self.routes.iter_mut().filter_map(|r| r.auth.as_mut()) {
            auth.resolve_paths(base);
        }
        for tls in [self.tls.as_mut(), self.admin.tls.as_mut()].into_iter().flatten() {
            tls.cert = base.join(&tls.cert);
            tls.key = base.join(&tls.key);
        }
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
