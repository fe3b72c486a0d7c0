//! Random bytes at every socket the host listens on: the HTTP handshake,
//! WebSocket frames after a good handshake, and the admin API. Whatever
//! arrives, the host answers with an HTTP status or a close code it owns,
//! never panics, and goes on serving a well-behaved client.

use std::time::Duration;

use crate::common::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` on a fresh connection and reads what comes back (until
/// the host closes or a short quiet period passes).
async fn poke(addr: std::net::SocketAddr, prefix: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.expect("the host still accepts connections");
    tcp.write_all(prefix).await.unwrap();
    let _ = tcp.write_all(bytes).await;
    let _ = tcp.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut out)).await;
    out
}

/// A well-formed upgrade request for `/echo`.
fn upgrade_request() -> Vec<u8> {
    b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
      Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec()
}

/// A masked client frame with the given first byte and payload.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let len = payload.len();
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The close code in the first close frame of a server byte stream after
/// the 101 response, if any.
fn close_code(response: &[u8]) -> Option<u16> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut rest = &response[end..];
    while rest.len() >= 2 {
        let (op, len) = (rest[0] & 0x0f, (rest[1] & 0x7f) as usize);
        let (header, len) = match len {
            126 if rest.len() >= 4 => (4, u16::from_be_bytes([rest[2], rest[3]]) as usize),
            127 if rest.len() >= 10 => (10, u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize),
            126 | 127 => return None,
            n => (2, n),
        };
        if rest.len() < header + len {
            return None;
        }
        if op == 0x8 {
            return (len >= 2).then(|| u16::from_be_bytes([rest[header], rest[header + 1]]));
        }
        rest = &rest[header + len..];
    }
    None
}

fn host_and_runtime() -> (tokio::runtime::Runtime, wharf::app::Running) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = config(&[("/echo", "echo")], "[limits]\nmax_message_bytes = 4096\nhandshake_timeout_ms = 1000\n");
    let host = rt.block_on(spawn(config));
    (rt, host)
}

fn still_serves(rt: &tokio::runtime::Runtime, host: &wharf::app::Running) {
    rt.block_on(async {
        let mut ws = connect(host, "/echo").await;
        send_text(&mut ws, "still here").await;
        assert_eq!(expect_text(&mut ws).await, "still here");
    });
}

/// Whether a close code may be sent on the wire (RFC 6455 section 7.4): the
/// host answers bad frames with 1002, 1007 or 1009, and echoes a client's
/// valid close code.
fn valid_on_the_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

#[test]
fn random_bytes_at_the_handshake_get_an_http_answer_or_a_close() {
    let (rt, host) = host_and_runtime();
    let request_line =
        prop_oneof![Just(b"GET /echo HTTP/1.1\r\n".to_vec()), Just(b"GET / HTTP/1.1\r\n".to_vec()), Just(Vec::new()),];
    let header = prop::collection::vec(any::<u8>(), 0..300);
    proptest!(ProptestConfig::with_cases(96), |(line in request_line, junk in header)| {
        let out = rt.block_on(poke(host.addr, &line, &junk));
        if !out.is_empty() {
            let text = String::from_utf8_lossy(&out);
            prop_assert!(text.starts_with("HTTP/1.1 "), "an HTTP answer: {text:?}");
            prop_assert!(!text.starts_with("HTTP/1.1 5"), "a client error is never a server error: {text:?}");
        }
    });
    still_serves(&rt, &host);
    rt.block_on(host.stop()).unwrap();
}

#[test]
fn random_frames_after_a_good_handshake_get_a_close_code() {
    let (rt, host) = host_and_runtime();
    let frames = prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)), 1..4);
    let raw_tail = prop::collection::vec(any::<u8>(), 0..64);
    proptest!(ProptestConfig::with_cases(128), |(frames in frames, tail in raw_tail)| {
        let mut bytes: Vec<u8> = frames.iter().flat_map(|(first, payload)| frame(*first, payload)).collect();
        bytes.extend(tail);
        let out = rt.block_on(poke(host.addr, &upgrade_request(), &bytes));
        let text = String::from_utf8_lossy(&out);
        prop_assert!(text.starts_with("HTTP/1.1 101"), "the handshake itself is good: {text:?}");
        if let Some(code) = close_code(&out) {
            prop_assert!(valid_on_the_wire(code), "close code {code}");
        }
    });
    still_serves(&rt, &host);
    rt.block_on(host.stop()).unwrap();
}

#[test]
fn random_admin_requests_get_json_answers() {
    let (rt, host) = host_and_runtime();
    let admin_addr = host.admin_addr.unwrap();
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]);
    let path = prop_oneof![
        "/[a-z0-9/?=&%._-]{0,40}",
        "/connections/[0-9a-z-]{0,24}(/messages)?(\\?code=[0-9a-z]{0,6})?",
        "/kv/[a-z]{0,5}(/[a-z0-9%]{0,12})?",
        "/plugins/[a-z]{0,8}",
    ];
    let content_type = prop::sample::select(vec!["application/json", "text/plain", "application/wasm", "x/y"]);
    let body = prop::collection::vec(any::<u8>(), 0..200);
    proptest!(ProptestConfig::with_cases(128), |(method in method, path in path, ct in content_type, body in body)| {
        let (status, text) = rt.block_on(http(admin_addr, method, &path, Some(ADMIN_TOKEN), Some((ct, &body))));
        prop_assert!((200..500).contains(&status), "{method} {path}: {status} {text}");
        if status >= 400 {
            let json: serde_json::Value = serde_json::from_str(&text).expect("errors are JSON");
            prop_assert!(json["error"].is_string(), "{text}");
        }
    });
    still_serves(&rt, &host);
    rt.block_on(host.stop()).unwrap();
}
