//! One test suite that every store back end must pass (the Redis back end
//! runs it in `cluster/tests.rs`).

use std::time::Duration;

use super::{ConnectionRecord, KvQuota, KvUsage, Store, StoreError};
use crate::conn_id::{ConnId, id_base};

/// A record of connection `id` on `route`, served by plugin `p`.
pub(crate) fn record(id: ConnId, route: &str) -> ConnectionRecord {
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
pub(crate) async fn run(s: Store, host: u32) {
    namespaces_are_separate(&s).await;
    increment_cas_and_ttl(&s).await;
    list_keys_pages_by_prefix(&s).await;
    kv_quotas_hold(&s).await;
    metadata_and_presence_live_with_the_connection(&s, host).await;
    records_are_capped(&s, id_base(host) + 3).await;
    concurrent_increments_are_atomic(s).await;
}

async fn namespaces_are_separate(s: &Store) {
    s.kv.set("a", "k", b"1".to_vec(), None).await.unwrap();
    assert_eq!(s.kv.get("b", "k").await.unwrap(), None);
    assert_eq!(s.kv.get("a", "k").await.unwrap(), Some(b"1".to_vec()));
    // A namespace that is a prefix of another sees none of its keys.
    s.kv.set("ab", "k", b"2".to_vec(), None).await.unwrap();
    assert_eq!(s.kv.list_keys("a", "", None, 10).await.unwrap(), ["k"]);
}

async fn increment_cas_and_ttl(s: &Store) {
    assert_eq!(s.kv.increment("n", "c", 5).await.unwrap(), 5);
    assert_eq!(s.kv.increment("n", "c", -2).await.unwrap(), 3);
    assert_eq!(s.kv.get("n", "c").await.unwrap(), Some(b"3".to_vec()));
    s.kv.set("n", "t", b"x".to_vec(), None).await.unwrap();
    assert_eq!(s.kv.increment("n", "t", 1).await, Err(StoreError::NotACounter));
    s.kv.set("n", "big", i64::MAX.to_string().into_bytes(), None).await.unwrap();
    assert_eq!(s.kv.increment("n", "big", 1).await, Err(StoreError::NotACounter));
    assert!(!s.kv.compare_and_swap("n", "t", Some(b"y"), b"z".to_vec()).await.unwrap());
    assert!(s.kv.compare_and_swap("n", "t", Some(b"x"), b"z".to_vec()).await.unwrap());
    assert_eq!(s.kv.get("n", "t").await.unwrap(), Some(b"z".to_vec()));
    assert!(s.kv.compare_and_swap("n", "new", None, b"1".to_vec()).await.unwrap());
    assert!(!s.kv.compare_and_swap("n", "new", None, b"2".to_vec()).await.unwrap());
    s.kv.set("n", "e", b"v".to_vec(), Some(Duration::from_millis(20))).await.unwrap();
    assert_eq!(s.kv.get("n", "e").await.unwrap(), Some(b"v".to_vec()));
    s.kv.set("n", "tc", b"1".to_vec(), Some(Duration::from_millis(20))).await.unwrap();
    assert_eq!(s.kv.increment("n", "tc", 1).await.unwrap(), 2, "an increment keeps the expiry");
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(s.kv.get("n", "e").await.unwrap(), None);
    assert_eq!(s.kv.get("n", "tc").await.unwrap(), None);
    assert!(!s.kv.delete("n", "e").await.unwrap(), "an expired key does not count as deleted");
    // The longest TTL a guest can ask for neither overflows nor loses the value.
    s.kv.set("n", "forever", b"v".to_vec(), Some(Duration::from_millis(u64::MAX))).await.unwrap();
    assert_eq!(s.kv.get("n", "forever").await.unwrap(), Some(b"v".to_vec()));
    assert!(s.kv.delete("n", "t").await.unwrap());
    assert!(!s.kv.delete("n", "t").await.unwrap());
}

async fn list_keys_pages_by_prefix(s: &Store) {
    for k in ["a1", "a2", "a3", "b1"] {
        s.kv.set("l", k, vec![], None).await.unwrap();
    }
    assert_eq!(s.kv.list_keys("l", "a", None, 2).await.unwrap(), ["a1", "a2"]);
    assert_eq!(s.kv.list_keys("l", "a", Some("a2"), 2).await.unwrap(), ["a3"]);
    assert_eq!(s.kv.list_keys("l", "", None, 10).await.unwrap(), ["a1", "a2", "a3", "b1"]);
    assert!(s.kv.list_keys("l", "c", None, 10).await.unwrap().is_empty());
}

async fn kv_quotas_hold(s: &Store) {
    let kv = &s.kv;
    kv.set_quota("q", KvQuota { max_keys: 3, max_bytes: 40 });
    let v = |n: usize| vec![b'v'; n];
    // Each entry counts its key and its value: "k1" + 8 bytes = 10.
    for k in ["k1", "k2", "k3"] {
        kv.set("q", k, v(8), None).await.unwrap();
    }
    assert_eq!(kv.usage("q").await.unwrap(), KvUsage { keys: 3, bytes: 30 });
    assert_eq!(kv.set("q", "k4", v(0), None).await, Err(StoreError::QuotaExceeded), "a fourth key");
    assert_eq!(kv.increment("q", "c", 1).await, Err(StoreError::QuotaExceeded));
    assert_eq!(kv.compare_and_swap("q", "c", None, v(1)).await, Err(StoreError::QuotaExceeded));
    assert_eq!(kv.get("q", "c").await.unwrap(), None, "a refused increment writes nothing");
    // Growing a key counts the growth; shrinking always fits.
    kv.set("q", "k1", v(18), None).await.unwrap();
    assert_eq!(kv.usage("q").await.unwrap(), KvUsage { keys: 3, bytes: 40 });
    assert_eq!(kv.set("q", "k2", v(9), None).await, Err(StoreError::QuotaExceeded), "one byte over");
    assert_eq!(kv.compare_and_swap("q", "k2", Some(&v(8)), v(9)).await, Err(StoreError::QuotaExceeded));
    assert_eq!(kv.get("q", "k2").await.unwrap(), Some(v(8)), "a refused write keeps the value");
    kv.set("q", "k1", v(1), None).await.unwrap();
    assert!(kv.delete("q", "k2").await.unwrap());
    assert_eq!(kv.usage("q").await.unwrap(), KvUsage { keys: 2, bytes: 13 });
    assert_eq!(kv.increment("q", "c", 5).await.unwrap(), 5);
    assert_eq!(kv.usage("q").await.unwrap(), KvUsage { keys: 3, bytes: 15 });
    // A namespace without a quota is not held to another's.
    for i in 0..5 {
        kv.set("unquoted", &format!("k{i}"), v(100), None).await.unwrap();
    }
    // An expired key stops counting once its back end reclaims it (within
    // about a second on the embedded store).
    assert!(kv.delete("q", "k3").await.unwrap());
    kv.set("q", "t", v(2), Some(Duration::from_millis(10))).await.unwrap();
    assert_eq!(kv.set("q", "k5", v(0), None).await, Err(StoreError::QuotaExceeded));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while kv.usage("q").await.unwrap().keys == 3 {
        assert!(std::time::Instant::now() < deadline, "the expired key still counts after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kv.usage("q").await.unwrap(), KvUsage { keys: 2, bytes: 5 });
    kv.set("q", "k5", v(0), None).await.unwrap();
    // A larger quota takes effect for the next write.
    kv.set_quota("q", KvQuota { max_keys: 4, max_bytes: 40 });
    kv.set("q", "k6", v(0), None).await.unwrap();
    kv.set_quota("q", KvQuota::UNLIMITED);
}

async fn metadata_and_presence_live_with_the_connection(s: &Store, host: u32) {
    // Ids as this host makes them.
    let (c1, c2) = (id_base(host) + 1, id_base(host) + 2);
    assert_eq!(s.connections.metadata_set(c1, "k", "v").await, Err(StoreError::UnknownConnection));
    assert_eq!(s.connections.subscribe(c1, "room").await, Err(StoreError::UnknownConnection));
    s.connections.open(record(c1, "/r")).await.unwrap();
    s.connections.open(record(c2, "/other")).await.unwrap();
    s.connections.metadata_set(c1, "k", "v").await.unwrap();
    s.connections.metadata_set(c1, "k", "w").await.unwrap();
    assert_eq!(s.connections.metadata_get(c1, "k").await.unwrap().as_deref(), Some("w"));
    s.connections.subscribe(c1, "room").await.unwrap();
    s.connections.subscribe(c1, "room").await.unwrap();
    s.connections.subscribe(c2, "room").await.unwrap();
    assert_eq!(s.connections.members("room").await.unwrap(), [c1, c2]);
    let routes: Vec<_> = s.connections.list(Some("/r"), None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(routes, [c1]);
    let page: Vec<_> = s.connections.list(None, Some(c1), 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(page, [c2]);
    s.connections.unsubscribe(c2, "room").await.unwrap();
    assert_eq!(s.connections.members("room").await.unwrap(), [c1]);

    let closed = s.connections.close(c1).await.unwrap().expect("was open");
    assert_eq!(closed.metadata, vec![("k".to_string(), "w".to_string())]);
    assert_eq!(closed.channels, ["room"]);
    assert_eq!(s.connections.close(c1).await.unwrap(), None, "removed exactly once");
    assert!(s.connections.members("room").await.unwrap().is_empty());
    assert_eq!(s.connections.metadata_get(c1, "k").await, Err(StoreError::UnknownConnection));
    s.connections.close(c2).await.unwrap();
}

/// The default [`super::RecordCaps`]: 64 metadata keys, 64 KiB of
/// metadata, 128 channels per connection; connection `id` is opened here.
pub(crate) async fn records_are_capped(s: &Store, id: ConnId) {
    s.connections.open(record(id, "/caps")).await.unwrap();
    let c = &s.connections;
    for i in 0..64 {
        c.metadata_set(id, &format!("k{i}"), "v").await.unwrap();
    }
    assert_eq!(c.metadata_set(id, "one-more", "v").await, Err(StoreError::QuotaExceeded));
    c.metadata_set(id, "k0", "replaced").await.expect("replacing a key adds none");
    c.metadata_delete(id, "k1").await.unwrap();
    c.metadata_set(id, "one-more", "v").await.expect("a deleted key made room");
    // Bytes: 64 KiB of keys and values together. The 64 entries hold
    // about 300 bytes; one value of 64 KiB does not fit beside them.
    assert_eq!(c.metadata_set(id, "k2", &"b".repeat(64 << 10)).await, Err(StoreError::QuotaExceeded));
    assert_eq!(c.metadata_get(id, "k2").await.unwrap().as_deref(), Some("v"), "a refused set changes nothing");
    c.metadata_set(id, "k2", &"b".repeat(60 << 10)).await.expect("60 KiB fits");
    assert_eq!(c.metadata_set(id, "k3", &"b".repeat(5 << 10)).await, Err(StoreError::QuotaExceeded));
    c.metadata_delete(id, "k2").await.unwrap();
    c.metadata_set(id, "k3", &"b".repeat(5 << 10)).await.expect("a deleted value gave its bytes back");
    let record = c.get(id).await.unwrap().unwrap();
    assert_eq!(record.metadata.len(), 63, "64, less k2");
    assert_eq!(record.metadata[0], ("k0".to_string(), "replaced".to_string()), "insertion order kept");
    assert_eq!(record.metadata.last().unwrap().0, "one-more");

    for i in 0..128 {
        c.subscribe(id, &format!("ch{i}")).await.unwrap();
    }
    c.subscribe(id, "ch5").await.expect("a channel it is in costs nothing");
    assert_eq!(c.subscribe(id, "ch128").await, Err(StoreError::QuotaExceeded));
    assert!(c.members("ch128").await.unwrap().is_empty());
    c.unsubscribe(id, "ch0").await.unwrap();
    c.subscribe(id, "ch128").await.expect("leaving one made room");
    let record = c.get(id).await.unwrap().unwrap();
    assert_eq!((record.channels.len(), record.channels.last().map(String::as_str)), (128, Some("ch128")));
    c.close(id).await.unwrap();
}

async fn concurrent_increments_are_atomic(s: Store) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    s.kv.increment("conc", "n", 1).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.kv.get("conc", "n").await.unwrap(), Some(b"400".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_back_end_passes_the_suite() {
    run(super::open(&super::StoreKind::Memory, std::path::Path::new("unused"), Default::default()).unwrap(), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_back_end_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    run(super::open(&super::StoreKind::Embedded, dir.path(), Default::default()).unwrap(), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = super::open(&super::StoreKind::Embedded, dir.path(), Default::default()).unwrap();
        assert_eq!(s.kv.increment("p", "hits", 41).await.unwrap(), 41);
        s.kv.set("p", "name", b"wharf".to_vec(), None).await.unwrap();
    }
    let s = super::open(&super::StoreKind::Embedded, dir.path(), Default::default()).unwrap();
    assert_eq!(s.kv.increment("p", "hits", 1).await.unwrap(), 42);
    assert_eq!(s.kv.get("p", "name").await.unwrap(), Some(b"wharf".to_vec()));
}

#[test]
fn a_corrupt_or_unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(super::embedded::FILE_NAME), vec![0x5a; 8192]).unwrap();
    let e = super::open(&super::StoreKind::Embedded, dir.path(), Default::default()).err().expect("garbage is refused");
    let msg = format!("{e:#}");
    assert!(msg.contains("wharf.redb"), "{msg}");

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let e = super::open(&super::StoreKind::Embedded, &file, Default::default())
        .err()
        .expect("a file as data dir is refused");
    assert!(format!("{e:#}").contains("creating the data directory"), "{e:#}");
}
