//! The admin HTTP API, on its own listener: send to channels and
//! connections from outside, close connections, read presence, metrics and
//! health. JSON in and out; every route but `/healthz` needs
//! `Authorization: Bearer <token>` when a token is configured.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel;
use crate::close;
use crate::grip::publish::Action;
use crate::handler::{ConnId, Message};
use crate::hub::{Delivery, Hub};
use crate::store::ConnectionRecord;

/// Most connections one `GET /connections` page lists.
const MAX_PAGE: usize = 1000;
/// In a page of connections, each record shows at most this many metadata
/// entries and channels, and each metadata key and value at most
/// [`LISTED_BYTES`] bytes (`"truncated": true` when anything is cut), so a
/// page stays small however full its records are; `GET /connections/{id}`
/// shows the whole record.
const LISTED_ITEMS: usize = 16;
const LISTED_BYTES: usize = 256;
/// Largest component accepted by `PUT /plugins/{name}`.
const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// One plugin as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    /// Its name in the config.
    pub name: String,
    /// The routes it serves.
    pub routes: Vec<String>,
    /// The component file it was loaded from (an upload keeps the path).
    pub component: String,
    /// SHA-256 of the serving component's bytes, hex.
    pub sha256: String,
    /// When the serving version was swapped in, Unix milliseconds.
    pub loaded_at_ms: u64,
    /// 1 for the first version, +1 for each swap.
    pub generation: u64,
    /// Its key/value namespace.
    pub kv_namespace: String,
    /// Its channel namespace.
    pub channel_namespace: String,
}

/// Which channel namespace each plugin's channels are in, and which one the
/// API means by a channel named without `?namespace=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelNamespaces {
    /// Plugin name → its channel namespace.
    pub by_plugin: BTreeMap<String, String>,
    /// The configured default (`admin.default_channel_namespace`).
    pub default: Option<String>,
}

impl ChannelNamespaces {
    /// Every namespace, ascending, once each.
    pub fn all(&self) -> Vec<&str> {
        let set: std::collections::BTreeSet<&str> = self.by_plugin.values().map(String::as_str).collect();
        set.into_iter().collect()
    }

    /// The namespace `asked` for (`?namespace=`), else the default, else the
    /// only one; the reason when none of these names one.
    pub fn resolve(&self, asked: Option<&str>) -> Result<String, (StatusCode, String)> {
        let all = self.all();
        match asked {
            Some(ns) if all.contains(&ns) => Ok(ns.to_string()),
            Some(ns) => {
                Err((StatusCode::NOT_FOUND, format!("no channel namespace `{ns}` (there are: {})", all.join(", "))))
            }
            None => match (&self.default, all.as_slice()) {
                (Some(d), _) => Ok(d.clone()),
                (None, [only]) => Ok(only.to_string()),
                _ => Err((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "name the channel's namespace with ?namespace= (one of: {}), or set admin.default_channel_namespace",
                        all.join(", ")
                    ),
                )),
            },
        }
    }
}

/// What the admin API may do with plugins; the application implements it.
#[async_trait::async_trait]
pub trait PluginAdmin: Send + Sync + 'static {
    /// Every plugin, by name.
    fn list(&self) -> Vec<PluginInfo>;
    /// One plugin.
    fn get(&self, name: &str) -> Option<PluginInfo>;
    /// Compiles, checks and swaps in new component bytes for plugin `name`:
    /// `Ok(None)` when there is no such plugin, `Err(reason)` when the bytes
    /// are refused (the serving version stays).
    async fn upload(&self, name: &str, bytes: Vec<u8>) -> Result<Option<PluginInfo>, String>;
    /// The plugins' channel namespaces, as configured now.
    fn channel_namespaces(&self) -> ChannelNamespaces;
}

fn plugin_json(p: &PluginInfo) -> Value {
    json!({
        "name": p.name,
        "routes": p.routes,
        "component": p.component,
        "sha256": p.sha256,
        "loaded_at": p.loaded_at_ms,
        "generation": p.generation,
        "kv_namespace": p.kv_namespace,
        "channel_namespace": p.channel_namespace,
    })
}

