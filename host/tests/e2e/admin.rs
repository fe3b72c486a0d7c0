//! The admin HTTP API end to end: authentication, sending to channels and
//! connections from outside, closing, presence, metrics and health.

use crate::common::*;
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

async fn chat_host() -> wharf::app::Running {
    spawn(config(&[("/chat", "chat"), ("/faulty", "faulty")], "")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_but_healthz_needs_the_token() {
    let host = chat_host().await;
    let addr = host.admin_addr.unwrap();
    let endpoints = [
        ("GET", "/metrics"),
        ("GET", "/connections"),
        ("GET", "/connections/1"),
        ("DELETE", "/connections/1"),
        ("POST", "/connections/1/messages"),
        ("GET", "/channels/room?namespace=chat"),
        ("POST", "/channels/room/messages?namespace=chat"),
    ];
    for (method, path) in endpoints {
        let body = Some(("text/plain", b"x".as_slice()));
        let (status, text) = http(addr, method, path, None, body).await;
        assert_eq!(status, 401, "{method} {path} without a token: {text}");
        let (status, _) = http(addr, method, path, Some("wrong-token"), body).await;
        assert_eq!(status, 401, "{method} {path} with a wrong token");
        let (status, text) = http(addr, method, path, Some(ADMIN_TOKEN), body).await;
        assert_ne!(status, 401, "{method} {path} with the token: {text}");
        assert!(status < 500, "{method} {path}: {status} {text}");
    }
    let (status, body) = http(addr, "GET", "/healthz", None, None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_send_from_outside() {
    let host = chat_host().await;
    let mut a = connect(&host, "/chat").await;
    let mut b = connect(&host, "/chat").await;
    // Both joined `room` in on-open.
    let (status, json) = admin(&host, "GET", "/channels/room?namespace=chat", None).await;
    assert_eq!(status, 200);
    assert_eq!(json["count"], 2);
    // Two plugins, so two channel namespaces and no default: a bare name is
    // refused with the choices.
    let (status, json) = admin(&host, "POST", "/channels/room/messages", Some(("text/plain", b"x"))).await;
    assert_eq!(status, 400, "{json}");
    assert!(json["error"].as_str().unwrap().contains("one of: chat, faulty"), "{json}");

    let (status, json) = admin(
        &host,
        "POST",
        "/channels/room/messages?namespace=chat",
        Some(("text/plain; charset=utf-8", b"hello room")),
    )
    .await;
    assert_eq!((status, json["delivered"].as_u64()), (200, Some(2)));
    assert_eq!(expect_text(&mut a).await, "hello room");
    assert_eq!(expect_text(&mut b).await, "hello room");

    let (status, json) =
        admin(&host, "POST", "/channels/room/messages?namespace=chat", Some(("application/octet-stream", &[0, 1, 2])))
            .await;
    assert_eq!((status, json["delivered"].as_u64()), (200, Some(2)));
    assert_eq!(next_data(&mut a).await, Message::binary(vec![0u8, 1, 2]));
    assert_eq!(next_data(&mut b).await, Message::binary(vec![0u8, 1, 2]));

    let (status, json) =
        admin(&host, "POST", "/channels/nobody/messages?namespace=chat", Some(("text/plain", b"x"))).await;
    assert_eq!((status, json["delivered"].as_u64()), (200, Some(0)));
    let (status, _) =
        admin(&host, "POST", "/channels/room/messages?namespace=chat", Some(("application/json", b"{}"))).await;
    assert_eq!(status, 415);

    // Send to one connection, found through the connection list.
    let (status, json) = admin(&host, "GET", "/connections?route=/chat", None).await;
    assert_eq!(status, 200);
    let ids: Vec<String> =
        json["connections"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 2);
    let (status, _) =
        admin(&host, "POST", &format!("/connections/{}/messages", ids[1]), Some(("text/plain", b"just you"))).await;
    assert_eq!(status, 200);
    assert_eq!(expect_text(&mut b).await, "just you");
    expect_silence(&mut a, std::time::Duration::from_millis(100)).await;

    let (status, json) = admin(&host, "POST", "/connections/999999/messages", Some(("text/plain", b"x"))).await;
    assert_eq!(status, 410, "{json}");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_info_presence_and_close() {
    let host = chat_host().await;
    let mut ws = connect(&host, "/chat").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let sent_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    send_text(&mut ws, "/nick ada").await;
    assert_eq!(expect_text(&mut ws).await, "nickname set to [ada]");
    let (_, list) = admin(&host, "GET", "/connections", None).await;
    let id = list["connections"][0]["id"].as_str().unwrap().to_owned();
    assert!(list["connections"][0]["last_active_at"].as_u64().unwrap() >= sent_at, "{list}");

    let (status, info) = admin(&host, "GET", &format!("/connections/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(info["route"], "/chat");
    assert_eq!(info["metadata"]["nick"], "ada");
    assert_eq!(info["plugin"], "chat");
    assert_eq!((&info["channel_namespace"], &info["channels"]), (&"chat".into(), &serde_json::json!(["room"])));
    assert_eq!(info["channels"], serde_json::json!(["room"]));
    assert!(info["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    let connected = info["connected_at"].as_u64().unwrap();
    assert!(connected < sent_at, "connected {connected}, message sent at {sent_at}");
    assert!(info["last_active_at"].as_u64().unwrap() >= sent_at, "{info}");

    // Close it from outside with a code and reason the client sees.
    let (status, _) = admin(&host, "DELETE", &format!("/connections/{id}?code=4001&reason=maintenance"), None).await;
    assert_eq!(status, 202);
    match next_data(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "maintenance");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    while let Some(Ok(_)) = ws.next().await {}

    // Presence forgets it: info, list and channel membership.
    eventually(|| async {
        let (status, _) = admin(&host, "GET", &format!("/connections/{id}"), None).await;
        (status == 410).then_some(())
    })
    .await;
    let (_, members) = admin(&host, "GET", "/channels/room?namespace=chat", None).await;
    assert_eq!(members["count"], 0);
    let (_, list) = admin(&host, "GET", "/connections", None).await;
    assert_eq!(list["connections"], serde_json::json!([]));
    let (status, _) = admin(&host, "DELETE", &format!("/connections/{id}"), None).await;
    assert_eq!(status, 410);
    let (status, _) = admin(&host, "DELETE", "/connections/1?code=1006", None).await;
    assert_eq!(status, 400, "1006 may not be sent");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_list_pages() {
    let host = chat_host().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(connect(&host, "/chat").await);
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let path = format!("/connections?limit=2{after}");
        let (status, page) = admin(&host, "GET", &path, None).await;
        assert_eq!(status, 200);
        for c in page["connections"].as_array().unwrap() {
            seen.push(c["id"].as_str().unwrap().to_owned());
        }
        match &page["next"] {
            Value::String(next) => after = format!("&after={next}"),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 5);
    seen.dedup();
    assert_eq!(seen.len(), 5, "pages do not repeat");
    let (status, _) = admin(&host, "GET", "/connections?limit=0", None).await;
    assert_eq!(status, 400);
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_messages_and_traps() {
    let host = chat_host().await;
    let mut a = connect(&host, "/chat").await;
    let mut b = connect(&host, "/chat").await;
    send_text(&mut a, "hi").await;
    assert_eq!(expect_text(&mut a).await, "anonymous: hi");
    assert_eq!(expect_text(&mut b).await, "anonymous: hi");
    let mut bad = connect(&host, "/faulty").await;
    send_text(&mut bad, "panic").await;
    assert_eq!(expect_close(&mut bad).await, 1011);

    let (status, text) = admin(&host, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = text.as_str().expect("metrics are text").to_owned();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no `{line_start}` in metrics:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value(r#"wharf_connections_open{route="/chat"}"#), 2.0);
    assert_eq!(value(r#"wharf_connections_total{route="/chat"}"#), 2.0);
    assert_eq!(value(r#"wharf_messages_received_total{route="/chat"}"#), 1.0);
    assert_eq!(value(r#"wharf_messages_sent_total{route="/chat"}"#), 2.0);
    assert_eq!(value(r#"wharf_handler_traps_total{event="message",plugin="faulty"}"#), 1.0);
    assert!(value(r#"wharf_handler_duration_seconds_count{event="message",plugin="chat"}"#) >= 1.0);
    assert!(value(r#"wharf_store_duration_seconds_count{op="metadata_get"}"#) >= 1.0);
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413() {
    let host = spawn(config(&[("/chat", "chat")], "[limits]\nmax_message_bytes = 1024")).await;
    let big = vec![b'x'; 2048];
    let (status, json) = admin(&host, "POST", "/channels/room/messages", Some(("text/plain", &big))).await;
    assert_eq!(status, 413, "{json}");
    assert!(json["error"].as_str().unwrap().contains("limits.max_message_bytes"), "{json}");
    let (status, _) = admin(&host, "POST", "/channels/room/messages", Some(("text/plain", &big[..1000]))).await;
    assert_eq!(status, 200, "a body within the limit is accepted");
    host.stop().await.unwrap();
}

/// A text/plain POST to the room, as a web page can send one without a
/// preflight, with this `Host` and `Origin`.
fn room_post(host: &str, origin: Option<&str>) -> Vec<u8> {
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    format!(
        "POST /channels/room/messages HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: text/plain\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_this_machines_tools_are_served() {
    let mut config = config(&[("/chat", "chat")], "");
    config.admin.token = None;
    let host = spawn(config).await;
    let addr = host.admin_addr.unwrap();
    let mut ws = connect(&host, "/chat").await;
    let local = addr.to_string();

    // A page of another origin, and a rebound name (Host: evil.example),
    // are refused before anything is delivered or read.
    for (host_header, origin) in [
        (local.as_str(), Some("http://evil.example")),
        (local.as_str(), Some("null")),
        ("evil.example", Some("http://evil.example")),
        ("evil.example", None),
    ] {
        let (status, body) = http_raw(addr, &room_post(host_header, origin)).await;
        assert_eq!(status, 403, "Host {host_header}, Origin {origin:?}: {body}");
        assert!(body.contains("loopback"), "{body}");
    }
    let list = b"GET /connections HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    assert_eq!(http_raw(addr, list).await.0, 403, "the connection list is not readable by a rebound name");
    expect_silence(&mut ws, std::time::Duration::from_millis(300)).await;

    // The machine's own tools (no Origin, or a page on localhost) are served.
    let (status, body) = http_raw(addr, &room_post(&local, None)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expect_text(&mut ws).await, "hello");
    let (status, body) =
        http_raw(addr, &room_post(&format!("localhost:{}", addr.port()), Some("http://localhost:3000"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expect_text(&mut ws).await, "hello");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_answered_408() {
    let host = spawn(config(&[("/chat", "chat")], "[limits]\nhandshake_timeout_ms = 300")).await;
    let addr = host.admin_addr.unwrap();
    let stalled = format!(
        "POST /channels/room/messages HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: text/plain\r\nContent-Length: 100\r\n\r\nonly part of it"
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(stalled.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut resp = vec![0; 512];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut resp)).await.expect("answered before the test's wait").unwrap();
    let resp = String::from_utf8_lossy(&resp[..n]);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "answered after the request timeout, not never");
    host.stop().await.unwrap();
}
