//! The example handlers end to end: echo, chat and broadcast, with a real
//! host and real WebSocket clients on 127.0.0.1.

use crate::common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_returns_text_and_binary_unchanged_and_in_order() {
    let host = spawn(config(&[("/echo", "echo")], "")).await;
    let mut ws = connect(&host, "/echo").await;
    send_text(&mut ws, "hello").await;
    assert_eq!(expect_text(&mut ws).await, "hello");
    let bytes: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(bytes));
    send_text(&mut ws, "").await;
    assert_eq!(expect_text(&mut ws).await, "");

    for i in 0..200 {
        ws.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..200 {
        assert_eq!(expect_text(&mut ws).await, format!("m{i}"));
    }
    ws.close(None).await.unwrap();
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_publishes_to_every_member_with_nicknames() {
    let host = spawn(config(&[("/chat", "chat")], "")).await;
    let mut ada = connect(&host, "/chat").await;
    let mut bob = connect(&host, "/chat").await;

    send_text(&mut ada, "hi all").await;
    assert_eq!(expect_text(&mut ada).await, "anonymous: hi all", "the sender hears its own message");
    assert_eq!(expect_text(&mut bob).await, "anonymous: hi all");

    send_text(&mut ada, "/nick ada").await;
    assert_eq!(expect_text(&mut ada).await, "nickname set to [ada]");
    expect_silence(&mut bob, std::time::Duration::from_millis(200)).await;

    send_text(&mut ada, "hello bob").await;
    assert_eq!(expect_text(&mut bob).await, "ada: hello bob");
    assert_eq!(expect_text(&mut ada).await, "ada: hello bob");

    send_text(&mut bob, "/nick bob").await;
    assert_eq!(expect_text(&mut bob).await, "nickname set to [bob]");
    send_text(&mut bob, "hi ada").await;
    assert_eq!(expect_text(&mut ada).await, "bob: hi ada");
    assert_eq!(expect_text(&mut bob).await, "bob: hi ada");

    // A closed member no longer receives; the others keep chatting.
    bob.close(None).await.unwrap();
    send_text(&mut ada, "still here").await;
    assert_eq!(expect_text(&mut ada).await, "ada: still here");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_everyone_but_the_sender() {
    let host = spawn(config(&[("/broadcast", "broadcast"), ("/echo", "echo")], "")).await;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(&host, "/broadcast").await;
        let hello: serde_json::Value = serde_json::from_str(&expect_text(&mut ws).await).unwrap();
        assert_eq!(hello["connected"], true);
        let id = hello["yourConnectionId"].as_str().expect("id is a string").to_owned();
        assert!(!ids.contains(&id), "ids are unique");
        ids.push(id);
        clients.push(ws);
    }
    // A connection on another route must not hear this route's broadcasts.
    let mut other = connect(&host, "/echo").await;

    send_text(&mut clients[0], "hello").await;
    let expected = format!("{} says: hello", ids[0]);
    assert_eq!(expect_text(&mut clients[1]).await, expected);
    assert_eq!(expect_text(&mut clients[2]).await, expected);
    expect_silence(&mut clients[0], std::time::Duration::from_millis(200)).await;
    expect_silence(&mut other, std::time::Duration::from_millis(50)).await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_admin_publish_reaches_the_chat_room_of_the_examples_config() {
    let path = repo_root().join("examples/wharf.toml");
    let mut config = wharf::config::Config::load(&path).expect("examples/wharf.toml loads");
    let data = tempfile::tempdir().unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.token = Some(ADMIN_TOKEN.into());
    config.store = wharf::config::StoreChoice::Memory.into();
    config.data_dir = data.path().to_path_buf();
    config.cache_dir = Some(cache_dir());
    let host = spawn(config).await;
    let mut chat = connect(&host, "/chat").await;
    let mut counter = connect(&host, "/counter").await;
    // As written in the README: no namespace, the config's default (`chat`).
    let (status, json) = admin(&host, "POST", "/channels/room/messages", Some(("text/plain", b"hello"))).await;
    assert_eq!((status, &json["namespace"], &json["delivered"]), (200, &"chat".into(), &1.into()), "{json}");
    assert_eq!(expect_text(&mut chat).await, "hello");
    expect_silence(&mut counter, std::time::Duration::from_millis(100)).await;
    // `make run` serves every example in every language from this config.
    for lang in ["js", "ts", "py"] {
        let mut echo = connect(&host, &format!("/{lang}/echo")).await;
        assert_eq!(ask(&mut echo, "hi").await, "hi", "/{lang}/echo");
        let mut chat = connect(&host, &format!("/{lang}/chat")).await;
        assert_eq!(ask(&mut chat, "hi").await, "anonymous: hi", "/{lang}/chat");
    }
    for lang in ["ts", "py"] {
        let mut counter = connect(&host, &format!("/{lang}/counter")).await;
        assert_eq!(ask(&mut counter, "+1").await, "1", "/{lang}/counter has its own namespace");
    }
    host.stop().await.unwrap();
}