/// Settings of the admin API.
#[derive(Clone, Debug)]
pub struct AdminOptions {
    /// The bearer token; `None` means no authentication: the listener is on
    /// loopback (enforced by config validation) and only requests from this
    /// machine's own tools are served ([`local_request`]).
    pub token: Option<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time a client has to send its request headers, and again its body.
    pub request_timeout: Duration,
    /// The key of the HS256 JWTs a GRIP publisher may send as its bearer
    /// token to `/publish/` instead of the admin token.
    pub publish_key: Option<Vec<u8>>,
}

struct Admin {
    /// Sends, closes, presence, health and metrics, on any host.
    hub: Arc<Hub>,
    plugins: Arc<dyn PluginAdmin>,
    opts: AdminOptions,
}

/// Serves the admin API until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: Option<crate::tls::TlsAcceptor>,
    hub: Arc<Hub>,
    plugins: Arc<dyn PluginAdmin>,
    opts: AdminOptions,
    shutdown: CancellationToken,
) {
    let admin = Arc::new(Admin { hub, plugins, opts });
    let tasks = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (admin, tls, shutdown) = (admin.clone(), tls.clone(), shutdown.clone());
        tasks.spawn(async move {
            let timeout = admin.opts.request_timeout;
            match tls {
                None => serve_connection(admin, stream, shutdown).await,
                Some(tls) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(timeout, tls.accept(stream)).await {
                        serve_connection(admin, stream, shutdown).await;
                    }
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Serves HTTP on one connection (plain or TLS) until it ends or the API
/// shuts down.
async fn serve_connection<S>(admin: Arc<Admin>, stream: S, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = admin.opts.request_timeout;
    let service = service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(admin.handle(req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": message }))
}

/// The whole body, at most `limit` bytes, within `timeout`: 413 past the
/// limit, 408 when it takes longer, 400 when the client stops sending it.
async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    what: &str,
    timeout: Duration,
) -> Result<Bytes, Response<Full<Bytes>>> {
    match tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect()).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, &format!("body larger than {what}")))
        }
        Ok(Err(_)) => Err(error(StatusCode::BAD_REQUEST, "could not read the request body")),
        Err(_) => Err(error(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time")),
    }
}

/// Whether `authority` (`host[:port]`, `[v6]:port`) names this machine:
/// `localhost` or a loopback address.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, _)) => host,
            None => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        },
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a request may reach the admin API without a token: it names a
/// loopback host (a web page that rebinds its own name to 127.0.0.1 still
/// sends that name) and comes from no web page of another origin (a
/// browser sends `Origin` with every cross-origin POST, even the "simple"
/// ones that need no preflight).
pub fn local_request(headers: &http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    if !is_loopback_authority(host) {
        return false;
    }
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => {
            origin.to_str().ok().and_then(|o| o.split_once("://")).is_some_and(|(scheme, authority)| {
                matches!(scheme, "http" | "https") && is_loopback_authority(authority)
            })
        }
    }
}

fn gone(id: ConnId) -> Response<Full<Bytes>> {
    error(StatusCode::GONE, &format!("connection {id} is gone"))
}

