//! Handlers in JavaScript and Python end to end, with real clients: the
//! examples behave as the Rust ones do, and a handler's exception, infinite
//! loop or memory bomb ends only its own event.

use crate::common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_echo_and_chat_behave_like_the_rust_examples() {
    echo_and_chat("js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_echo_and_chat_behave_like_the_rust_examples() {
    echo_and_chat("py").await;
}

async fn echo_and_chat(lang: &str) {
    let (echo, chat) = (format!("{lang}-echo"), format!("{lang}-chat"));
    let host = spawn(config(&[("/echo", &echo), ("/chat", &chat)], "")).await;
    let mut ws = connect(&host, "/echo").await;
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    assert_eq!(ask(&mut ws, "héllo ✓").await, "héllo ✓", "UTF-8 crosses the guest boundary intact");
    let bytes: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(bytes), "binary comes back as binary");
    for i in 0..100 {
        ws.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..100 {
        assert_eq!(expect_text(&mut ws).await, format!("m{i}"));
    }

    let mut ada = connect(&host, "/chat").await;
    let mut bob = connect(&host, "/chat").await;
    send_text(&mut ada, "hi all").await;
    assert_eq!(expect_text(&mut ada).await, "anonymous: hi all");
    assert_eq!(expect_text(&mut bob).await, "anonymous: hi all");
    assert_eq!(ask(&mut ada, "/nick ada").await, "nickname set to [ada]");
    expect_silence(&mut bob, std::time::Duration::from_millis(50)).await;
    send_text(&mut ada, "hello bob").await;
    assert_eq!(expect_text(&mut bob).await, "ada: hello bob", "the nickname lives in the host's metadata");
    assert_eq!(expect_text(&mut ada).await, "ada: hello bob");
    ws.close(None).await.unwrap();
    host.stop().await.unwrap();
}

/// `LANG-faulty` beside a Rust `echo` route, with a tight memory cap.
const FAULTY: &str = r#"
[plugins.faulty]
component = @LANG-faulty@
[plugins.faulty.limits]
memory_mib = 48

[plugins.echo]
component = @echo@

[[routes]]
path = "/faulty"
plugin = "faulty"

[[routes]]
path = "/echo"
plugin = "echo"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_exception_loop_or_bomb_ends_only_its_own_event() {
    misbehaviour_is_contained("js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_exception_loop_or_bomb_ends_only_its_own_event() {
    misbehaviour_is_contained("py").await;
}

async fn misbehaviour_is_contained(lang: &str) {
    let host = spawn(config_from(&FAULTY.replace("LANG", lang))).await;
    let probe = EchoProbe::start(&host, "/echo").await;
    let mut bystander = connect(&host, "/faulty").await;
    assert_eq!(ask(&mut bystander, "before").await, "before");

    // An exception in onOpen: the client gets 500, the plugin goes on.
    assert_eq!(refused_with(&host, "/faulty?throw").await, Some(500));
    assert_eq!(refused_with(&host, "/faulty?reject=403").await, Some(403), "a Reject keeps its status");

    // An exception, an infinite loop, a memory bomb.
    each_command_fails_only_its_own_event(&host, &probe, &mut bystander, &["throw", "spin", "bomb"]).await;
    probe.finish().await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_publish_answers_the_position_on_a_channel_with_history() {
    publish_answers_positions("js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_publish_answers_the_position_on_a_channel_with_history() {
    publish_answers_positions("py").await;
}

/// The SDK's `publish` hands back the WIT's `option<position>`: the
/// offset as a number and the epoch on a channel that keeps history,
/// nothing on one that keeps none.
async fn publish_answers_positions(lang: &str) {
    let body = format!(
        "{}\n[[channels]]\nmatch = \"kept\"\nhistory_size = 10\nhistory_ttl_ms = 60000\n",
        FAULTY.replace("LANG", lang)
    );
    let host = spawn(config_from(&body)).await;
    let mut ws = connect(&host, "/faulty").await;
    let mut epochs = Vec::new();
    for offset in 1..=3 {
        let answer: serde_json::Value = serde_json::from_str(&ask(&mut ws, "publish:kept:x").await).unwrap();
        assert_eq!(answer["offset"], offset, "{lang}: {answer}");
        epochs.push(answer["epoch"].as_str().expect("an epoch").to_string());
    }
    assert!(epochs.iter().all(|e| e == &epochs[0] && e.len() == 16), "{lang}: one epoch: {epochs:?}");
    assert_eq!(ask(&mut ws, "publish:plain:x").await, "null", "{lang}: no history, no position");
    assert_eq!(ask(&mut ws, "publish::x").await, "error: invalid-argument", "{lang}: an empty channel name");
    let (status, page) = admin(&host, "GET", "/channels/kept/history?namespace=faulty", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["epoch"], epochs[0].as_str());
    assert_eq!(page["publications"].as_array().map(Vec::len), Some(3));
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_reaches_no_file_and_no_network() {
    let host = spawn(config_from(&FAULTY.replace("LANG", "py"))).await;
    let mut ws = connect(&host, "/faulty").await;
    // CPython's file and socket calls run, and find nothing: no directory is
    // preopened, and `wharf build` replaced the socket imports with
    // stand-ins that trap (the host links no network at all).
    let read = ask(&mut ws, "read").await;
    assert!(read.starts_with("refused: "), "{read}");
    assert!(!read.contains("root:"), "the host's file leaked: {read}");
    send_text(&mut ws, "dial").await;
    assert_eq!(expect_close(&mut ws).await, 1011, "a socket call ends the event");
    let mut again = connect(&host, "/faulty").await;
    assert_eq!(ask(&mut again, "still here").await, "still here");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_exception_is_logged_with_its_stack_plugin_and_connection() {
    // The stack names the handler's function in the bundle `wharf build`
    // keeps (target/wharf/bundle.js).
    exception_is_logged("js", "onMessage", "Error: asked to throw", &["onMessage@", "bundle.js:"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_exception_is_logged_with_its_traceback_plugin_and_connection() {
    exception_is_logged(
        "py",
        "on_message",
        "Traceback (most recent call last):",
        &["app.py\", line", "RuntimeError: asked to throw"],
    )
    .await;
}

async fn exception_is_logged(lang: &str, event: &str, first: &str, stack: &[&str]) {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\ncache_dir = {:?}\n[admin]\nenabled = false\n\
         [plugins.faulty]\ncomponent = {:?}\n[[routes]]\npath = \"/faulty\"\nplugin = \"faulty\"\n",
        cache_dir().display().to_string(),
        component(&format!("{lang}-faulty")).display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    let (mut child, lines) = serve_process(&path);
    let addr = lines
        .iter()
        .find_map(|l| l.split("addr=").nth(1).map(|a| a.trim().to_string()))
        .expect("the host logged its address");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/faulty").as_str()).await.unwrap();
    let id = ask(&mut ws, "whoami").await;
    send_text(&mut ws, "throw").await;
    assert_eq!(expect_close(&mut ws).await, 1011);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = String::new();
    // The stack spans lines; the line's fields (plugin, conn) end it.
    while Instant::now() < deadline && !log.contains("conn=") {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            log += &line;
            log.push('\n');
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at =
        log.find(&format!("uncaught exception in {event}")).unwrap_or_else(|| panic!("no exception logged: {log}"));
    let entry = &log[at..];
    assert!(entry.starts_with(&format!("uncaught exception in {event} (connection {id}): {first}")), "{log}");
    for s in stack {
        assert!(entry.contains(s), "the stack is logged ({s}): {log}");
    }
    // Then the fields name plugin and connection.
    assert!(entry.contains("plugin=\"faulty\"") || entry.contains("plugin=faulty"), "{log}");
    assert!(entry.contains(&format!("conn={id}")), "{log}");
}

/// The guide's JavaScript and Python examples are the tour examples as they
/// are, which `make test` builds and runs against `examples/tour/tests`.
#[test]
fn the_guide_shows_the_tour_examples_as_they_are() {
    let guide = std::fs::read_to_string(repo_root().join("docs/handlers.md")).unwrap();
    for (file, fence) in [("examples/ts/tour/src/index.ts", "```ts\n"), ("examples/python/tour/app.py", "```python\n")]
    {
        let source = std::fs::read_to_string(repo_root().join(file)).unwrap();
        assert!(guide.contains(&format!("{fence}{source}```")), "docs/handlers.md does not show {file} as it is");
    }
}

/// `wharf build` hands componentize-js's generated bindings to
/// `guest-sdk/js/build/bindings.mjs`; the snapshot keeps the bindings'
/// source, so the edit is visible in the component (a build without the
/// hook would carry `_debugLog(` calls that run).
#[test]
fn a_javascript_component_carries_the_edited_bindings() {
    let wasm =
        std::fs::read(repo_root().join("target/components/js-echo.wasm")).expect("make components builds js-echo");
    assert!(wasm.windows(19).any(|w| w == b"false && _debugLog("), "the bindings of js-echo.wasm were not edited");
    // An unedited build has a `_debugLog(` call at the start of a line.
    let unedited = wasm.split(|&b| b == b'\n').any(|line| line.trim_ascii_start().starts_with(b"_debugLog("));
    assert!(!unedited, "js-echo.wasm still calls _debugLog");
}

/// The SDK's `pipeline.forward` on a route of two handlers, LANG's faulty
/// guest then the Rust echo: the forwarded message's reply reaches the
/// client first, and forwarding to itself or to a handler the route lacks
/// answers `not-allowed`.
async fn forward_hands_the_message_on(lang: &str) {
    let body = format!(
        "[plugins.{lang}-faulty]\ncomponent = @{lang}-faulty@\n[plugins.echo]\ncomponent = @echo@\n\
         [[routes]]\npath = \"/chain\"\nplugins = [\"{lang}-faulty\", \"echo\"]\n\
         [routes.select]\nfield = \"to\"\ndefault = \"{lang}-faulty\"\n"
    );
    let host = spawn(config_from(&body)).await;
    let mut ws = connect(&host, "/chain").await;
    send_text(&mut ws, "forward:echo:on to echo").await;
    assert_eq!(expect_text(&mut ws).await, "on to echo", "{lang}: echo's reply first");
    assert_eq!(expect_text(&mut ws).await, "forwarded", "{lang}");
    let itself = format!("forward:{lang}-faulty:x");
    assert_eq!(ask(&mut ws, &itself).await, "error: not-allowed", "{lang}: not to itself");
    assert_eq!(ask(&mut ws, "forward:nobody:x").await, "error: not-allowed", "{lang}: only the route's handlers");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_forward_hands_the_message_to_another_handler_of_the_route() {
    forward_hands_the_message_on("js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_forward_hands_the_message_to_another_handler_of_the_route() {
    forward_hands_the_message_on("py").await;
}
