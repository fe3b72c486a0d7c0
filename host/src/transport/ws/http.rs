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
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tower::ServiceExt;

use super::deflate;
use super::stream::Stream;
use super::{Listener, socket};
use crate::close;
use crate::config::Compression;
use crate::handler::OpenRequest;
use crate::hub::{Admission, Refused, Route};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Serves HTTP on one TCP connection until it upgrades or ends.
pub(super) async fn serve_connection(shared: Arc<Listener>, mut stream: TcpStream, peer: SocketAddr) {
    // The per-address share first, so that one address holding its share
    // takes none of the places others need. A trusted proxy carries many
    // clients: it is held to the host's cap only.
    let per_ip = if shared.opts.trusted_proxies.trusts(peer.ip()) {
        Some(None)
    } else {
        shared.handshakes_per_ip.acquire(peer.ip(), shared.opts.max_handshakes_per_ip).map(Some)
    };
    let handshake = per_ip.and_then(|own| Some((own, shared.handshakes.acquire(shared.opts.max_handshakes)?)));
    let Some(_places) = handshake else {
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
    let stream = match &shared.opts.tls {
        None => Stream::Plain(stream),
        Some(tls) => match tokio::time::timeout(timeout, tls.accept(stream)).await {
            Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no TLS handshake within the handshake timeout");
                return;
            }
        },
    };
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

async fn handle(shared: Arc<Listener>, req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, Infallible> {
    if let Some(route) = shared.hub.route(req.uri().path()) {
        return Ok(upgrade(shared, req, peer, route).await);
    }
    match &shared.static_files {
        Some(files) if files.allows(req.uri().path()).await => match files.serve.clone().oneshot(req).await {
            Ok(resp) => Ok(resp.map(|b| b.boxed_unsync())),
            Err(never) => match never {},
        },
        _ => Ok(plain(StatusCode::NOT_FOUND, "not found")),
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

fn refused(r: Refused) -> Response<Body> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = plain(status, r.reason);
    if r.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// Checks the handshake, asks the hub to admit and open the connection, and
/// answers 101 or the refusal.
async fn upgrade(
    shared: Arc<Listener>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    route: Arc<Route>,
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
    let deflate = match route.policy.compression {
        Compression::Off => None,
        Compression::Deflate => deflate::negotiate(
            req.headers().get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter().filter_map(|v| v.to_str().ok()),
        ),
    };
    // Behind a trusted proxy, the client is the address it reports.
    let client = shared.opts.trusted_proxies.client(peer, req.headers());
    let mut open = open_request(&req, client);
    let origin = req.headers().get(header::ORIGIN).map(|v| String::from_utf8_lossy(v.as_bytes()));
    let admission = match shared.hub.admit(&route, client.ip(), origin.as_deref(), &mut open) {
        Ok(a) => a,
        Err(r) => return refused(r),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Run the open in its own task: if the client goes away mid-handshake,
    // hyper drops this future, but the open still completes and, if it was
    // accepted, the connection is closed with on-close like any other.
    let opening =
        shared.tasks.spawn(open_connection(shared.clone(), route, admission, open, accept_key, deflate, on_upgrade));
    opening.await.unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, close::HANDLER_ERROR_REASON))
}

/// Opens the connection through the hub, then answers 101 (and starts the
/// connection's task once the upgrade completes) or the refusal.
async fn open_connection(
    shared: Arc<Listener>,
    route: Arc<Route>,
    admission: Admission,
    open: OpenRequest,
    accept_key: String,
    deflate: Option<(deflate::Agreed, String)>,
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    let opened = match shared.hub.open(route, admission, open).await {
        Ok(opened) => opened,
        Err(r) => return refused(r),
    };
    let (conn, subprotocol) = (opened.conn, opened.subprotocol);
    let task_shared = shared.clone();
    let agreed = deflate.as_ref().map(|(a, _)| *a);
    // The connection's task: it lives as long as the connection, so every
    // byte of this future is a byte of every idle connection.
    let task = async move {
        let shared = task_shared;
        match on_upgrade.await {
            Ok(upgraded) => socket::run(&shared, upgraded, conn, agreed).await,
            Err(_) => conn.close(close::ABNORMAL, "").await,
        }
    };
    shared.tasks.spawn(task);

    let mut resp = Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept_key).expect("base64 is a valid header"));
    if let Some(p) = subprotocol.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    if let Some(v) = deflate.and_then(|(_, v)| HeaderValue::from_str(&v).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
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
