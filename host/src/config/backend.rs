//! A route's `backend`: a WebSocket-over-HTTP server, named by its URL
//! (`backend = "http://127.0.0.1:8090/base"`) or by a table with the URL
//! and the settings that have defaults:
//!
//! ```toml
//! [routes.backend]
//! url = "http://127.0.0.1:8090/base"
//! timeout_ms = 10000
//! retries = 5
//! sig_key = "changeme"
//! channel_namespace = "chat"
//! ```

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The channel namespace of a backend that names none.
pub const DEFAULT_BACKEND_NAMESPACE: &str = "grip";

/// One route's backend.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The base URL (`http://HOST:PORT/PATH`); the client's path and query
    /// are appended to its path.
    pub url: String,
    /// How long one request may take, answer included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How long connecting to the backend may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How many times a request the backend cannot have seen is sent again
    /// (it could not be connected to) before the client is closed with 1011.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The wait before the first retry; it doubles each time (plus up to as
    /// much again at random).
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Signs every request with a `Grip-Sig` JWT (HS256) made with this key.
    #[serde(default)]
    pub sig_key: Option<String>,
    /// The `iss` claim of `Grip-Sig` tokens.
    #[serde(default = "default_sig_iss")]
    pub sig_iss: String,
    /// The channel namespace of the channels the backend subscribes
    /// connections to: name a plugin's channel namespace to share its
    /// channels. Default `grip`.
    #[serde(default)]
    pub channel_namespace: Option<String>,
    /// Events stop being added to one request past this many bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// The largest answer body accepted; a larger one closes the client
    /// (1011).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Requests in flight to the backend at once (each holds a connection
    /// to it); the route's other connections' requests wait for a place.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Written as `backend = "URL"` (for error messages: the URL's key is
    /// then `backend`, not `backend.url`).
    #[serde(skip)]
    pub url_only: bool,
}

impl BackendConfig {
    /// The channel namespace of its channels.
    pub fn channel_namespace(&self) -> &str {
        self.channel_namespace.as_deref().unwrap_or(DEFAULT_BACKEND_NAMESPACE)
    }

    fn with_url(url: String) -> Self {
        BackendConfig {
            url,
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            retries: default_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
            sig_key: None,
            sig_iss: default_sig_iss(),
            channel_namespace: None,
            max_request_bytes: default_max_request_bytes(),
            max_response_bytes: default_max_response_bytes(),
            max_concurrent_requests: default_max_concurrent_requests(),
            url_only: true,
        }
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_retries() -> u32 {
    5
}
fn default_retry_backoff_ms() -> u64 {
    1_000
}
fn default_sig_iss() -> String {
    "wharf".into()
}
fn default_max_request_bytes() -> usize {
    200_000
}
fn default_max_response_bytes() -> usize {
    16 << 20
}
fn default_max_concurrent_requests() -> usize {
    1024
}

/// `backend = "URL"` or a `[routes.backend]` table.
pub(super) fn url_or_table<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BackendConfig>, D::Error> {
    struct UrlOrTable;
    impl<'de> Visitor<'de> for UrlOrTable {
        type Value = BackendConfig;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a URL or a table with `url`")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<BackendConfig, E> {
            Ok(BackendConfig::with_url(v.to_string()))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BackendConfig, A::Error> {
            BackendConfig::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(UrlOrTable).map(Some)
}
