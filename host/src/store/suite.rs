//! One test suite that every store back end must pass.

use std::sync::Arc;
use std::time::Duration;

use super::{Beat, ConnectionRecord, RecordChange, RedisStore, Store, StoreError};
use crate::conn_id::{ConnId, id_base};

#[path = "../../tests/e2e/common/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

fn record(id: ConnId, route: &str) -> ConnectionRecord {
    ConnectionRecord {
        id,
        route: route.into(),
        plugin: "p".into(),
        remote_addr: "127.0.0.1:1".into(),
        connected_at_ms: 1,
        metadata: vec![],
        channels: vec![],
    }
}

/// Runs every check against `s`, the store of host number `host`.
pub async fn run(s: Arc<dyn Store>, host: u32) {
    namespaces_are_separate(&*s).await;
    increment_cas_and_ttl(&*s).await;
    list_keys_pages_by_prefix(&*s).await;
    metadata_and_presence_live_with_the_connection(&*s, host).await;
    concurrent_increments_are_atomic(s).await;
}

async fn namespaces_are_separate(s: &dyn Store) {
    s.kv_set("a", "k", b"1".to_vec(), None).await.unwrap();
    assert_eq!(s.kv_get("b", "k").await.unwrap(), None);
    assert_eq!(s.kv_get("a", "k").await.unwrap(), Some(b"1".to_vec()));
    // A namespace that is a prefix of another sees none of its keys.
    s.kv_set("ab", "k", b"2".to_vec(), None).await.unwrap();
    assert_eq!(s.kv_list_keys("a", "", None, 10).await.unwrap(), ["k"]);
}

async fn increment_cas_and_ttl(s: &dyn Store) {
    assert_eq!(s.kv_increment("n", "c", 5).await.unwrap(), 5);
    assert_eq!(s.kv_increment("n", "c", -2).await.unwrap(), 3);
    assert_eq!(s.kv_get("n", "c").await.unwrap(), Some(b"3".to_vec()));
    s.kv_set("n", "t", b"x".to_vec(), None).await.unwrap();
    assert_eq!(s.kv_increment("n", "t", 1).await, Err(StoreError::NotACounter));
    s.kv_set("n", "big", i64::MAX.to_string().into_bytes(), None).await.unwrap();
    assert_eq!(s.kv_increment("n", "big", 1).await, Err(StoreError::NotACounter));
    assert!(!s.kv_compare_and_swap("n", "t", Some(b"y"), b"z".to_vec()).await.unwrap());
    assert!(s.kv_compare_and_swap("n", "t", Some(b"x"), b"z".to_vec()).await.unwrap());
    assert_eq!(s.kv_get("n", "t").await.unwrap(), Some(b"z".to_vec()));
    assert!(s.kv_compare_and_swap("n", "new", None, b"1".to_vec()).await.unwrap());
    assert!(!s.kv_compare_and_swap("n", "new", None, b"2".to_vec()).await.unwrap());
    s.kv_set("n", "e", b"v".to_vec(), Some(Duration::from_millis(20))).await.unwrap();
    assert_eq!(s.kv_get("n", "e").await.unwrap(), Some(b"v".to_vec()));
    s.kv_set("n", "tc", b"1".to_vec(), Some(Duration::from_millis(20))).await.unwrap();
    assert_eq!(s.kv_increment("n", "tc", 1).await.unwrap(), 2, "an increment keeps the expiry");
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(s.kv_get("n", "e").await.unwrap(), None);
    assert_eq!(s.kv_get("n", "tc").await.unwrap(), None);
    assert!(!s.kv_delete("n", "e").await.unwrap(), "an expired key does not count as deleted");
    assert!(s.kv_delete("n", "t").await.unwrap());
    assert!(!s.kv_delete("n", "t").await.unwrap());
}

async fn list_keys_pages_by_prefix(s: &dyn Store) {
    for k in ["a1", "a2", "a3", "b1"] {
        s.kv_set("l", k, vec![], None).await.unwrap();
    }
    assert_eq!(s.kv_list_keys("l", "a", None, 2).await.unwrap(), ["a1", "a2"]);
    assert_eq!(s.kv_list_keys("l", "a", Some("a2"), 2).await.unwrap(), ["a3"]);
    assert_eq!(s.kv_list_keys("l", "", None, 10).await.unwrap(), ["a1", "a2", "a3", "b1"]);
    assert!(s.kv_list_keys("l", "c", None, 10).await.unwrap().is_empty());
}

