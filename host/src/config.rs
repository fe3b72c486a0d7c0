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
    /// The store back end: `embedded` (default, durable) or `memory`.
    #[serde(default)]
    pub store: StoreChoice,
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
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StoreChoice {
    /// Key/value in `<data_dir>/wharf.redb`, durable when acknowledged.
    #[default]
    Embedded,
    /// Everything in memory; gone when the host stops.
    Memory,
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
}

/// Limits on handlers and connections.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget of one handler event, in milliseconds.
    pub event_timeout_ms: u64,
    /// Linear memory cap of one instance, in MiB.
    pub memory_mib: u64,
    /// Warm instances kept per plugin.
    pub instance_pool: usize,
    /// Instances alive at once across all plugins (pooling allocator slots);
    /// an event that finds none free fails with 1011.
    pub max_instances: u32,
    /// Largest inbound message (and frame), in bytes.
    pub max_message_bytes: usize,
    /// Messages queued for one connection before it counts as a slow reader
    /// and is closed with 1008.
    pub outbound_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            event_timeout_ms: 100,
            memory_mib: 64,
            instance_pool: 16,
            max_instances: 1000,
            max_message_bytes: 1 << 20,
            outbound_queue: 1024,
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
            let key = match e.path().to_string() {
                p if p == "." => "(top level)".to_string(),
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
        let l = &self.limits;
        let checks: [(&str, bool, &str); 6] = [
            ("limits.event_timeout_ms", (1..=60_000).contains(&l.event_timeout_ms), "must be 1..=60000"),
            ("limits.memory_mib", (1..=4096).contains(&l.memory_mib), "must be 1..=4096"),
            ("limits.instance_pool", l.instance_pool <= 4096, "must be at most 4096"),
            ("limits.max_instances", (1..=20_000).contains(&l.max_instances), "must be 1..=20000"),
            ("limits.max_message_bytes", (16..=(64 << 20)).contains(&l.max_message_bytes), "must be 16..=67108864"),
            ("limits.outbound_queue", (1..=1 << 20).contains(&l.outbound_queue), "must be 1..=1048576"),
        ];
        for (key, ok, reason) in checks {
            if !ok {
                return Err(err(key.into(), reason.into()));
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
    fn syntax_error_has_position() {
        let e = parse_err("listen = \n");
        assert_eq!(e.key, "(syntax)");
        assert!(e.reason.contains("line 1"), "{e}");
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
