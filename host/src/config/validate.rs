//! Validation of a parsed config: names, cross-references, ranges and
//! files, each refusal naming the file and the key.

use super::{Config, ConfigError};

impl Config {
    /// A route's chain (`plugins`) and selection (`[routes.select]`) name
    /// plugins of `[plugins]`, each once; a selection goes with plugins.
    fn check_chain(&self, i: usize, route: &super::RouteConfig) -> Result<(), (String, String)> {
        let known = |key: String, name: &str| {
            if self.plugins.contains_key(name) {
                Ok(())
            } else {
                Err((key, format!("no plugin named `{name}` in [plugins]")))
            }
        };
        for (j, name) in route.plugins.iter().enumerate() {
            known(format!("routes[{i}].plugins[{j}]"), name)?;
            if route.plugins[..j].contains(name) {
                return Err((format!("routes[{i}].plugins[{j}]"), format!("`{name}` is in the chain twice")));
            }
        }
        let Some(select) = &route.select else { return Ok(()) };
        if route.backend.is_some() {
            return Err((format!("routes[{i}].select"), "goes with plugins, not a backend".into()));
        }
        if select.field.is_empty() && !select.handlers.is_empty() {
            return Err((
                format!("routes[{i}].select.field"),
                "names the top-level field the handlers' values are of".into(),
            ));
        }
        if select.handlers.is_empty() && select.default.is_none() {
            return Err((format!("routes[{i}].select"), "needs handlers (with a field), a default, or both".into()));
        }
        for (value, name) in &select.handlers {
            known(format!("routes[{i}].select.handlers.{value}"), name)?;
        }
        if let Some(name) = &select.default {
            known(format!("routes[{i}].select.default"), name)?;
        }
        Ok(())
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
            type Field = fn(&super::PluginConfig) -> &Option<String>;
            let namespaces: [(&str, Field); 2] =
                [("kv_namespace", |p| &p.kv_namespace), ("channel_namespace", |p| &p.channel_namespace)];
            for (key, field) in namespaces {
                let Some(ns) = field(plugin) else { continue };
                if !valid(ns) {
                    return Err(err(
                        format!("plugins.{name}.{key}"),
                        "a namespace uses only letters, digits, `-` and `_`".into(),
                    ));
                }
                if let Some(owner) = self.plugins.get(ns)
                    && ns != name
                    && field(owner).is_none()
                {
                    return Err(err(
                        format!("plugins.{name}.{key}"),
                        format!("`{ns}` is plugin `{ns}`'s own namespace; to share it, set the same {key} on both"),
                    ));
                }
            }
        }
        for (i, c) in self.channels.iter().enumerate() {
            let key = |k: &str| format!("channels[{i}].{k}");
            let stem = c.pattern.strip_suffix('*').unwrap_or(&c.pattern);
            if (c.pattern.is_empty() || stem.contains('*')) || stem.len() > 256 {
                return Err(err(
                    key("match"),
                    format!("`{}` must be a channel name, or a prefix ending in one `*`", c.pattern),
                ));
            }
            if let Some(ns) = &c.namespace
                && !self.channel_namespaces().contains(ns)
            {
                return Err(err(key("namespace"), format!("no plugin or backend has channel namespace `{ns}`")));
            }
            if !(1..=crate::history::MAX_SIZE).contains(&c.history_size) {
                return Err(err(key("history_size"), format!("must be 1 to {}", crate::history::MAX_SIZE)));
            }
            if c.history_ttl_ms == 0 || c.history_ttl_ms > crate::store::MAX_TTL.as_millis() as u64 {
                return Err(err(key("history_ttl_ms"), "must be at least 1 and at most 100 years".into()));
            }
            if !(1..=crate::history::MAX_BYTES).contains(&c.history_max_bytes) {
                return Err(err(key("history_max_bytes"), format!("must be 1 to {}", crate::history::MAX_BYTES)));
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
        if let Some(token) = &self.admin.token
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(err(
                "admin.token".into(),
                "must be one or more visible ASCII characters without spaces, as sent in `Authorization: Bearer` (from admin.token or WHARF_ADMIN_TOKEN)".into(),
            ));
        }
        if let Some(ns) = &self.admin.default_channel_namespace
            && !self.channel_namespaces().contains(ns)
        {
            return Err(err(
                "admin.default_channel_namespace".into(),
                format!(
                    "`{ns}` is no plugin's or backend's channel namespace (they are: {})",
                    self.channel_namespaces().join(", ")
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            if !route.path.starts_with('/') {
                return Err(err(format!("routes[{i}].path"), format!("`{}` must start with `/`", route.path)));
            }
            if route.path.contains(['?', '#']) || route.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(
                    format!("routes[{i}].path"),
                    format!(
                        "`{}` is not a path: no `?`, `#`, spaces or control characters (routes match the path alone; the query goes to on-open)",
                        route.path
                    ),
                ));
            }
            if !seen.insert(route.path.as_str()) {
                return Err(err(format!("routes[{i}].path"), format!("`{}` is mounted twice", route.path)));
            }
            if let Some(auth) = &route.auth {
                auth.check().map_err(|(key, reason)| err(format!("routes[{i}].auth{key}"), reason))?;
            }
            if route.plugin.is_some() && !route.plugins.is_empty() {
                return Err(err(format!("routes[{i}]"), "names `plugin` and `plugins`; use one".into()));
            }
            if !route.plugins.is_empty() && route.backend.is_some() {
                return Err(err(
                    format!("routes[{i}]"),
                    "names plugins and a backend; a route has one or the other".into(),
                ));
            }
            self.check_chain(i, route).map_err(|(key, reason)| err(key, reason))?;
            match (&route.plugin, &route.backend) {
                (Some(_), Some(_)) => {
                    return Err(err(format!("routes[{i}]"), "names a plugin and a backend; a route has one".into()));
                }
                (None, None) if route.plugins.is_empty() => {
                    return Err(err(format!("routes[{i}]"), "names no plugin and no backend".into()));
                }
                (None, None) => {}
                (Some(plugin), None) if !self.plugins.contains_key(plugin) => {
                    return Err(err(format!("routes[{i}].plugin"), format!("no plugin named `{plugin}` in [plugins]")));
                }
                (Some(_), None) => {}
                (None, Some(backend)) => {
                    check_backend(backend).map_err(|(key, reason)| err(format!("routes[{i}].backend{key}"), reason))?;
                }
            }
        }
        if let Err((i, why)) = crate::transport::ws::TrustedProxies::parse(&self.trusted_proxies) {
            return Err(err(format!("trusted_proxies[{i}]"), why));
        }
        if let Some(dir) = &self.static_dir {
            if !dir.is_dir() {
                return Err(err("static_dir".into(), format!("`{}` is not a directory", dir.display())));
            }
            // Everything below it is served to anyone: not the whole
            // filesystem, and not the host's own data (the store, the cache).
            let served = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            if served.parent().is_none() {
                return Err(err("static_dir".into(), "`/` would serve the whole filesystem".into()));
            }
            let data = std::fs::canonicalize(&self.data_dir)
                .or_else(|_| std::path::absolute(&self.data_dir))
                .unwrap_or_else(|_| self.data_dir.clone());
            if data.starts_with(&served) {
                return Err(err(
                    "static_dir".into(),
                    format!("`{}` contains the data directory `{}`", dir.display(), self.data_dir.display()),
                ));
            }
        }
        if !(1_000..=3_600_000).contains(&self.store.heartbeat_ttl_ms) {
            return Err(err("store.heartbeat_ttl_ms".into(), "must be 1000..=3600000".into()));
        }
        let limits_err = |(key, reason): (String, &str)| err(key, reason.to_string());
        self.limits.check("limits").map_err(limits_err)?;
        if self.limits.instance_memory_mib < self.limits.memory_mib {
            return Err(err(
                "limits.instance_memory_mib".into(),
                format!(
                    "must be at least limits.memory_mib ({}): one instance could never grow to its cap",
                    self.limits.memory_mib
                ),
            ));
        }
        if let Some(machine) = machine_memory_mib()
            && self.limits.instance_memory_mib > machine
        {
            return Err(err(
                "limits.instance_memory_mib".into(),
                format!("{} MiB is more than this machine's memory ({machine} MiB)", self.limits.instance_memory_mib),
            ));
        }
        let mut quotas: std::collections::HashMap<&str, (&str, crate::store::KvQuota)> = Default::default();
        for (name, plugin) in &self.plugins {
            let limits = self.limits.for_plugin(&plugin.limits);
            limits.check(&format!("plugins.{name}.limits")).map_err(limits_err)?;
            // A namespace has one quota: plugins that share it must agree.
            let ns = self.namespace_of(name);
            match quotas.get(ns) {
                Some((first, quota)) if *quota != limits.kv_quota() => {
                    return Err(err(
                        format!("plugins.{name}.limits.kv_max_bytes"),
                        format!(
                            "plugins `{first}` and `{name}` share key/value namespace `{ns}` but not its quota (kv_max_keys, kv_max_bytes): set the same on both"
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    quotas.insert(ns, (name, limits.kv_quota()));
                }
            }
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

/// This machine's memory in MiB (`MemTotal`), where `/proc` says.
fn machine_memory_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024)
}

/// Checks a route's backend; the error's key is relative to
/// `routes[i].backend` (empty for the URL given as a string).
fn check_backend(b: &super::BackendConfig) -> Result<(), (String, String)> {
    let url_err = |reason: String| (if b.url_only { String::new() } else { ".url".into() }, reason);
    let uri: http::Uri = b.url.parse().map_err(|e| url_err(format!("`{}` is not a URL: {e}", b.url)))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(url_err(format!(
                "`{}`: https backends are not supported yet; reach the backend over http:// (on a private network or loopback)",
                b.url
            )));
        }
        _ => return Err(url_err(format!("`{}` is not an http:// URL", b.url))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(url_err(format!("`{}` names no host", b.url)));
    }
    if uri.query().is_some() {
        return Err(url_err(format!("`{}` has a query; the client's query is passed on instead", b.url)));
    }
    let ranges: [(&str, u64, std::ops::RangeInclusive<u64>); 5] = [
        ("timeout_ms", b.timeout_ms, 1..=3_600_000),
        ("connect_timeout_ms", b.connect_timeout_ms, 1..=600_000),
        ("retries", b.retries.into(), 0..=20),
        ("retry_backoff_ms", b.retry_backoff_ms, 1..=600_000),
        ("max_request_bytes", b.max_request_bytes as u64, 1..=(1 << 30)),
    ];
    for (key, value, range) in ranges {
        if !range.contains(&value) {
            return Err((format!(".{key}"), format!("must be {}..={}", range.start(), range.end())));
        }
    }
    if !(1024..=(1 << 30)).contains(&b.max_response_bytes) {
        return Err((".max_response_bytes".into(), "must be 1024..=1073741824".into()));
    }
    if !(1..=10_000).contains(&b.max_concurrent_requests) {
        return Err((".max_concurrent_requests".into(), "must be 1..=10000".into()));
    }
    if b.sig_key.as_deref().is_some_and(str::is_empty) {
        return Err((".sig_key".into(), "is empty; leave it out to send no Grip-Sig".into()));
    }
    let ns = b.channel_namespace();
    if ns.is_empty() || !ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err((".channel_namespace".into(), "a namespace uses only letters, digits, `-` and `_`".into()));
    }
    Ok(())
}
