//! Channel history and the world versions: components built for the frozen
//! `wharf:handler@0.1.0` keep loading and serving beside 0.2.0 ones;
//! publications to channels that keep history get positions; a subscription
//! that resumes from a position gets what it missed, in order, none twice,
//! while others publish; the admin API publishes and reads history; the
//! embedded store keeps history across a restart with the same epoch.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// A component built for world 0.1.0 from this repository's examples before
/// 0.2.0 existed (`host/tests/fixtures/wharf-0.1.0/`).
fn frozen(name: &str) -> PathBuf {
    repo_root().join(format!("host/tests/fixtures/wharf-0.1.0/{name}.wasm"))
}

const ROOMS: &str = "[[channels]]\nmatch = \"room*\"\nhistory_size = 1000\nhistory_ttl_ms = 600000\n";

/// Sends `cmd` to a relay client and returns its answer.
async fn ask(ws: &mut Client, cmd: &str) -> String {
    send_text(ws, cmd).await;
    expect_text(ws).await
}

/// A relay client and its connection id.
async fn relay(host: &wharf::app::Running) -> (Client, String) {
    let mut ws = connect(host, "/relay").await;
    let hello = expect_text(&mut ws).await;
    let id = hello.strip_prefix("id:").expect("relay says its id").to_string();
    (ws, id)
}