async fn metadata_and_presence_live_with_the_connection(s: &dyn Store, host: u32) {
    // Ids as this host makes them.
    let (c1, c2) = (id_base(host) + 1, id_base(host) + 2);
    assert_eq!(s.metadata_set(c1, "k", "v").await, Err(StoreError::UnknownConnection));
    assert_eq!(s.channel_subscribe(c1, "room").await, Err(StoreError::UnknownConnection));
    s.connection_open(record(c1, "/r")).await.unwrap();
    s.connection_open(record(c2, "/other")).await.unwrap();
    s.metadata_set(c1, "k", "v").await.unwrap();
    s.metadata_set(c1, "k", "w").await.unwrap();
    assert_eq!(s.metadata_get(c1, "k").await.unwrap().as_deref(), Some("w"));
    s.channel_subscribe(c1, "room").await.unwrap();
    s.channel_subscribe(c1, "room").await.unwrap();
    s.channel_subscribe(c2, "room").await.unwrap();
    assert_eq!(s.channel_members("room").await.unwrap(), [c1, c2]);
    let routes: Vec<_> = s.connections(Some("/r"), None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(routes, [c1]);
    let page: Vec<_> = s.connections(None, Some(c1), 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(page, [c2]);
    s.channel_unsubscribe(c2, "room").await.unwrap();
    assert_eq!(s.channel_members("room").await.unwrap(), [c1]);

    let closed = s.connection_close(c1).await.unwrap().expect("was open");
    assert_eq!(closed.metadata, vec![("k".to_string(), "w".to_string())]);
    assert_eq!(closed.channels, ["room"]);
    assert_eq!(s.connection_close(c1).await.unwrap(), None, "removed exactly once");
    assert!(s.channel_members("room").await.unwrap().is_empty());
    assert_eq!(s.metadata_get(c1, "k").await, Err(StoreError::UnknownConnection));
    s.connection_close(c2).await.unwrap();
}

async fn concurrent_increments_are_atomic(s: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    s.kv_increment("conc", "n", 1).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.kv_get("conc", "n").await.unwrap(), Some(b"400".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_back_end_passes_the_suite() {
    run(super::open(&super::StoreKind::Memory, std::path::Path::new("unused")).unwrap(), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_back_end_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    run(super::open(&super::StoreKind::Embedded, dir.path()).unwrap(), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = super::open(&super::StoreKind::Embedded, dir.path()).unwrap();
        assert_eq!(s.kv_increment("p", "hits", 41).await.unwrap(), 41);
        s.kv_set("p", "name", b"wharf".to_vec(), None).await.unwrap();
    }
    let s = super::open(&super::StoreKind::Embedded, dir.path()).unwrap();
    assert_eq!(s.kv_increment("p", "hits", 1).await.unwrap(), 42);
    assert_eq!(s.kv_get("p", "name").await.unwrap(), Some(b"wharf".to_vec()));
}

const TTL: Duration = Duration::from_millis(1000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_end_passes_the_suite() {
    let redis = RedisServer::start();
    let store = Arc::new(RedisStore::connect(&redis.url(), TTL).await.unwrap());
    let host = store.host();
    run(store, host).await;
}

fn remote_record(id: ConnId) -> ConnectionRecord {
    ConnectionRecord {
        metadata: vec![("name".into(), "ada".into())],
        channels: vec!["room".into()],
        ..record(id, "/chat")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hosts_share_connections_and_get_unique_ids() {
    let redis = RedisServer::start();
    let a = RedisStore::connect(&redis.url(), TTL).await.unwrap();
    let b = RedisStore::connect(&redis.url(), TTL).await.unwrap();
    assert_ne!(a.host(), b.host(), "each host takes its own number");
    let (ia, ib) = (id_base(a.host()) + 1, id_base(b.host()) + 1);
    a.connection_open(remote_record(ia)).await.unwrap();
    b.connection_open(record(ib, "/chat")).await.unwrap();

    // B sees A's connection, its metadata and its membership, and may change them.
    assert_eq!(b.connection(ia).await.unwrap(), Some(remote_record(ia)));
    assert_eq!(b.connection_plugin(ia).await.unwrap().as_deref(), Some("p"));
    assert_eq!(b.metadata_get(ia, "name").await.unwrap().as_deref(), Some("ada"));
    b.channel_subscribe(ib, "room").await.unwrap();
    assert_eq!(a.channel_members("room").await.unwrap(), [ia, ib]);
    // A change to another host's connection is told to that host, which
    // reads its own connections from its copy.
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = told.clone();
    b.on_remote_change(move |id, change| log.lock().unwrap().push((id, change)));
    b.metadata_set(ia, "seen", "yes").await.unwrap();
    assert_eq!(a.metadata_get(ia, "seen").await.unwrap(), None, "not yet told");
    let changes = std::mem::take(&mut *told.lock().unwrap());
    assert_eq!(changes, [(ia, RecordChange::MetadataSet { key: "seen".into(), value: "yes".into() })]);
    for (id, change) in &changes {
        a.apply_remote_change(*id, change);
    }
    assert_eq!(a.metadata_get(ia, "seen").await.unwrap().as_deref(), Some("yes"));
    assert_eq!(b.metadata_get(ia, "seen").await.unwrap().as_deref(), Some("yes"));
    b.channel_subscribe(ia, "other").await.unwrap();
    assert_eq!(told.lock().unwrap().len(), 1);
    assert_eq!(b.connection_close(ib).await.unwrap().map(|r| r.id), Some(ib));
    b.connection_open(record(ib, "/chat")).await.unwrap();
    b.channel_subscribe(ib, "room").await.unwrap();
    assert_eq!(told.lock().unwrap().len(), 1, "changes to its own connections are not told");
    let listed: Vec<_> = a.connections(Some("/chat"), None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(listed, [ia, ib]);
    let first = b.connections(Some("/chat"), None, 1).await.unwrap();
    assert_eq!(first, [b.connection(ia).await.unwrap().unwrap()], "a listed record is the whole record");
    assert_eq!(first[0].metadata.len(), 2);

    // Unknown ids on either side.
    assert_eq!(b.metadata_get(ia + 100, "k").await, Err(StoreError::UnknownConnection));
    assert_eq!(b.channel_subscribe(ia + 100, "room").await, Err(StoreError::UnknownConnection));
    assert_eq!(a.connection(ia + 100).await.unwrap(), None);

    assert_eq!(b.connection_close(ib).await.unwrap().map(|r| r.id), Some(ib));
    assert_eq!(a.channel_members("room").await.unwrap(), [ia]);
    assert_eq!(a.connection(ib).await.unwrap(), None, "closed on B, gone for A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hosts_connections_are_reaped_and_a_live_host_resyncs() {
    let redis = RedisServer::start();
    let a = RedisStore::connect(&redis.url(), TTL).await.unwrap();
    let b = RedisStore::connect(&redis.url(), TTL).await.unwrap();
    let (ia, ib) = (id_base(a.host()) + 1, id_base(b.host()) + 1);
    a.connection_open(remote_record(ia)).await.unwrap();
    b.connection_open(remote_record(ib)).await.unwrap();
    assert_eq!(b.reap().await.unwrap(), (2, vec![]), "both alive");

    // A stops heartbeating (as after kill -9); B keeps going.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let reaped = loop {
        assert_eq!(b.heartbeat().await.unwrap(), Beat::Current);
        let (live, reaped) = b.reap().await.unwrap();
        if !reaped.is_empty() {
            assert_eq!(live, 1);
            break reaped;
        }
        assert!(std::time::Instant::now() < deadline, "A was never reaped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reaped, vec![(a.host(), 1)]);
    assert_eq!(b.channel_members("room").await.unwrap(), [ib]);
    assert_eq!(b.connection(ia).await.unwrap(), None);

    // Redis loses everything; B's heartbeat notices and writes its records back.
    let mut conn = b.commands();
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert_eq!(b.heartbeat().await.unwrap(), Beat::Stale, "B knows it was forgotten");
    assert_eq!(b.resync().await.unwrap(), (1, 0));
    assert_eq!(b.heartbeat().await.unwrap(), Beat::Current);
    assert_eq!(a.connection(ib).await.unwrap(), Some(remote_record(ib)));
    assert_eq!(a.channel_members("room").await.unwrap(), [ib]);

    // A change Redis does not take is kept locally and written later.
    b.set_reachable(false);
    b.metadata_set(ib, "k", "v").await.unwrap();
    assert_eq!(b.kv_get("n", "k").await, Err(StoreError::Unavailable("redis: unreachable".into())));
    b.set_reachable(true);
    assert_eq!(b.heartbeat().await.unwrap(), Beat::Stale, "a pending change asks for a resync");
    b.resync().await.unwrap();
    assert_eq!(a.metadata_get(ib, "k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_a_resync_writes_the_records_are_kept() {
    let redis = RedisServer::start();
    let a = Arc::new(RedisStore::connect(&redis.url(), TTL).await.unwrap());
    let b = RedisStore::connect(&redis.url(), TTL).await.unwrap();
    let ids: Vec<ConnId> = (1..=200).map(|i| id_base(a.host()) + i).collect();
    for &id in &ids {
        a.connection_open(record(id, "/chat")).await.unwrap();
    }
    // Redis loses everything; while A writes its records back, they change.
    let mut conn = a.commands();
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert_eq!(a.heartbeat().await.unwrap(), Beat::Stale);
    let resync = tokio::spawn({
        let a = a.clone();
        async move { a.resync().await }
    });
    for (i, &id) in ids.iter().enumerate().rev() {
        a.metadata_set(id, "n", &i.to_string()).await.unwrap();
        if i % 2 == 0 {
            a.channel_subscribe(id, "room").await.unwrap();
        }
    }
    assert_eq!(resync.await.unwrap().unwrap(), (200, 0));
    assert_eq!(a.heartbeat().await.unwrap(), Beat::Current);
    let mut lost = Vec::new();
    for &id in &ids {
        let here = a.connection(id).await.unwrap().unwrap();
        assert_eq!(here.metadata, [("n".to_string(), (id - ids[0]).to_string())]);
        if b.connection(id).await.unwrap().as_ref() != Some(&here) {
            lost.push(id);
        }
    }
    assert!(lost.is_empty(), "Redis lost the changes to {} of 200 records: {lost:?}", lost.len());
    assert_eq!(b.channel_members("room").await.unwrap().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_number_handed_out_twice_is_noticed() {
    let redis = RedisServer::start();
    let a = RedisStore::connect(&redis.url(), TTL).await.unwrap();
    // Redis loses everything, and a new host starts before A beats again:
    // it is handed A's number.
    let () = redis::cmd("FLUSHALL").query_async(&mut a.commands()).await.unwrap();
    let b = RedisStore::connect(&redis.url(), TTL).await.unwrap();
    assert_eq!(b.host(), a.host());
    assert_eq!(a.heartbeat().await.unwrap(), Beat::Taken);
    assert!(a.resync().await.is_err(), "A cannot take the number back");
    assert_eq!(b.heartbeat().await.unwrap(), Beat::Current);
    // A host that is handed a held number skips it.
    let () = redis::cmd("SET").arg("wharf:hosts:next").arg(0).query_async(&mut a.commands()).await.unwrap();
    let c = RedisStore::connect(&redis.url(), TTL).await.unwrap();
    assert_ne!(c.host(), b.host());
}

#[test]
fn redis_passwords_stay_out_of_logs() {
    assert_eq!(super::redact("redis://:s3cret@10.0.0.5:6379/0"), "redis://:***@10.0.0.5:6379/0");
    assert_eq!(super::redact("redis://app:s3cret@h:1/2"), "redis://app:***@h:1/2");
    assert_eq!(super::redact("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
}

#[test]
fn a_corrupt_or_unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(super::embedded::FILE_NAME), vec![0x5a; 8192]).unwrap();
    let e = super::open(&super::StoreKind::Embedded, dir.path()).err().expect("garbage is refused");
    let msg = format!("{e:#}");
    assert!(msg.contains("wharf.redb"), "{msg}");

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let e = super::open(&super::StoreKind::Embedded, &file).err().expect("a file as data dir is refused");
    assert!(format!("{e:#}").contains("creating the data directory"), "{e:#}");
}
