//! Which store back end serves the host: `store = "embedded"` (default,
//! durable), `"memory"`, `"redis://HOST:PORT/DB"`, or a `[store]` table.

use serde::Deserialize;

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
                crate::cluster::check_url(url)?;
                Ok(StoreChoice::Redis(url.to_string()))
            }
            other => Err(format!("unknown store `{other}`: use `embedded`, `memory` or `redis://HOST:PORT/DB`")),
        }
    }
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