fn unreachable(id: ConnId) -> Response<Full<Bytes>> {
    error(StatusCode::SERVICE_UNAVAILABLE, &format!("connection {id} is on another host, which cannot be reached now"))
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// A connection's record, its channels by the names its plugin knows them
/// by, beside its plugin's channel namespace (a channel of another
/// namespace, joined before a reload changed it, keeps its `namespace:`).
fn record_json(r: &ConnectionRecord, last_active_ms: Option<u64>, namespaces: &ChannelNamespaces) -> Value {
    let metadata: serde_json::Map<String, Value> =
        r.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    record_json_with(r, last_active_ms, namespaces, metadata, r.channels.len())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A record as a page of connections shows it: see [`LISTED_ITEMS`].
fn listed_record_json(r: &ConnectionRecord, last_active_ms: Option<u64>, namespaces: &ChannelNamespaces) -> Value {
    let mut truncated = r.metadata.len() > LISTED_ITEMS || r.channels.len() > LISTED_ITEMS;
    let metadata: serde_json::Map<String, Value> = r
        .metadata
        .iter()
        .take(LISTED_ITEMS)
        .map(|(k, v)| {
            truncated |= k.len() > LISTED_BYTES || v.len() > LISTED_BYTES;
            (cut(k, LISTED_BYTES).to_string(), Value::String(cut(v, LISTED_BYTES).to_string()))
        })
        .collect();
    let mut json = record_json_with(r, last_active_ms, namespaces, metadata, LISTED_ITEMS);
    json["truncated"] = truncated.into();
    json
}

fn record_json_with(
    r: &ConnectionRecord,
    last_active_ms: Option<u64>,
    namespaces: &ChannelNamespaces,
    metadata: serde_json::Map<String, Value>,
    max_channels: usize,
) -> Value {
    // A route of several handlers records them all: their namespace when
    // they share one, else none (the channels are listed qualified).
    let mut of_each = r.plugin.split(',').map(|n| namespaces.by_plugin.get(n).map(String::as_str));
    let first = of_each.next().flatten();
    let namespace = if of_each.all(|n| n == first) { first } else { None };
    let channels: Vec<&str> = r
        .channels
        .iter()
        .take(max_channels)
        .map(|c| match channel::split(c) {
            (ns, name) if Some(ns) == namespace => name,
            _ => c.as_str(),
        })
        .collect();
    json!({
        "id": r.id.to_string(),
        "route": &*r.route,
        "plugin": &*r.plugin,
        "remote_addr": r.remote_addr,
        "connected_at": r.connected_at_ms,
        "last_active_at": last_active_ms,
        "metadata": metadata,
        "channel_namespace": namespace,
        "channels": channels,
        "channel_count": r.channels.len(),
    })
}

impl Admin {
    fn authorized(&self, req: &Request<Incoming>, publish: bool) -> bool {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if publish
            && let (Some(key), Some(given)) = (&self.opts.publish_key, given)
            && crate::grip::sig::valid(given, key)
        {
            return true;
        }
        let Some(token) = &self.opts.token else { return self.opts.publish_key.is_none() || !publish };
        // Compare without an early exit, so timing does not reveal a prefix.
        given.is_some_and(|given| {
            given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        })
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        if self.opts.token.is_none() && !local_request(req.headers()) {
            return error(
                StatusCode::FORBIDDEN,
                "without a token the admin API serves only requests to a loopback host name (127.0.0.1, [::1], localhost) from no web page of another origin",
            );
        }
        if req.method() == Method::GET && segments == ["healthz"] {
            let (healthy, body) = self.hub.health();
            let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            return json_response(status, body);
        }
        let publish = req.method() == Method::POST && matches!(segments.as_slice(), ["publish"] | ["publish", ""]);
        if !self.authorized(&req, publish) {
            let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
        let method = req.method().clone();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["metrics"]) => {
                let mut resp = Response::new(Full::new(Bytes::from(self.hub.metrics().render())));
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
                resp
            }
            (&Method::POST, ["channels", name, "messages"]) if !name.is_empty() => {
                let (name, namespace) = match self.channel_namespace(&req) {
                    Ok(ns) => (name.to_string(), ns),
                    Err((status, reason)) => return error(status, &reason),
                };
                let msg = match self.message_body(req).await {
                    Ok(msg) => msg,
                    Err(resp) => return resp,
                };
                let qualified = channel::qualified(&namespace, &name);
                match self.hub.history().publish_now(&qualified, msg).await {
                    Err(msg) => {
                        let delivered = self.hub.publish(&qualified, msg);
                        json_response(
                            StatusCode::OK,
                            json!({ "channel": name, "namespace": namespace, "delivered": delivered }),
                        )
                    }
                    Ok(Ok((pos, delivered))) => json_response(
                        StatusCode::OK,
                        json!({
                            "channel": name,
                            "namespace": namespace,
                            "delivered": delivered,
                            "offset": pos.offset,
                            "epoch": &*pos.epoch,
                        }),
                    ),
                    Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("not published: {e}")),
                }
            }
            (&Method::GET, ["channels", name, "history"]) if !name.is_empty() => {
                let namespace = match self.channel_namespace(&req) {
                    Ok(ns) => ns,
                    Err((status, reason)) => return error(status, &reason),
                };
                self.history(&req, name, &namespace).await
            }
            (&Method::POST, ["publish"] | ["publish", ""]) => self.grip_publish(req).await,
            (&Method::GET, ["channels", name]) if !name.is_empty() => {
                let namespace = match self.channel_namespace(&req) {
                    Ok(ns) => ns,
                    Err((status, reason)) => return error(status, &reason),
                };
                match self.hub.store().connections.members(&channel::qualified(&namespace, name)).await {
                    Ok(ids) => json_response(
                        StatusCode::OK,
                        json!({
                            "channel": name,
                            "namespace": namespace,
                            "count": ids.len(),
                            "members": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        }),
                    ),
                    Err(e) => self.unavailable(e),
                }
            }
            (&Method::GET, ["connections"]) => self.list_connections(&req).await,
            (&Method::GET, ["plugins"]) => {
                let list: Vec<Value> = self.plugins.list().iter().map(plugin_json).collect();
                json_response(StatusCode::OK, json!({ "plugins": list }))
            }
            (&Method::GET, ["plugins", name]) => match self.plugins.get(name) {
                Some(p) => json_response(StatusCode::OK, plugin_json(&p)),
                None => error(StatusCode::NOT_FOUND, &format!("no plugin named `{name}`")),
            },
            (&Method::GET, ["plugins", name, "timers"]) => match self.plugins.get(name) {
                Some(_) => self.timers(&req, name).await,
                None => error(StatusCode::NOT_FOUND, &format!("no plugin named `{name}`")),
            },
            (&Method::DELETE, ["plugins", name, "timers", timer]) if !timer.is_empty() => {
                if self.plugins.get(name).is_none() {
                    return error(StatusCode::NOT_FOUND, &format!("no plugin named `{name}`"));
                }
                match self.hub.store().timers.cancel(name, timer).await {
                    Ok(true) => {
                        json_response(StatusCode::OK, json!({ "plugin": name, "timer": timer, "cancelled": true }))
                    }
                    Ok(false) => {
                        error(StatusCode::NOT_FOUND, &format!("plugin `{name}` has no timer `{timer}` pending"))
                    }
                    Err(e) => self.unavailable(e),
                }
            }
            (&Method::PUT, ["plugins", name]) => {
                let name = name.to_string();
                if self.plugins.get(&name).is_none() {
                    return error(StatusCode::NOT_FOUND, &format!("no plugin named `{name}`"));
                }
                let bytes = match read_body(req, MAX_COMPONENT_BYTES, "64 MiB", self.opts.request_timeout).await {
                    Ok(body) => body.to_vec(),
                    Err(resp) => return resp,
                };
                match self.plugins.upload(&name, bytes).await {
                    Ok(Some(p)) => json_response(StatusCode::OK, plugin_json(&p)),
                    Ok(None) => error(StatusCode::NOT_FOUND, &format!("no plugin named `{name}`")),
                    Err(reason) => error(StatusCode::UNPROCESSABLE_ENTITY, &format!("component refused: {reason}")),
                }
            }
            (_, ["connections", id, rest @ ..]) => {
                let Ok(id) = id.parse::<ConnId>() else {
                    return error(StatusCode::BAD_REQUEST, "a connection id is a decimal number");
                };
                match (&method, rest) {
                    (&Method::GET, []) => self.connection(id).await,
                    (&Method::DELETE, []) => self.close(&req, id).await,
                    (&Method::POST, ["messages"]) => match self.message_body(req).await {
                        Ok(msg) => match self.hub.send(id, msg).await {
                            Delivery::Queued | Delivery::DroppedOldest(_) => {
                                json_response(StatusCode::OK, json!({ "id": id.to_string(), "delivered": 1 }))
                            }
                            Delivery::Overflow => error(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "the connection's outbound queue is full; it is being closed",
                            ),
                            Delivery::Gone => gone(id),
                            Delivery::Unreachable => unreachable(id),
                        },
                        Err(resp) => resp,
                    },
                    _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }

    /// The channel namespace a `/channels/…` request means.
    /// A publish in the GRIP format (`{"items": [...]}`) to channels of the
    /// namespace `?namespace=` or the default one names, on every host.
    async fn grip_publish(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let namespace = match self.channel_namespace(&req) {
            Ok(ns) => ns,
            Err((status, reason)) => return error(status, &reason),
        };
        // Base64 makes a binary message a third larger.
        let limit = self.opts.max_body_bytes * 2 + (64 << 10);
        let body = match read_body(req, limit, "twice limits.max_message_bytes", self.opts.request_timeout).await {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        let publish = match crate::grip::publish::parse(&body) {
            Ok(p) => p,
            Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
        };
        for (i, item) in publish.items.iter().enumerate() {
            let too_big = match &item.action {
                Action::Send(Message::Text(t)) => t.len() > self.opts.max_body_bytes,
                Action::Send(Message::Binary(b)) => b.len() > self.opts.max_body_bytes,
                Action::Close { code, reason } => {
                    if !close::may_send(*code) || reason.len() > close::MAX_REASON_BYTES {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("items[{i}]: a close code a server may send and a reason of at most 123 bytes"),
                        );
                    }
                    false
                }
            };
            if too_big {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("items[{i}]: message larger than limits.max_message_bytes"),
                );
            }
        }
        let (mut delivered, mut closed) = (0, 0);
        for item in publish.items.iter().cloned() {
            let channel = channel::qualified(&namespace, &item.channel);
            match item.action {
                Action::Send(msg) => {
                    delivered += match self.hub.history().publish_now(&channel, msg).await {
                        Err(msg) => self.hub.publish(&channel, msg),
                        Ok(Ok((_, n))) => n,
                        Ok(Err(e)) => {
                            tracing::warn!(channel, error = %e, "a GRIP publication to a channel with history was lost");
                            0
                        }
                    }
                }
                Action::Close { code, reason } => match self.hub.store().connections.members(&channel).await {
                    Ok(ids) => {
                        for id in ids {
                            if matches!(self.hub.close(id, code, &reason).await, Delivery::Queued) {
                                closed += 1;
                            }
                        }
                    }
                    Err(e) => return self.unavailable(e),
                },
            }
        }
        json_response(
            StatusCode::OK,
            json!({
                "namespace": namespace,
                "items": publish.items.len(),
                "skipped": publish.skipped,
                "delivered": delivered,
                "closed": closed,
            }),
        )
    }

    /// `GET /channels/{channel}/history?since=OFFSET&epoch=EPOCH&limit=N`.
    /// A plugin's pending timers by name, a page of `?limit=` (1 to 1000,
    /// 100 by default) after `?after=`.
    async fn timers(&self, req: &Request<Incoming>, plugin: &str) -> Response<Full<Bytes>> {
        let limit = match query_param(req, "limit").map(|l| l.parse::<usize>()) {
            None => 100,
            Some(Ok(n)) if (1..=1000).contains(&n) => n,
            Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be 1 to 1000"),
        };
        let after = query_param(req, "after");
        match self.hub.store().timers.list(plugin, after.as_deref(), limit + 1).await {
            Ok(mut list) => {
                let more = list.len() > limit;
                list.truncate(limit);
                let next = if more { list.last().map(|t| t.name.clone()) } else { None };
                let timers: Vec<Value> = list
                    .iter()
                    .map(|t| {
                        let mut v = json!({
                            "name": t.name,
                            "due_ms": t.due_ms,
                            "attempts": t.attempts,
                            "route": &*t.route,
                        });
                        match std::str::from_utf8(&t.payload) {
                            Ok(text) => v["text"] = json!(text),
                            Err(_) => v["binary"] = json!(BASE64.encode(&t.payload)),
                        }
                        v
                    })
                    .collect();
                json_response(StatusCode::OK, json!({ "plugin": plugin, "timers": timers, "next": next }))
            }
            Err(e) => self.unavailable(e),
        }
    }

    async fn history(&self, req: &Request<Incoming>, name: &str, namespace: &str) -> Response<Full<Bytes>> {
        use crate::handler::ChannelHistory;
        let qualified = channel::qualified(namespace, name);
        let Some(limits) = self.hub.history().limits(&qualified) else {
            return error(StatusCode::NOT_FOUND, &format!("channel `{name}` keeps no history (see [[channels]])"));
        };
        let limit = match query_param(req, "limit").map(|l| l.parse::<usize>()) {
            None => crate::history::MAX_READ.min(limits.size),
            Some(Ok(n)) if (1..=crate::history::MAX_READ).contains(&n) => n,
            Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be 1 to 1000"),
        };
        let since = match (query_param(req, "since"), query_param(req, "epoch")) {
            (None, None) => None,
            (Some(offset), Some(epoch)) => match offset.parse::<u64>() {
                Ok(offset) => Some(crate::history::Position { offset, epoch: epoch.into() }),
                Err(_) => return error(StatusCode::BAD_REQUEST, "since must be an offset (a whole number)"),
            },
            _ => return error(StatusCode::BAD_REQUEST, "since and epoch go together"),
        };
        match self.hub.history().read(&qualified, limits, since.as_ref(), limit).await {
            Ok(page) => {
                let publications: Vec<Value> = page
                    .publications
                    .iter()
                    .map(|p| match &p.msg {
                        Message::Text(t) => json!({ "offset": p.offset, "text": t }),
                        Message::Binary(b) => json!({ "offset": p.offset, "binary": BASE64.encode(b) }),
                    })
                    .collect();
                json_response(
                    StatusCode::OK,
                    json!({
                        "channel": name,
                        "namespace": namespace,
                        "epoch": &*page.latest.epoch,
                        "offset": page.latest.offset,
                        "recovered": page.recovered,
                        "publications": publications,
                    }),
                )
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("history unavailable: {e}")),
        }
    }

    fn channel_namespace(&self, req: &Request<Incoming>) -> Result<String, (StatusCode, String)> {
        self.plugins.channel_namespaces().resolve(query_param(req, "namespace").as_deref())
    }

    fn unavailable(&self, e: crate::store::StoreError) -> Response<Full<Bytes>> {
        tracing::warn!(error = %e, "admin API: store error");
        error(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
    }

    async fn connection(&self, id: ConnId) -> Response<Full<Bytes>> {
        match self.hub.store().connections.get(id).await {
            Ok(Some(r)) => {
                let seen = self.hub.last_active(&[id]).await;
                let namespaces = self.plugins.channel_namespaces();
                json_response(StatusCode::OK, record_json(&r, seen.get(&id).copied(), &namespaces))
            }
            Ok(None) => gone(id),
            Err(e) => self.unavailable(e),
        }
    }

    async fn list_connections(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let route = query_param(req, "route");
        let after = match query_param(req, "after").map(|a| a.parse::<ConnId>()) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "`after` is a connection id"),
        };
        let limit = match query_param(req, "limit").map(|l| l.parse::<usize>()) {
            None => 100,
            Some(Ok(l)) if (1..=MAX_PAGE).contains(&l) => l,
            Some(_) => return error(StatusCode::BAD_REQUEST, "`limit` is 1..=1000"),
        };
        match self.hub.store().connections.list(route.as_deref(), after, limit).await {
            Ok(records) => {
                let next = (records.len() == limit).then(|| records.last().map(|r| r.id.to_string())).flatten();
                let ids: Vec<ConnId> = records.iter().map(|r| r.id).collect();
                let seen = self.hub.last_active(&ids).await;
                let namespaces = self.plugins.channel_namespaces();
                let list: Vec<Value> =
                    records.iter().map(|r| listed_record_json(r, seen.get(&r.id).copied(), &namespaces)).collect();
                json_response(StatusCode::OK, json!({ "connections": list, "next": next }))
            }
            Err(e) => self.unavailable(e),
        }
    }

    async fn close(&self, req: &Request<Incoming>, id: ConnId) -> Response<Full<Bytes>> {
        let code = match query_param(req, "code").map(|c| c.parse::<u16>()) {
            None => close::NORMAL,
            Some(Ok(c)) if close::may_request(c) => c,
            Some(_) => return error(StatusCode::BAD_REQUEST, &format!("`code` is {}", close::REQUESTABLE)),
        };
        let reason = query_param(req, "reason").unwrap_or_default();
        if let Err(close::Refusal::ReasonTooLong) = close::check_request(code, &reason) {
            return error(StatusCode::BAD_REQUEST, "`reason` is at most 123 bytes");
        }
        match self.hub.close(id, code, &reason).await {
            Delivery::Queued | Delivery::DroppedOldest(_) | Delivery::Overflow => {
                json_response(StatusCode::ACCEPTED, json!({ "id": id.to_string(), "closing": true, "code": code }))
            }
            Delivery::Gone => gone(id),
            Delivery::Unreachable => unreachable(id),
        }
    }

    /// The request body as a message, by content type.
    async fn message_body(&self, req: Request<Incoming>) -> Result<Message, Response<Full<Bytes>>> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_default();
        let text = match content_type.as_str() {
            "text/plain" => true,
            "application/octet-stream" => false,
            _ => {
                return Err(error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "send text/plain (a text message) or application/octet-stream (a binary message)",
                ));
            }
        };
        let body =
            read_body(req, self.opts.max_body_bytes, "limits.max_message_bytes", self.opts.request_timeout).await?;
        if text {
            let s = String::from_utf8(body.to_vec())
                .map_err(|_| error(StatusCode::BAD_REQUEST, "text/plain body is not UTF-8"))?;
            Ok(Message::Text(s))
        } else {
            Ok(Message::Binary(body.to_vec()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_connections_shows_a_bounded_summary_of_each_record() {
        let namespaces = ChannelNamespaces { by_plugin: [("p".into(), "p".into())].into(), default: None };
        let record = |metadata: Vec<(String, String)>, channels: usize| ConnectionRecord {
            id: 7,
            route: "/r".into(),
            plugin: "p".into(),
            remote_addr: String::new(),
            connected_at_ms: 0,
            metadata,
            channels: (0..channels).map(|i| channel::qualified("p", &format!("c{i}"))).collect(),
        };
        let small = record(vec![("nick".into(), "ada".into())], 2);
        let json = listed_record_json(&small, None, &namespaces);
        assert_eq!(json["truncated"], false);
        assert_eq!(json["metadata"], json!({"nick": "ada"}));
        assert_eq!((&json["channels"], &json["channel_count"]), (&json!(["c0", "c1"]), &2.into()));

        let many: Vec<(String, String)> = (0..64).map(|i| (format!("k{i}"), "v".repeat(1000))).collect();
        let big = record(many, 128);
        let json = listed_record_json(&big, None, &namespaces);
        assert_eq!(json["truncated"], true);
        assert_eq!(json["metadata"].as_object().unwrap().len(), LISTED_ITEMS);
        assert_eq!(json["metadata"]["k0"].as_str().unwrap().len(), LISTED_BYTES);
        assert_eq!((json["channels"].as_array().unwrap().len(), &json["channel_count"]), (LISTED_ITEMS, &128.into()));
        assert!(json.to_string().len() < 8 * 1024, "{} bytes", json.to_string().len());
        // The record itself shows everything.
        let whole = record_json(&big, None, &namespaces);
        assert_eq!(whole["metadata"].as_object().unwrap().len(), 64);
        assert_eq!(whole["channels"].as_array().unwrap().len(), 128);
        // A cut never splits a character.
        assert_eq!(cut("éé", 3), "é");
    }

    #[test]
    fn a_route_of_several_handlers_shows_their_namespace_when_they_share_one() {
        let by_plugin: BTreeMap<String, String> =
            [("auth".into(), "app".into()), ("rooms".into(), "app".into()), ("chat".into(), "chat".into())].into();
        let namespaces = ChannelNamespaces { by_plugin, default: None };
        let record = |plugin: &str| ConnectionRecord {
            id: 7,
            route: "/app".into(),
            plugin: plugin.into(),
            remote_addr: String::new(),
            connected_at_ms: 0,
            metadata: Vec::new(),
            channels: vec![channel::qualified("app", "lobby"), channel::qualified("chat", "x")],
        };
        let shared = record_json(&record("auth,rooms"), None, &namespaces);
        assert_eq!((&shared["channel_namespace"], &shared["channels"]), (&json!("app"), &json!(["lobby", "chat:x"])));
        let mixed = record_json(&record("auth,chat"), None, &namespaces);
        assert_eq!(mixed["channel_namespace"], Value::Null);
        assert_eq!(mixed["channels"], json!(["app:lobby", "chat:x"]), "qualified when the handlers' differ");
    }

    #[test]
    fn a_channel_is_in_the_namespace_asked_for_else_the_default_else_the_only_one() {
        let one = ChannelNamespaces { by_plugin: [("a".into(), "a".into())].into(), default: None };
        assert_eq!(one.resolve(None), Ok("a".into()));
        let by_plugin: BTreeMap<String, String> =
            [("a".into(), "shared".into()), ("b".into(), "shared".into()), ("c".into(), "c".into())].into();
        let two = ChannelNamespaces { by_plugin, default: None };
        assert_eq!(two.all(), ["c", "shared"]);
        assert_eq!(two.resolve(Some("c")), Ok("c".into()));
        let (status, reason) = two.resolve(None).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(reason.contains("one of: c, shared") && reason.contains("default_channel_namespace"), "{reason}");
        assert_eq!(two.resolve(Some("a")).unwrap_err().0, StatusCode::NOT_FOUND, "a plugin, not a namespace");
        let with_default = ChannelNamespaces { default: Some("shared".into()), ..two };
        assert_eq!(with_default.resolve(None), Ok("shared".into()));
        assert_eq!(with_default.resolve(Some("c")), Ok("c".into()));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn only_this_machines_tools_reach_a_tokenless_admin_api() {
        for host in ["127.0.0.1:8081", "127.0.0.1", "127.9.9.9:1", "localhost:8081", "LOCALHOST", "[::1]:8081"] {
            assert!(local_request(&headers(&[("host", host)])), "{host}");
        }
        for host in
            ["evil.example", "evil.example:8081", "10.0.0.5:8081", "[::2]:8081", "localhost.evil.example", "[::1"]
        {
            assert!(!local_request(&headers(&[("host", host)])), "{host}");
        }
        assert!(!local_request(&headers(&[])), "no Host header");
        let local = ("host", "127.0.0.1:8081");
        assert!(local_request(&headers(&[local, ("origin", "http://localhost:3000")])));
        assert!(local_request(&headers(&[local, ("origin", "https://127.0.0.1")])));
        for origin in
            ["http://evil.example", "null", "file://", "http://127.0.0.1.evil.example", "chrome-extension://x"]
        {
            assert!(!local_request(&headers(&[local, ("origin", origin)])), "{origin}");
        }
    }
}