/// `at OFFSET@EPOCH` → (offset, epoch).
fn at(answer: &str) -> (u64, String) {
    let pos = answer.strip_prefix("at ").unwrap_or_else(|| panic!("not a position: {answer}"));
    let (o, e) = pos.split_once('@').unwrap();
    (o.parse().unwrap(), e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_of_the_frozen_world_serve_beside_current_ones() {
    let body = format!(
        "[plugins.old_echo]\ncomponent = {:?}\n[plugins.old_chat]\ncomponent = {:?}\n\
         [plugins.echo]\ncomponent = @echo@\n\
         [[routes]]\npath = \"/old-echo\"\nplugin = \"old_echo\"\n\
         [[routes]]\npath = \"/old-chat\"\nplugin = \"old_chat\"\n\
         [[routes]]\npath = \"/echo\"\nplugin = \"echo\"\n\
         [[channels]]\nmatch = \"room\"\nhistory_size = 10\nhistory_ttl_ms = 60000\n",
        frozen("echo").display().to_string(),
        frozen("chat").display().to_string(),
    );
    let host = spawn(config_from(&body)).await;
    let mut old = connect(&host, "/old-echo").await;
    let mut new = connect(&host, "/echo").await;
    send_text(&mut old, "from 0.1.0").await;
    send_text(&mut new, "from 0.2.0").await;
    assert_eq!(expect_text(&mut old).await, "from 0.1.0");
    assert_eq!(expect_text(&mut new).await, "from 0.2.0");

    // The 0.1.0 chat publishes to `room`, which keeps history: its
    // publications are kept with positions like any other.
    let mut ada = connect(&host, "/old-chat").await;
    let mut bob = connect(&host, "/old-chat").await;
    send_text(&mut ada, "/nick ada").await;
    assert_eq!(expect_text(&mut ada).await, "nickname set to [ada]");
    for text in ["one", "two"] {
        send_text(&mut ada, text).await;
        assert_eq!(expect_text(&mut ada).await, format!("ada: {text}"));
        assert_eq!(expect_text(&mut bob).await, format!("ada: {text}"));
    }
    let (status, page) = admin(&host, "GET", "/channels/room/history?namespace=old_chat", None).await;
    assert_eq!(status, 200, "{page}");
    let texts: Vec<&str> =
        page["publications"].as_array().unwrap().iter().map(|p| p["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["ada: one", "ada: two"]);
    assert_eq!(page["publications"][1]["offset"], 2);
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_subscription_gets_what_it_missed_once_in_order_while_others_publish() {
    let host = spawn(config_from(&format!(
        "[plugins.relay]\ncomponent = @relay@\n[[routes]]\npath = \"/relay\"\nplugin = \"relay\"\n{ROOMS}"
    )))
    .await;
    let (mut writer, _) = relay(&host).await;
    let (mut reader, reader_id) = relay(&host).await;

    // Positions grow by one in one epoch; a channel without history has none.
    let (first, epoch) = at(&ask(&mut writer, "pub:room:m1").await);
    assert_eq!(first, 1);
    assert_eq!(at(&ask(&mut writer, "pub:room:m2").await), (2, epoch.clone()));
    assert_eq!(ask(&mut writer, "pub:lobby:plain").await, "ok", "lobby keeps no history");
    let answer = ask(&mut writer, "history:room:x@e:10").await;
    assert!(answer.starts_with("error:"), "a malformed position is refused: {answer}");
    assert_eq!(
        ask(&mut writer, &format!("history:room:1@{epoch}:10")).await,
        format!("history recovered=true latest=2@{epoch} offsets=2")
    );

    // Resume from 1: 2 is replayed (before the answer, which comes last).
    let resumed = ask(&mut reader, &format!("resume:{reader_id}:room:1@{epoch}")).await;
    assert_eq!(resumed, "m2", "the replay is written before the direct reply");
    assert_eq!(expect_text(&mut reader).await, format!("resumed recovered=true replayed=1 latest=2@{epoch}"));

    // Another epoch cannot be served; nothing is replayed.
    let (mut other, other_id) = relay(&host).await;
    let lost = ask(&mut other, &format!("resume:{other_id}:room:1@{}", "0".repeat(16))).await;
    assert_eq!(lost, format!("resumed recovered=false replayed=0 latest=2@{epoch}"));

    // While the writer publishes 300 stamped messages as fast as it can, a
    // third client resumes from offset 2: it must see 3, 4, 5, ... with no
    // gap and no duplicate, and the reader (live) the same from 3.
    let (mut late, late_id) = relay(&host).await;
    let publisher = tokio::spawn(async move {
        for i in 0..300 {
            writer.feed(Message::text(format!("stamp:room:{{\"n\":{i}}}"))).await.unwrap();
        }
        writer.flush().await.unwrap();
        let mut last = 0;
        for _ in 0..300 {
            last = at(&expect_text(&mut writer).await).0;
        }
        (writer, last)
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    send_text(&mut late, &format!("resume:{late_id}:room:2@{epoch}")).await;
    let (_writer, last) = publisher.await.unwrap();
    assert_eq!(last, 302);
    let offsets_of = |texts: Vec<String>| -> Vec<u64> {
        texts
            .iter()
            .filter(|t| !t.starts_with("resumed"))
            .map(|t| {
                let v: serde_json::Value = serde_json::from_str(t).unwrap_or_else(|_| panic!("not JSON: {t}"));
                assert_eq!(v["epoch"], epoch.as_str());
                v["offset"].as_u64().unwrap()
            })
            .collect()
    };
    let mut got = Vec::new();
    while got.len() < 301 {
        got.push(expect_text(&mut late).await);
    }
    assert_eq!(got.iter().filter(|t| t.starts_with("resumed recovered=true")).count(), 1, "{got:?}");
    assert_eq!(offsets_of(got), (3..=302).collect::<Vec<u64>>(), "no gap, no duplicate, in order");
    let mut live = Vec::new();
    while live.len() < 300 {
        live.push(expect_text(&mut reader).await);
    }
    assert_eq!(offsets_of(live), (3..=302).collect::<Vec<u64>>());
    expect_silence(&mut late, Duration::from_millis(200)).await;

    // The admin API publishes with a position and reads the history.
    let (status, body) = admin(&host, "POST", "/channels/room/messages", Some(("text/plain", b"from admin"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["offset"].as_u64(), body["epoch"].as_str()), (Some(303), Some(epoch.as_str())));
    assert_eq!(body["delivered"], 3, "reader, other and late are members");
    assert_eq!(expect_text(&mut late).await, "from admin");
    let (status, page) =
        admin(&host, "GET", &format!("/channels/room/history?since=300&epoch={epoch}&limit=2"), None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!((page["recovered"].as_bool(), page["epoch"].as_str()), (Some(true), Some(epoch.as_str())));
    let offsets: Vec<u64> =
        page["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [301, 302]);
    let (status, page) = admin(&host, "GET", "/channels/room/history?limit=1", None).await;
    assert_eq!((status, &page["publications"][0]["text"]), (200, &"from admin".into()), "the last one");
    let (status, _) =
        admin(&host, "POST", "/channels/room/messages", Some(("application/octet-stream", &[0u8, 255][..]))).await;
    assert_eq!(status, 200);
    let (_, page) = admin(&host, "GET", "/channels/room/history?limit=1", None).await;
    assert_eq!(page["publications"][0]["binary"], "AP8=");
    for bad in ["limit=0", "limit=1001", "since=1", "since=x&epoch=e"] {
        let (status, _) = admin(&host, "GET", &format!("/channels/room/history?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, _) = admin(&host, "GET", "/channels/lobby/history", None).await;
    assert_eq!(status, 404, "a channel without history");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_keeps_history_across_a_restart_with_its_epoch() {
    let data = tempfile::tempdir().unwrap();
    let body =
        format!("[plugins.relay]\ncomponent = @relay@\n[[routes]]\npath = \"/relay\"\nplugin = \"relay\"\n{ROOMS}");
    let embedded = |body: &str| {
        let mut c = config_from(body);
        c.store.backend = wharf::config::StoreChoice::Embedded;
        c.data_dir = data.path().to_path_buf();
        c
    };
    let host = spawn(embedded(&body)).await;
    let (mut ws, _) = relay(&host).await;
    for i in 1..=3 {
        ask(&mut ws, &format!("pub:room:before {i}")).await;
    }
    let (top, epoch) = at(&ask(&mut ws, "pub:room:before 4").await);
    assert_eq!(top, 4);
    drop(ws);
    host.stop().await.unwrap();

    let host = spawn(embedded(&body)).await;
    let (mut ws, id) = relay(&host).await;
    assert_eq!(ask(&mut ws, &format!("resume:{id}:room:2@{epoch}")).await, "before 3");
    assert_eq!(expect_text(&mut ws).await, "before 4");
    assert_eq!(expect_text(&mut ws).await, format!("resumed recovered=true replayed=2 latest=4@{epoch}"));
    assert_eq!(ask(&mut ws, "pub:room:after").await, "after", "delivered live to itself, before the reply");
    assert_eq!(expect_text(&mut ws).await, format!("at 5@{epoch}"), "the same epoch goes on");
    host.stop().await.unwrap();
}

/// The next message of a rooms client, as JSON.
async fn next_json(ws: &mut Client) -> serde_json::Value {
    let text = expect_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The rooms example in each language: a client that drops and reopens
/// from the position of the last message it saw gets every message it
/// missed, in order, then the welcome and the live ones, none twice; a
/// `history` request answers the last kept; a stale epoch is told apart.
async fn rooms_resume(plugin: &str) {
    let channels = "[[channels]]\nmatch = \"room:*\"\nhistory_size = 100\nhistory_ttl_ms = 600000\n";
    let host = spawn(config(&[("/rooms", plugin)], channels)).await;
    let mut ada = connect(&host, "/rooms?room=r&name=ada").await;
    let welcome = next_json(&mut ada).await;
    assert_eq!(
        (&welcome["type"], &welcome["recovered"], &welcome["offset"]),
        (&"welcome".into(), &true.into(), &0.into())
    );
    let mut bob = connect(&host, "/rooms?room=r&name=bob").await;
    assert_eq!(next_json(&mut bob).await["type"], "welcome");

    send_text(&mut ada, "m0").await;
    let seen = next_json(&mut ada).await;
    assert_eq!(next_json(&mut bob).await, seen, "{plugin}: every member gets the same stamped message");
    assert_eq!((&seen["offset"], &seen["text"], &seen["from"]), (&1.into(), &"m0".into(), &"ada".into()));
    let epoch = seen["epoch"].as_str().expect("stamped with the epoch").to_string();
    ada.close(None).await.unwrap();
    drop(ada);

    for i in 1..=5 {
        send_text(&mut bob, &format!("m{i}")).await;
        assert_eq!(next_json(&mut bob).await["offset"], i + 1, "{plugin}");
    }
    let mut ada = connect(&host, &format!("/rooms?room=r&name=ada&since=1&epoch={epoch}")).await;
    for i in 1..=5 {
        let m = next_json(&mut ada).await;
        assert_eq!((&m["type"], &m["offset"], &m["text"]), (&"say".into(), &(i + 1).into(), &format!("m{i}").into()));
        assert_eq!(m["epoch"], epoch.as_str());
    }
    let welcome = next_json(&mut ada).await;
    assert_eq!(
        (&welcome["type"], &welcome["recovered"], &welcome["replayed"], &welcome["offset"], &welcome["epoch"]),
        (&"welcome".into(), &true.into(), &5.into(), &6.into(), &epoch.as_str().into()),
        "{plugin}: {welcome}"
    );
    send_text(&mut bob, "live").await;
    assert_eq!(next_json(&mut ada).await["offset"], 7, "{plugin}: then the live ones");
    assert_eq!(next_json(&mut bob).await["offset"], 7);
    expect_silence(&mut ada, Duration::from_millis(100)).await;

    send_text(&mut ada, r#"{"type":"history","limit":3}"#).await;
    let page = next_json(&mut ada).await;
    let offsets: Vec<_> = page["messages"].as_array().expect("messages").iter().map(|m| m["offset"].clone()).collect();
    assert_eq!(offsets, [5, 6, 7], "{plugin}: the last 3, oldest first: {page}");
    assert_eq!(
        (&page["recovered"], &page["offset"], &page["epoch"]),
        (&true.into(), &7.into(), &epoch.as_str().into())
    );

    let mut cy = connect(&host, "/rooms?room=r&name=cy&since=3&epoch=0000000000000000").await;
    let welcome = next_json(&mut cy).await;
    assert_eq!(
        (&welcome["recovered"], &welcome["replayed"], &welcome["offset"]),
        (&false.into(), &0.into(), &7.into())
    );
    expect_silence(&mut cy, Duration::from_millis(50)).await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_rooms_example_resumes_a_dropped_client() {
    rooms_resume("rooms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_rooms_example_resumes_a_dropped_client() {
    rooms_resume("ts-rooms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_rooms_example_resumes_a_dropped_client() {
    rooms_resume("py-rooms").await;
}
