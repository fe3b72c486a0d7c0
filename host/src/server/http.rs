//! HTTP on the shared listener: the WebSocket upgrade (with `on-open` deciding
//! accept or reject) and static files for everything else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tower::ServiceExt;

use super::Shared;
use super::connection::{self, CLOSE_HANDLER_ERROR};
use super::dispatch::Dispatch;
use super::policy::Place;
use super::registry::QueuePolicy;
use crate::events::OpenRequest;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The places an open connection holds: one of the host's and, when the
/// route is capped, one of the route's.
pub(crate) type Places = (Place, Option<Place>);

/// Serves HTTP on one TCP connection until it upgrades or ends.
pub(crate) async fn serve_connection<D: Dispatch>(shared: Arc<Shared<D>>, mut stream: TcpStream, peer: SocketAddr) {
    let Some(_handshake) = shared.handshakes.acquire(shared.opts.max_handshakes) else {
        tracing::debug!(%peer, "too many connections in their handshake; refusing");
        let body = "too many connections in their handshake; retry later";
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
        return;
    };
    // A client that sends nothing at all is dropped after the handshake
    // timeout; hyper's header timeout covers one that sends too slowly.
    let timeout = shared.opts.handshake_timeout;
    if !matches!(tokio::time::timeout(timeout, stream.readable()).await, Ok(Ok(()))) {
        tracing::debug!(%peer, "no request within the handshake timeout");
        return;
    }
    let svc_shared = shared.clone();
    let service = service_fn(move |req| handle(svc_shared.clone(), req, peer));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        }
        _ = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

async fn handle<D: Dispatch>(
    shared: Arc<Shared<D>>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    if let Some((path, route)) = shared.dispatch.route(req.uri().path()) {
        return Ok(upgrade(shared, req, peer, path, route).await);
    }
    match &shared.static_files {
        Some(dir) => match dir.clone().oneshot(req).await {
            Ok(resp) => Ok(resp.map(|b| b.boxed_unsync())),
            Err(never) => match never {},
        },
        None => Ok(plain(StatusCode::NOT_FOUND, "not found")),
    }
}

fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(text.into()).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the handshake, asks the handler, and answers 101 or its rejection.
async fn upgrade<D: Dispatch>(
    shared: Arc<Shared<D>>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    path: Arc<str>,
    route: D::Route,
) -> Response<Body> {
    if !header_has_token(&req, header::UPGRADE, "websocket") || !header_has_token(&req, header::CONNECTION, "upgrade") {
        let mut resp = plain(StatusCode::UPGRADE_REQUIRED, "this path only speaks WebSocket");
        resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return resp;
    }
    if req.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "a WebSocket upgrade must use GET");
    }
    if req.headers().get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut resp = plain(StatusCode::BAD_REQUEST, "unsupported WebSocket version");
        resp.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return resp;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let open = open_request(&req, peer);
    let policy = D::policy(&route);
    let origin = req.headers().get(header::ORIGIN).map(|v| String::from_utf8_lossy(v.as_bytes()));
    if !policy.admit_origin(origin.as_deref()) {
        tracing::debug!(%peer, route = %path, origin = origin.as_deref(), "origin not allowed");
        return plain(StatusCode::FORBIDDEN, "origin not allowed");
    }
    if let Err(why) = policy.check_offer(&open.subprotocols) {
        return plain(StatusCode::BAD_REQUEST, why);
    }
    if !policy.admit_rate(peer.ip()) {
        let mut resp = plain(StatusCode::TOO_MANY_REQUESTS, "too many new connections; retry later");
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    }
    let Some(host_place) = shared.open.acquire(shared.opts.max_connections) else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "the host is at its connection limit");
    };
    let route_place = match policy.max_connections {
        Some(max) => {
            let counter = shared.open_per_route.entry(path.clone()).or_default().clone();
            match counter.acquire(max) {
                Some(place) => Some(place),
                None => return plain(StatusCode::SERVICE_UNAVAILABLE, "the route is at its connection limit"),
            }
        }
        None => None,
    };
    let places = (host_place, route_place);
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Run the open in its own task: if the client goes away mid-handshake,
    // hyper drops this future, but the open still completes and, if it was
    // accepted, the connection is closed with on-close like any other.
    let opening =
        shared.tasks.spawn(open_connection(shared.clone(), path, route, open, places, accept_key, on_upgrade));
    opening.await.unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "handler error"))
}

/// Asks the handler, then answers 101 (and starts the connection's task once
/// the upgrade completes) or the handler's rejection.
async fn open_connection<D: Dispatch>(
    shared: Arc<Shared<D>>,
    path: Arc<str>,
    route: D::Route,
    open: OpenRequest,
    places: Places,
    accept_key: String,
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    let policy = D::policy(&route);
    let queue = QueuePolicy { capacity: policy.outbound_queue, slow_reader: policy.slow_reader };
    let offered = open.subprotocols.clone();
    let (id, inbox) = shared.registry.reserve(path.clone(), queue);
    let accept = match shared.dispatch.open(&route, id, open).await {
        Ok(Ok(accept)) => accept,
        Ok(Err(reject)) => {
            shared.registry.remove(id);
            let status = StatusCode::from_u16(reject.status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::FORBIDDEN);
            return plain(status, reject.reason);
        }
        Err(failure) => {
            shared.registry.remove(id);
            tracing::warn!(conn = id, route = %path, %failure, "on-open failed; refusing the connection");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "handler error");
        }
    };
    let subprotocol = match policy.negotiate(&offered, accept.subprotocol.as_deref()) {
        Ok(p) => p,
        Err(why) => {
            // The handler accepted, so its on-close must still run once.
            shared.registry.remove(id);
            tracing::warn!(conn = id, route = %path, why, "on-open chose a bad subprotocol; refusing the connection");
            shared.dispatch.close(&route, id, CLOSE_HANDLER_ERROR, "handler error").await;
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "handler error");
        }
    };
    shared.registry.activate(id);
    shared.metrics.connections_total.with_label_values(&[&*path]).inc();
    shared.metrics.connections_open.with_label_values(&[&*path]).inc();

    let task_shared = shared.clone();
    shared.tasks.spawn(async move {
        let shared = task_shared;
        let ws = match on_upgrade.await.map(|u| u.downcast::<TokioIo<TcpStream>>()) {
            Ok(Ok(parts)) => {
                let stream = parts.io.into_inner();
                let config = Shared::<D>::ws_config(D::policy(&route));
                WebSocketStream::from_partially_read(stream, parts.read_buf.to_vec(), Role::Server, Some(config)).await
            }
            Ok(Err(_)) | Err(_) => {
                shared.registry.remove(id);
                shared.metrics.connections_open.with_label_values(&[&*path]).dec();
                shared.dispatch.close(&route, id, 1006, "").await;
                return;
            }
        };
        connection::run(shared, ws, id, path, route, inbox, places).await;
    });

    let mut resp = Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept_key).expect("base64 is a valid header"));
    if let Some(p) = subprotocol.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}

fn open_request(req: &Request<Incoming>, peer: SocketAddr) -> OpenRequest {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let subprotocols = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    OpenRequest {
        path: req.uri().path().to_owned(),
        query: req.uri().query().unwrap_or("").to_owned(),
        headers,
        subprotocols,
        remote_addr: peer.to_string(),
    }
}
