//! Connection lifecycle end to end: rejection in `on-open`, subprotocols,
//! traps and deadlines that close only their own connection with 1011, and
//! `on-close` running exactly once however a connection ends.

use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wharf::store::Store;

fn faulty_and_echo() -> wharf::config::Config {
    config(&[("/faulty", "faulty"), ("/echo", "echo")], "")
}

async fn kv(store: &Store, key: &str) -> Option<String> {
    let v = store.kv.get("faulty", key).await.unwrap()?;
    Some(String::from_utf8(v).unwrap())
}

/// Waits until the faulty plugin has recorded `n` closes, then checks that
/// no further close is recorded.
async fn expect_closes(store: &Store, n: u32) {
    eventually(|| async { (kv(store, "closed").await.as_deref() == Some(&n.to_string())).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(kv(store, "closed").await, Some(n.to_string()), "on-close ran more than once");
}

async fn whoami(ws: &mut Client) -> String {
    send_text(ws, "whoami").await;
    expect_text(ws).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_in_on_open_answers_with_its_status() {
    let host = spawn(faulty_and_echo()).await;
    for status in [403u16, 429, 503] {
        let url = format!("ws://{}/faulty?reject={status}", host.addr);
        match connect_async(url.as_str()).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status);
                let body = resp.body().as_deref().unwrap_or_default();
                assert_eq!(String::from_utf8_lossy(body), "rejected by request");
            }
            other => panic!("expected HTTP {status}, got {other:?}"),
        }
    }
    // A handler that traps in on-open gives 500 and no connection.
    match connect_async(format!("ws://{}/faulty?panic-open=1", host.addr).as_str()).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 500),
        other => panic!("expected HTTP 500, got {other:?}"),
    }
    // Neither a rejected nor a failed open ever ran on-close.
    let mut ws = connect(&host, "/faulty").await;
    send_text(&mut ws, "closes?").await;
    assert_eq!(expect_text(&mut ws).await, "");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_plain_http_get_clear_answers() {
    let host = spawn(faulty_and_echo()).await;
    match connect_async(format!("ws://{}/nowhere", host.addr).as_str()).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
    // A plain GET on a WebSocket route: 426 Upgrade Required.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut resp)).await.unwrap().unwrap();
    assert!(resp.starts_with("HTTP/1.1 426"), "{resp}");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_is_selected_only_from_the_offered_ones() {
    let host = spawn(faulty_and_echo()).await;
    let mut req = format!("ws://{}/faulty?subprotocol=chat.v2", host.addr).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "chat.v1, chat.v2".parse().unwrap());
    let (mut ws, resp) = connect_async(req).await.expect("accepted");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat.v2");
    send_text(&mut ws, "ok").await;
    assert_eq!(expect_text(&mut ws).await, "ok");

    // Choosing a protocol the client did not offer is a handler error: 500,
    // and on-close still runs for the connection the handler accepted.
    let mut req = format!("ws://{}/faulty?subprotocol=other", host.addr).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
    match connect_async(req).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 500),
        other => panic!("expected HTTP 500, got {other:?}"),
    }
    expect_closes(&host.store(), 1).await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_closes_only_its_own_connection_with_1011() {
    let host = spawn(faulty_and_echo()).await;
    let store = host.store();
    let mut bad = connect(&host, "/faulty").await;
    let mut good = connect(&host, "/faulty").await;
    let mut echo = connect(&host, "/echo").await;
    let bad_id = whoami(&mut bad).await;

    send_text(&mut bad, "panic").await;
    assert_eq!(expect_close(&mut bad).await, 1011);

    send_text(&mut good, "still fine").await;
    assert_eq!(expect_text(&mut good).await, "still fine");
    send_text(&mut echo, "also fine").await;
    assert_eq!(expect_text(&mut echo).await, "also fine");

    // on-close ran once, on a healthy instance, with the code the client saw.
    expect_closes(&store, 1).await;
    assert_eq!(kv(&store, &format!("closed:{bad_id}")).await.as_deref(), Some("1011"));
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_deadline_is_stopped_while_others_carry_on() {
    let host = spawn(faulty_and_echo()).await;
    let mut spinner = connect(&host, "/faulty").await;
    let mut echo = connect(&host, "/echo").await;
    let started = std::time::Instant::now();
    send_text(&mut spinner, "spin").await;
    // While the handler spins, another connection is served.
    for i in 0..5 {
        send_text(&mut echo, &format!("e{i}")).await;
        assert_eq!(expect_text(&mut echo).await, format!("e{i}"));
    }
    assert_eq!(expect_close(&mut spinner).await, 1011);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(100), "stopped before the 100 ms deadline: {took:?}");
    assert!(took < Duration::from_secs(5), "the deadline did not stop the handler: {took:?}");
    expect_closes(&host.store(), 1).await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_close_runs_once_for_client_close_vanishing_and_handler_close() {
    let host = spawn(faulty_and_echo()).await;
    let store = host.store();

    let mut polite = connect(&host, "/faulty").await;
    let polite_id = whoami(&mut polite).await;
    polite.close(None).await.unwrap();
    // The client reads the server's close reply.
    while let Some(Ok(_)) = polite.next().await {}

    let mut vanishing = connect(&host, "/faulty").await;
    let vanishing_id = whoami(&mut vanishing).await;
    drop(vanishing); // TCP closed with no close frame

    let mut closed = connect(&host, "/faulty").await;
    let closed_id = whoami(&mut closed).await;
    send_text(&mut closed, "bye").await;
    assert_eq!(expect_close(&mut closed).await, 4000, "the handler's close code reaches the client");

    expect_closes(&store, 3).await;
    assert_eq!(kv(&store, &format!("closed:{polite_id}")).await.as_deref(), Some("1005"));
    assert_eq!(kv(&store, &format!("closed:{vanishing_id}")).await.as_deref(), Some("1006"));
    assert_eq!(kv(&store, &format!("closed:{closed_id}")).await.as_deref(), Some("4000"));
    // Their metadata records are gone from the store.
    for id in [&polite_id, &vanishing_id, &closed_id] {
        assert_eq!(store.connections.get(id.parse().unwrap()).await.unwrap(), None);
    }
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_with_1001_and_runs_on_close() {
    let host = spawn(faulty_and_echo()).await;
    let store = host.store();
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(&host, "/faulty").await;
        ids.push(whoami(&mut ws).await);
        clients.push(ws);
    }
    let mut echo = connect(&host, "/echo").await;
    send_text(&mut echo, "x").await;
    assert_eq!(expect_text(&mut echo).await, "x");

    let stopping = tokio::spawn(host.stop());
    for ws in clients.iter_mut().chain(std::iter::once(&mut echo)) {
        assert_eq!(expect_close(ws).await, 1001);
    }
    tokio::time::timeout(WAIT, stopping).await.expect("shutdown finished").unwrap().unwrap();

    // Every on-close ran before the host stopped, exactly once.
    assert_eq!(store.kv.get("faulty", "closed").await.unwrap(), Some(b"3".to_vec()));
    for id in ids {
        assert_eq!(store.kv.get("faulty", &format!("closed:{id}")).await.unwrap(), Some(b"1001".to_vec()));
    }
    // And the listener is gone.
    let gone = connect_async(format!("ws://{}/echo", echo.get_ref().get_ref().peer_addr().unwrap()).as_str()).await;
    assert!(gone.is_err(), "the host still accepts connections after shutdown");
    let _ = echo.send(Message::text("late")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_routes_reuse_warm_instances_and_fresh_routes_never_do() {
    let routes = [("/pooled", "faulty", "pooled"), ("/fresh", "faulty", "fresh")];
    let host = spawn(config_with_instances(&routes, "")).await;
    let mut fresh = connect(&host, "/fresh").await;
    for _ in 0..3 {
        send_text(&mut fresh, "count").await;
        assert_eq!(expect_text(&mut fresh).await, "1", "a fresh instance has handled one event");
    }
    // One connection's events run one at a time, so a warm pool hands the
    // same instance back: its in-memory count keeps growing.
    let mut pooled = connect(&host, "/pooled").await;
    let mut counts = Vec::new();
    for _ in 0..3 {
        send_text(&mut pooled, "count").await;
        counts.push(expect_text(&mut pooled).await.parse::<u32>().unwrap());
    }
    assert!(counts.windows(2).all(|w| w[1] > w[0]), "no warm reuse: {counts:?}");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_during_on_open_still_gets_exactly_one_on_close() {
    use tokio::io::AsyncWriteExt;
    let host = spawn(faulty_and_echo()).await;
    let mut tcp = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let request = "GET /faulty?slow-open=60 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(tcp); // gone while on-open runs
    expect_closes(&host.store(), 1).await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_serve_no_dotfiles_and_nothing_outside_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("public");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), "served").unwrap();
    std::fs::write(root.join("sub/b.txt"), "also served").unwrap();
    std::fs::write(root.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/config"), "[remote]").unwrap();
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "not for the web").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
    std::os::unix::fs::symlink(root.join("a.txt"), root.join("alias.txt")).unwrap();

    let mut config = config(&[("/echo", "echo")], "");
    config.static_dir = Some(root);
    let host = spawn(config).await;
    for (path, want) in [("/a.txt", "served"), ("/sub/b.txt", "also served"), ("/alias.txt", "served")] {
        assert_eq!(http(host.addr, "GET", path, None, None).await, (200, want.to_string()), "{path}");
    }
    for path in ["/.env", "/.git/config", "/sub/../.env", "/%2eenv", "/leak.txt", "/up/outside.txt"] {
        let (status, body) = http(host.addr, "GET", path, None, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("SECRET") && !body.contains("not for the web"), "{path}: {body}");
    }
    host.stop().await.unwrap();
}

/// A route of two handlers, `faulty` then `echo`, messages picked by
/// `"to"`: `{"to":"echo",...}` to echo, everything else to faulty.
fn chain_config() -> wharf::config::Config {
    config_from(
        "[plugins.faulty]\ncomponent = @faulty@\n[plugins.echo]\ncomponent = @echo@\n\
         [[routes]]\npath = \"/chain\"\nplugins = [\"faulty\", \"echo\"]\n\
         [routes.select]\nfield = \"to\"\ndefault = \"faulty\"\n[routes.select.handlers]\necho = \"echo\"\n\
         [[routes]]\npath = \"/f\"\nplugin = \"faulty\"\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_handlers_opens_in_order_routes_messages_by_field_forwards_and_closes_each() {
    let host = spawn(chain_config()).await;
    let mut f = connect(&host, "/f").await;
    // The first handler refuses: the client gets its status, no close runs.
    assert_eq!(refused_with(&host, "/chain?reject=401").await, Some(401));
    assert_eq!(ask(&mut f, "closes?").await, "", "no close counted yet");

    let mut ws = connect(&host, "/chain").await;
    // Selected by field, to echo; anything else to the default, faulty,
    // which acts on the route's connection (its metadata).
    assert_eq!(ask(&mut ws, r#"{"to":"echo","n":1}"#).await, r#"{"to":"echo","n":1}"#);
    assert_eq!(ask(&mut ws, "meta:k=v").await, "ok");
    assert_eq!(ask(&mut ws, "count").await.parse::<u32>().map(|n| n >= 1), Ok(true));
    let id = {
        let (_, list) = admin(&host, "GET", "/connections?route=/chain", None).await;
        list["connections"][0]["id"].as_str().unwrap().to_string()
    };
    let (_, record) = admin(&host, "GET", &format!("/connections/{id}"), None).await;
    assert_eq!(record["plugin"], "faulty,echo", "the record names the route's handlers: {record}");
    assert_eq!(record["metadata"]["k"], "v", "{record}");
    // Forwarding: echo's reply reaches the client before faulty's own.
    send_text(&mut ws, "forward:echo:passed on").await;
    assert_eq!(expect_text(&mut ws).await, "passed on");
    assert_eq!(expect_text(&mut ws).await, "forwarded");
    assert_eq!(ask(&mut ws, "forward:faulty:x").await, "not allowed", "not to itself");
    assert_eq!(ask(&mut ws, "forward:nobody:x").await, "not allowed", "only to the route's handlers");
    assert_eq!(ask(&mut f, "forward:echo:x").await, "not allowed", "a route of one has nobody to forward to");
    ws.close(None).await.unwrap();
    // Both handlers' closes run; faulty's counts.
    let deadline = std::time::Instant::now() + WAIT;
    while ask(&mut f, "closes?").await != "1" {
        assert!(std::time::Instant::now() < deadline, "faulty's on-close did not run");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_example_issues_a_token_and_its_chain_lets_that_client_in() {
    let host = spawn(config_from(
        "[plugins.app-auth]\ncomponent = @app-auth@\n[plugins.app-rooms]\ncomponent = @app-rooms@\n\
         [[routes]]\npath = \"/app/login\"\nplugin = \"app-auth\"\n\
         [[routes]]\npath = \"/app\"\nplugins = [\"app-auth\", \"app-rooms\"]\n\
         [routes.select]\nfield = \"action\"\n[routes.select.handlers]\njoin = \"app-rooms\"\nsay = \"app-rooms\"\n",
    ))
    .await;
    let json = |t: String| serde_json::from_str::<serde_json::Value>(&t).unwrap();
    let mut login = connect(&host, "/app/login?name=ada").await;
    let issued = json(expect_text(&mut login).await);
    let token = issued["token"].as_str().expect("a token").to_string();
    assert_eq!(expect_close(&mut login).await, 1000);
    assert_eq!(refused_with(&host, "/app?token=guessed").await, Some(401));
    let mut ada = connect(&host, &format!("/app?token={token}")).await;
    assert_eq!(json(expect_text(&mut ada).await), serde_json::json!({ "type": "welcome", "user": "ada" }));
    send_text(&mut ada, r#"{"action":"join","room":"r"}"#).await;
    assert_eq!(json(expect_text(&mut ada).await)["type"], "joined");
    send_text(&mut ada, r#"{"action":"say","text":"hello"}"#).await;
    let said = json(expect_text(&mut ada).await);
    assert_eq!((said["from"].as_str(), said["text"].as_str()), (Some("ada"), Some("hello")), "{said}");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_one_handler_of_a_chain_closes_with_1011_and_its_close_still_runs() {
    let host = spawn(chain_config()).await;
    let mut f = connect(&host, "/f").await;
    let mut ws = connect(&host, "/chain").await;
    send_text(&mut ws, "panic").await; // to faulty, the default
    assert_eq!(expect_close(&mut ws).await, 1011);
    let deadline = std::time::Instant::now() + WAIT;
    while ask(&mut f, "closes?").await != "1" {
        assert!(std::time::Instant::now() < deadline, "faulty's on-close did not run after its trap");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The other connections of the route are untouched.
    let mut other = connect(&host, "/chain").await;
    assert_eq!(ask(&mut other, r#"{"to":"echo"}"#).await, r#"{"to":"echo"}"#);
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_passes_down_a_chain_to_the_handler_that_answers() {
    let host = spawn(config_from(
        "[plugins.pass1]\ncomponent = @pass@\n[plugins.pass2]\ncomponent = @pass@\n[plugins.echo]\ncomponent = @echo@\n\
         [[routes]]\npath = \"/chain\"\nplugins = [\"pass1\", \"pass2\", \"echo\"]\n\
         [routes.select]\nfield = \"action\"\ndefault = \"pass1\"\n\
         [[routes]]\npath = \"/alone\"\nplugin = \"pass1\"\n",
    ))
    .await;
    let mut ws = connect(&host, "/chain").await;
    for i in 0..20 {
        let text = format!("through two {i}");
        assert_eq!(ask(&mut ws, &text).await, text);
    }
    expect_silence(&mut ws, std::time::Duration::from_millis(100)).await;
    let mut alone = connect(&host, "/alone").await;
    assert_eq!(ask(&mut alone, "x").await, "error: not allowed", "the last of a chain has no next");
    host.stop().await.unwrap();
}
