//! Clients that misbehave get the right answer: oversized, invalid and
//! malformed frames, slow and silent clients, too many connections, foreign
//! origins and unknown subprotocols. Wherever a connection that opened ends,
//! its `on-close` runs exactly once with the code it ended with.

use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The close code `faulty`'s on-close recorded for connection `id`, asked on
/// the unlimited `/faulty` route; waits until it is recorded.
async fn recorded_close(host: &wharf::app::Running, id: &str) -> String {
    eventually(|| async move {
        let mut ws = connect(host, "/faulty").await;
        let code = ask(&mut ws, &format!("close-code?{id}")).await;
        (!code.is_empty()).then_some(code)
    })
    .await
}

/// The HTTP status a handshake was refused with.
async fn refused_status(request: impl IntoClientRequest + Unpin) -> u16 {
    refusal(request).await.0
}

const FRAMES: &str = r#"
[plugins.faulty]
component = @faulty@
[[routes]]
path = "/faulty"
plugin = "faulty"
[[routes]]
path = "/limited"
plugin = "faulty"
[routes.limits]
max_message_bytes = 1024
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_1009_1007_and_1002_and_on_close_runs_once() {
    let host = spawn(config_from(FRAMES)).await;
    let bad_text = Frame::message(vec![b'a', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    let reserved = Frame::message(vec![1, 2, 3], OpCode::Data(Data::Reserved(3)), true);
    let cases = [
        // Too big for the route.
        (Message::text("y".repeat(1025)), 1009),
        // A text message that is not UTF-8.
        (Message::Frame(bad_text), 1007),
        // A frame with a reserved opcode.
        (Message::Frame(reserved), 1002),
    ];
    let mut ids = Vec::new();
    for (frame, code) in cases {
        let mut ws = connect(&host, "/limited").await;
        let id = ask(&mut ws, "whoami").await;
        assert_eq!(ask(&mut ws, &"y".repeat(1024)).await.len(), 1024, "the limit itself is allowed");
        ws.send(frame).await.unwrap();
        assert_eq!(expect_close(&mut ws).await, code);
        ids.push((id, code));
    }
    // One checker, kept open, so that only the three count.
    let mut checker = connect(&host, "/faulty").await;
    for (id, code) in &ids {
        let mut recorded = String::new();
        for _ in 0..500 {
            recorded = ask(&mut checker, &format!("close-code?{id}")).await;
            if !recorded.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(recorded, code.to_string(), "on-close of connection {id}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ask(&mut checker, "closes?").await, "3", "each on-close ran exactly once");
    host.stop().await.unwrap();
}

const TIMERS: &str = r#"
[plugins.faulty]
component = @faulty@
[[routes]]
path = "/faulty"
plugin = "faulty"
[[routes]]
path = "/pinged"
plugin = "faulty"
[routes.limits]
ping_interval_ms = 100
missed_pongs = 2
[[routes]]
path = "/short"
plugin = "faulty"
[routes.limits]
max_lifetime_ms = 300
ping_interval_ms = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_after_missed_pings_and_lifetimes_end() {
    let host = spawn(config_from(TIMERS)).await;

    // A client that reads answers pings (tungstenite replies) and stays.
    let mut alive = connect(&host, "/pinged").await;
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(Some(msg)) = tokio::time::timeout_at(until, alive.next()).await {
        match msg.expect("read") {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 3, "the server pings every 100 ms ({pings} pings in 800 ms)");
    assert_eq!(ask(&mut alive, "still").await, "still");

    // A client that stops reading misses its pongs and is closed with 1001.
    let mut silent = connect(&host, "/pinged").await;
    let id = ask(&mut silent, "whoami").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(expect_close(&mut silent).await, 1001);
    assert_eq!(recorded_close(&host, &id).await, "1001");

    // A route with a maximum lifetime closes with 1001 when it is reached,
    // however active the client is.
    let mut short = connect(&host, "/short").await;
    let id = ask(&mut short, "whoami").await;
    let started = std::time::Instant::now();
    assert_eq!(expect_close(&mut short).await, 1001);
    assert!(started.elapsed() < WAIT);
    assert_eq!(recorded_close(&host, &id).await, "1001");
    host.stop().await.unwrap();
}

/// How many text messages arrive before the close frame, and its code.
async fn texts_until_close(ws: &mut Client) -> (usize, Option<u16>) {
    let mut received = 0;
    loop {
        match next_data(ws).await {
            Message::Text(_) => received += 1,
            Message::Close(frame) => return (received, frame.map(|f| u16::from(f.code))),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_closed_or_lose_their_oldest_messages() {
    let body = r#"
[plugins.faulty]
component = @faulty@
[plugins.faulty.limits]
max_messages_per_event = 20
[plugins.broadcast]
component = @broadcast@
[[routes]]
path = "/faulty"
plugin = "faulty"
[[routes]]
path = "/closes"
plugin = "faulty"
[routes.limits]
outbound_queue = 4
[[routes]]
path = "/drops"
plugin = "faulty"
[routes.limits]
outbound_queue = 4
slow_reader = "drop-oldest"
[[routes]]
path = "/bytes"
plugin = "faulty"
[routes.limits]
outbound_queue_bytes = 100
[[routes]]
path = "/broadcast"
plugin = "broadcast"
[routes.limits]
outbound_queue = 8
write_timeout_ms = 300
ping_interval_ms = 0
[[routes]]
path = "/stuck"
plugin = "faulty"
[routes.limits]
outbound_queue_bytes = 16_777_216
write_timeout_ms = 300
ping_interval_ms = 0
"#;
    let host = spawn(config_from(body)).await;

    // Twenty messages into a queue of four: the default policy closes 1008.
    let mut ws = connect(&host, "/closes").await;
    let id = ask(&mut ws, "whoami").await;
    send_text(&mut ws, "flood:8").await;
    let (received, code) = texts_until_close(&mut ws).await;
    assert_eq!(code, Some(1008));
    assert!(received <= 5, "at most the queue and the direct reply ({received})");
    assert_eq!(recorded_close(&host, &id).await, "1008");

    // The queue is bounded in bytes as well: two 40-byte messages fit in
    // 100 bytes (with 16,384 message places), the third closes 1008.
    let mut ws = connect(&host, "/bytes").await;
    send_text(&mut ws, "flood:40").await;
    let (received, code) = texts_until_close(&mut ws).await;
    assert_eq!(code, Some(1008));
    assert!(received <= 3, "at most two queued and the direct reply ({received})");

    // With drop-oldest it stays open and gets the newest four, then the reply.
    let mut ws = connect(&host, "/drops").await;
    send_text(&mut ws, "flood:8").await;
    for _ in 0..4 {
        assert_eq!(expect_text(&mut ws).await, "x".repeat(8));
    }
    assert_eq!(expect_text(&mut ws).await, "flood stopped after 20: quota exceeded");
    assert_eq!(ask(&mut ws, "still open").await, "still open");
    let (_, metrics) = admin(&host, "GET", "/metrics", None).await;
    assert!(metrics.as_str().unwrap().contains("wharf_outbound_dropped_total 16"), "{metrics}");

    // A write that does not finish within the write timeout: the host drops
    // the connection (the write may have stopped inside a frame, so no close
    // frame follows) and its on-close gets 1008.
    let mut stuck = connect(&host, "/stuck").await;
    let id = ask(&mut stuck, "whoami").await;
    send_text(&mut stuck, "flood:524288").await;
    assert_eq!(recorded_close(&host, &id).await, "1008");
    let ending = tokio::time::timeout(WAIT, async {
        loop {
            match stuck.next().await {
                Some(Ok(Message::Close(frame))) => return Some(frame),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the stuck connection ended");
    assert_eq!(ending, None, "no close frame after a write cut off");

    // A real socket that stops reading: its neighbours get every broadcast
    // while it is stuck, and it is dropped after the write timeout.
    let mut stuck = connect(&host, "/broadcast").await;
    let mut reader = connect(&host, "/broadcast").await;
    let mut sender = connect(&host, "/broadcast").await;
    for ws in [&mut stuck, &mut reader, &mut sender] {
        next_data(ws).await; // the greeting
    }
    let payload = "z".repeat(512 * 1024);
    for i in 0..40 {
        send_text(&mut sender, &format!("{i}{payload}")).await;
        let got = expect_text(&mut reader).await;
        assert!(got.ends_with(&payload) && got.contains(&format!(" says: {i}z")), "broadcast {i} in order");
    }
    // The stuck client's connection was ended by the host: reading now
    // drains what the kernel held, then the stream ends.
    let ended = tokio::time::timeout(WAIT, async {
        let mut n = 0;
        while let Some(Ok(msg)) = stuck.next().await {
            if msg.is_text() {
                n += 1;
            }
        }
        n
    })
    .await
    .expect("the stuck connection was dropped");
    assert!(ended < 40, "the stuck client did not get everything ({ended} of 40)");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_timed_and_capped() {
    let body = r#"
[limits]
handshake_timeout_ms = 1000
max_handshakes = 2
[plugins.echo]
component = @echo@
[[routes]]
path = "/echo"
plugin = "echo"
"#;
    let host = spawn(config_from(body)).await;
    // A client that sends nothing, and one that sends half a request, are
    // both dropped after the handshake timeout.
    let mut silent = TcpStream::connect(host.addr).await.unwrap();
    let mut partial = TcpStream::connect(host.addr).await.unwrap();
    partial.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Both hold the two handshake places (once accepted, which takes far
    // less than this wait): a third connection gets 503.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(host.addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, third.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    for (name, tcp) in [("silent", &mut silent), ("partial", &mut partial)] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the {name} client was dropped after the handshake timeout");
    }
    // With the places free again, a real client connects.
    let mut ws = eventually(|| async {
        let url = format!("ws://{}/echo", host.addr);
        connect_async(url.as_str()).await.ok().map(|(ws, _)| ws)
    })
    .await;
    assert_eq!(ask(&mut ws, "hi").await, "hi");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_host_and_route_and_rate_limited() {
    let body = r#"
[limits]
max_connections = 3
[plugins.echo]
component = @echo@
[[routes]]
path = "/echo"
plugin = "echo"
[[routes]]
path = "/one"
plugin = "echo"
[routes.limits]
max_connections = 1
[[routes]]
path = "/rated"
plugin = "echo"
[routes.limits]
connect_rate = 1
connect_burst = 2
"#;
    let host = spawn(config_from(body)).await;
    let url = |path: &str| format!("ws://{}{path}", host.addr);

    // Per route: one on /one, then 503 there while /echo still opens.
    let mut one = connect(&host, "/one").await;
    assert_eq!(refused_status(url("/one")).await, 503);
    let mut a = connect(&host, "/echo").await;
    let b = connect(&host, "/echo").await;
    // Per host: three in all, then 503 everywhere.
    assert_eq!(refused_status(url("/echo")).await, 503);
    assert_eq!(ask(&mut one, "served").await, "served");
    assert_eq!(ask(&mut a, "served").await, "served");
    // A closed connection frees its place.
    drop(b);
    let mut c = eventually(|| async { connect_async(url("/echo").as_str()).await.ok().map(|(ws, _)| ws) }).await;
    assert_eq!(ask(&mut c, "again").await, "again");
    drop((one, a, c));
    // Their places are free once their records are gone (places are given
    // back first): only then would a refused open not spend a rate token.
    eventually(|| async {
        let (_, json) = admin(&host, "GET", "/connections", None).await;
        json["connections"].as_array()?.is_empty().then_some(())
    })
    .await;

    // Rate: a burst of two from one address, then 429 until the next second.
    let opened = eventually(|| async {
        let mut opened = Vec::new();
        for _ in 0..2 {
            opened.push(connect_async(url("/rated").as_str()).await.ok()?.0);
        }
        Some(opened)
    })
    .await;
    assert_eq!(refused_status(url("/rated")).await, 429);
    drop(opened);
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_and_subprotocols_are_checked_at_the_handshake() {
    let body = r#"
[plugins.echo]
component = @echo@
[[routes]]
path = "/app"
plugin = "echo"
origins = ["https://app.example"]
subprotocols = ["chat.v1", "chat.v2"]
"#;
    let host = spawn(config_from(body)).await;
    let request = |origin: Option<&str>, protocols: Option<&str>| {
        let mut req = format!("ws://{}/app", host.addr).into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        if let Some(p) = protocols {
            req.headers_mut().insert("sec-websocket-protocol", p.parse().unwrap());
        }
        req
    };
    assert_eq!(refused_status(request(Some("https://evil.example"), None)).await, 403);
    assert_eq!(refused_status(request(Some("https://app.example"), Some("other"))).await, 400);

    // An allowed origin offering listed protocols: the first listed offer.
    let (mut ws, resp) = connect_async(request(Some("https://app.example"), Some("other, chat.v2, chat.v1")))
        .await
        .expect("allowed origin connects");
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "chat.v2");
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    // No Origin (not a browser) and no subprotocol offered: allowed.
    let (mut ws, resp) = connect_async(request(None, None)).await.expect("non-browser client connects");
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    assert_eq!(ask(&mut ws, "plain").await, "plain");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_handshake_place() {
    let body = r#"
[limits]
handshake_timeout_ms = 5000
max_handshakes = 40
max_handshakes_per_ip = 8
[plugins.echo]
component = @echo@
[[routes]]
path = "/echo"
plugin = "echo"
"#;
    let host = spawn(config_from(body)).await;
    // 127.0.0.1 opens 30 connections and sends half a request on each
    // (slowloris): it holds its 8 places, the rest are refused at once.
    let mut partial = Vec::new();
    for _ in 0..30 {
        let mut tcp = TcpStream::connect(host.addr).await.unwrap();
        tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        partial.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = 0;
    for tcp in &mut partial {
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await
            && buf[..n].starts_with(b"HTTP/1.1 503")
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 22, "all but its 8 places are refused");
    // Another address still gets a place, opens a WebSocket and is answered.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(host.addr).await.expect("connect from 127.0.0.2");
    let url = format!("ws://{}/echo", host.addr);
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgraded in time")
        .expect("127.0.0.2 is not held back by 127.0.0.1's partial requests");
    send_text(&mut ws, "hello").await;
    assert_eq!(expect_text(&mut ws).await, "hello");
    drop(partial);
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connections_metadata_and_channels_are_capped() {
    let body = r#"
[limits]
max_metadata_keys = 4
max_metadata_bytes = 64
max_channels_per_connection = 3
[plugins.faulty]
component = @faulty@
[[routes]]
path = "/faulty"
plugin = "faulty"
"#;
    let host = spawn(config_from(body)).await;
    let mut ws = connect(&host, "/faulty").await;
    for k in ["a", "b", "c", "d"] {
        assert_eq!(ask(&mut ws, &format!("meta:{k}=1")).await, "ok");
    }
    assert_eq!(ask(&mut ws, "meta:e=1").await, "quota exceeded", "a fifth key");
    assert_eq!(ask(&mut ws, "meta:a=2").await, "ok", "replacing a key");
    // Keys and values of 1 byte: 8 of 64 bytes; a's value may grow to 57.
    assert_eq!(ask(&mut ws, &format!("meta:a={}", "v".repeat(58))).await, "quota exceeded");
    assert_eq!(ask(&mut ws, &format!("meta:a={}", "v".repeat(57))).await, "ok");
    for ch in ["x", "y", "z"] {
        assert_eq!(ask(&mut ws, &format!("join:{ch}")).await, "ok");
    }
    assert_eq!(ask(&mut ws, "join:x").await, "ok", "a channel it is in");
    assert_eq!(ask(&mut ws, "join:w").await, "quota exceeded", "a fourth channel");
    let id = ask(&mut ws, "whoami").await;
    let (_, record) = admin(&host, "GET", &format!("/connections/{id}"), None).await;
    assert_eq!(record["metadata"].as_object().unwrap().len(), 4, "{record}");
    assert_eq!(record["channels"], serde_json::json!(["x", "y", "z"]));
    assert_eq!(ask(&mut ws, "still open").await, "still open", "a refused call fails only that call");

    // An accept past the caps is refused (500) and leaves no record.
    assert_eq!(refused_with(&host, "/faulty?meta=5").await, Some(500), "five keys");
    assert_eq!(refused_with(&host, "/faulty?meta=1&meta-bytes=70").await, Some(500), "over 64 bytes");
    let (_, listed) = admin(&host, "GET", "/connections", None).await;
    assert_eq!(listed["connections"].as_array().unwrap().len(), 1, "{listed}");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_pings_is_closed_and_one_that_pings_is_answered() {
    let host = spawn(config_from(TIMERS)).await;
    // Ten pings get ten pongs, and the connection stays.
    let mut ws = connect(&host, "/faulty").await;
    for i in 0..10u8 {
        ws.send(Message::Ping(vec![i].into())).await.unwrap();
    }
    for i in 0..10u8 {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) => assert_eq!(p.as_ref(), [i], "pong {i}"),
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    assert_eq!(ask(&mut ws, "still open").await, "still open");
    // 300 pings at once: past 100 in a second the host closes with 1008.
    let id = ask(&mut ws, "whoami").await;
    for _ in 0..300 {
        if ws.send(Message::Ping(Default::default())).await.is_err() {
            break;
        }
    }
    let code = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(code, Some(1008));
    assert_eq!(recorded_close(&host, &id).await, "1008");
    host.stop().await.unwrap();
}

/// Opens `path` with an `X-Forwarded-For` header; the HTTP status it was
/// refused with, or the connection.
async fn connect_forwarded(host: &wharf::app::Running, path: &str, forwarded_for: &str) -> Result<Client, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}{path}", host.addr).into_client_request().unwrap();
    req.headers_mut().insert("x-forwarded-for", forwarded_for.parse().unwrap());
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await.expect("handshake in time") {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client() {
    let body = r#"
[plugins.echo]
component = @echo@
[[routes]]
path = "/rated"
plugin = "echo"
[routes.limits]
connect_rate = 1
connect_burst = 1
"#;
    let mut config = config_from(body);
    config.trusted_proxies = vec!["127.0.0.1".into()];
    let host = spawn(config).await;
    // Each forwarded client has its own connect rate; the proxy's address
    // (127.0.0.1, every connection's peer) is not what is counted.
    let mut a = connect_forwarded(&host, "/rated", "198.51.100.1, 203.0.113.7").await.expect("first of .7");
    assert_eq!(
        connect_forwarded(&host, "/rated", "203.0.113.7").await.err(),
        Some(429),
        "the second of .7 this second"
    );
    let mut b = connect_forwarded(&host, "/rated", "203.0.113.8").await.expect("another client is its own");
    assert_eq!(ask(&mut a, "x").await, "x");
    assert_eq!(ask(&mut b, "y").await, "y");
    let (_, list) = admin(&host, "GET", "/connections", None).await;
    let mut addrs: Vec<String> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["remote_addr"].as_str().unwrap().to_string())
        .collect();
    addrs.sort();
    assert_eq!(addrs, ["203.0.113.7:0", "203.0.113.8:0"], "the rightmost untrusted hop, as the record shows it");
    host.stop().await.unwrap();

    // Without trusted_proxies the header is the client's to write, and ignored.
    let host = spawn(config_from(body)).await;
    let _c = connect_forwarded(&host, "/rated", "203.0.113.9").await.expect("first");
    assert_eq!(connect_forwarded(&host, "/rated", "203.0.113.10").await.err(), Some(429), "both are 127.0.0.1");
    host.stop().await.unwrap();
}
