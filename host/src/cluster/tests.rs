//! The Redis back end against a real `redis-server`: the store suite every
//! back end passes, and what only several hosts on one Redis do (sharing
//! records, unique ids, telling a holder of changes, reaping, resync, host
//! numbers handed out twice).

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::sync::mpsc;
use wharf_test_support::redis_server::RedisServer;

use super::bus::{Outbox, Outgoing, Target};
use super::envelope::Envelope;
use super::liveness::Beat;
use super::store::{RecordChange, RedisStore};
use crate::conn_id::{ConnId, id_base};
use crate::store::suite::{record, run};
use crate::store::{ConnectionRecord, RecordCaps, Store, StoreError};

/// One host's Redis store, the same as a [`Store`], and what it queued for
/// other hosts.
async fn host(redis: &RedisServer) -> (Arc<RedisStore>, Store, mpsc::Receiver<Outgoing>) {
    let (tx, rx) = mpsc::channel(1024);
    let outbox = Outbox::new(tx, IntCounter::new("queue_full", "queue_full").unwrap());
    let store = Arc::new(RedisStore::connect(&redis.url(), TTL, RecordCaps::default(), outbox).await.unwrap());
    let s = Store { kv: store.clone(), connections: store.clone(), history: store.clone(), timers: store.clone() };
    (store, s, rx)
}

/// The envelopes queued so far, with the host each is for (`None`: all).
fn drain(frames: &mut mpsc::Receiver<Outgoing>) -> Vec<(Option<u32>, Envelope)> {
    let mut out = Vec::new();
    while let Ok(o) = frames.try_recv() {
        if let Outgoing::Frame { target, frame } = o {
            let host = match target {
                Target::All => None,
                Target::Host(h) => Some(h),
            };
            out.push((host, Envelope::decode(&frame).expect("a valid frame").1));
        }
    }
    out
}

const TTL: Duration = Duration::from_millis(1000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_end_passes_the_suite() {
    let redis = RedisServer::start();
    let (store, s, _frames) = host(&redis).await;
    run(s, store.host()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_timers_pass_the_suite_and_one_host_holds_each_lease() {
    use crate::store::Timers;
    let redis = RedisServer::start();
    let (a, _, _fa) = host(&redis).await;
    let (b, _, _fb) = host(&redis).await;
    crate::store::timers::tests::suite(&*a).await;
    // Two hosts claiming at once: each due timer goes to one of them.
    for i in 0..50 {
        a.set("many", crate::store::timers::tests::timer(&format!("t{i:02}"), 10, ""), 1000).await.unwrap();
    }
    let (ca, cb) = tokio::join!(a.claim(100, 60_000, 30), b.claim(100, 60_000, 30));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    let mut names: Vec<_> =
        ca.due.iter().chain(&cb.due).filter(|d| &*d.plugin == "many").map(|d| d.timer.name.clone()).collect();
    assert_eq!(names.len(), 50, "every due timer claimed once between the two: {} and {}", ca.due.len(), cb.due.len());
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 50, "no timer claimed by both");
    // The holder died: after its lease the other host claims them.
    let again = b.claim(60_000, 120_000, 100).await.unwrap();
    assert_eq!(again.due.iter().filter(|d| &*d.plugin == "many").count(), 50);
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
    let (a, sa, _) = host(&redis).await;
    let (b, sb, mut told) = host(&redis).await;
    assert_ne!(a.host(), b.host(), "each host takes its own number");
    let (ia, ib) = (id_base(a.host()) + 1, id_base(b.host()) + 1);
    sa.connections.open(remote_record(ia)).await.unwrap();
    sb.connections.open(record(ib, "/chat")).await.unwrap();

    // B sees A's connection, its metadata and its membership, and may change them.
    assert_eq!(sb.connections.get(ia).await.unwrap(), Some(remote_record(ia)));
    assert_eq!(sb.connections.plugin(ia).await.unwrap().as_deref(), Some("p"));
    assert_eq!(sb.connections.metadata_get(ia, "name").await.unwrap().as_deref(), Some("ada"));
    sb.connections.subscribe(ib, "room").await.unwrap();
    assert_eq!(sa.connections.members("room").await.unwrap(), [ia, ib]);
    // A change to another host's connection is told to that host (a record
    // envelope for its host channel in B's outbox), which reads its own
    // connections from its copy.
    sb.connections.metadata_set(ia, "seen", "yes").await.unwrap();
    assert_eq!(sa.connections.metadata_get(ia, "seen").await.unwrap(), None, "not yet told");
    let changes = drain(&mut told);
    let seen = RecordChange::MetadataSet { key: "seen".into(), value: "yes".into() };
    assert_eq!(changes, [(Some(a.host()), Envelope::Record { conn: ia, change: seen })]);
    for (_, env) in &changes {
        let Envelope::Record { conn, change } = env else { unreachable!("checked above") };
        a.apply_remote_change(*conn, change);
    }
    assert_eq!(sa.connections.metadata_get(ia, "seen").await.unwrap().as_deref(), Some("yes"));
    assert_eq!(sb.connections.metadata_get(ia, "seen").await.unwrap().as_deref(), Some("yes"));
    sb.connections.subscribe(ia, "other").await.unwrap();
    assert_eq!(drain(&mut told).len(), 1);
    assert_eq!(sb.connections.close(ib).await.unwrap().map(|r| r.id), Some(ib));
    sb.connections.open(record(ib, "/chat")).await.unwrap();
    sb.connections.subscribe(ib, "room").await.unwrap();
    assert!(drain(&mut told).is_empty(), "changes to its own connections are not told");
    let listed: Vec<_> = sa.connections.list(Some("/chat"), None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(listed, [ia, ib]);
    let first = sb.connections.list(Some("/chat"), None, 1).await.unwrap();
    assert_eq!(first, [sb.connections.get(ia).await.unwrap().unwrap()], "a listed record is the whole record");
    assert_eq!(first[0].metadata.len(), 2);

    // Unknown ids on either side.
    assert_eq!(sb.connections.metadata_get(ia + 100, "k").await, Err(StoreError::UnknownConnection));
    assert_eq!(sb.connections.subscribe(ia + 100, "room").await, Err(StoreError::UnknownConnection));
    assert_eq!(sa.connections.get(ia + 100).await.unwrap(), None);

    assert_eq!(sb.connections.close(ib).await.unwrap().map(|r| r.id), Some(ib));
    assert_eq!(sa.connections.members("room").await.unwrap(), [ia]);
    assert_eq!(sa.connections.get(ib).await.unwrap(), None, "closed on B, gone for A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_hosts_changes_are_held_to_the_same_caps() {
    let redis = RedisServer::start();
    let (a, sa, _) = host(&redis).await;
    let (_b, sb, _told) = host(&redis).await;
    let ia = id_base(a.host()) + 1;
    // The opening record's metadata counts (remote_record has one entry).
    sa.connections.open(remote_record(ia)).await.unwrap();
    for i in 0..62 {
        sa.connections.metadata_set(ia, &format!("k{i}"), "v").await.unwrap();
    }
    // 63 keys set on A (its copy checks, Redis mirrors): B may add one.
    sb.connections.metadata_set(ia, "from-b", "v").await.unwrap();
    assert_eq!(sb.connections.metadata_set(ia, "too-many", "v").await, Err(StoreError::QuotaExceeded));
    sb.connections.metadata_set(ia, "k0", "replaced").await.expect("replacing adds no key");
    // Bytes set on A count for B: 60 KiB there, 5 KiB more does not fit.
    sa.connections.metadata_set(ia, "k1", &"b".repeat(60 << 10)).await.unwrap();
    assert_eq!(sb.connections.metadata_set(ia, "k2", &"b".repeat(5 << 10)).await, Err(StoreError::QuotaExceeded));
    sa.connections.metadata_delete(ia, "k1").await.unwrap();
    sb.connections.metadata_set(ia, "k2", &"b".repeat(5 << 10)).await.expect("A's delete gave the bytes back");
    // Channels: remote_record is in one; A adds 126, B the last.
    for i in 0..126 {
        sa.connections.subscribe(ia, &format!("ch{i}")).await.unwrap();
    }
    sb.connections.subscribe(ia, "from-b").await.unwrap();
    sb.connections.subscribe(ia, "ch3").await.expect("a channel it is in");
    assert_eq!(sb.connections.subscribe(ia, "one-more").await, Err(StoreError::QuotaExceeded));
    assert!(sb.connections.members("one-more").await.unwrap().is_empty());
    let seen_by_b = sb.connections.get(ia).await.unwrap().unwrap();
    assert_eq!((seen_by_b.metadata.len(), seen_by_b.channels.len()), (63, 128), "64 keys less k1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hosts_connections_are_reaped_and_a_live_host_resyncs() {
    let redis = RedisServer::start();
    let (a, sa, _) = host(&redis).await;
    let (b, sb, _) = host(&redis).await;
    let (ia, ib) = (id_base(a.host()) + 1, id_base(b.host()) + 1);
    sa.connections.open(remote_record(ia)).await.unwrap();
    sb.connections.open(remote_record(ib)).await.unwrap();
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
    assert_eq!(sb.connections.members("room").await.unwrap(), [ib]);
    assert_eq!(sb.connections.get(ia).await.unwrap(), None);

    // Redis loses everything; B's heartbeat notices and writes its records back.
    let mut conn = b.commands();
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert_eq!(b.heartbeat().await.unwrap(), Beat::Stale, "B knows it was forgotten");
    assert_eq!(b.resync().await.unwrap(), (1, 0));
    assert_eq!(b.heartbeat().await.unwrap(), Beat::Current);
    assert_eq!(sa.connections.get(ib).await.unwrap(), Some(remote_record(ib)));
    assert_eq!(sa.connections.members("room").await.unwrap(), [ib]);

    // A change Redis does not take is kept locally and written later.
    b.set_reachable(false);
    sb.connections.metadata_set(ib, "k", "v").await.unwrap();
    assert_eq!(sb.kv.get("n", "k").await, Err(StoreError::Unavailable("redis: unreachable".into())));
    b.set_reachable(true);
    assert_eq!(b.heartbeat().await.unwrap(), Beat::Stale, "a pending change asks for a resync");
    b.resync().await.unwrap();
    assert_eq!(sa.connections.metadata_get(ib, "k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_a_resync_writes_the_records_are_kept() {
    let redis = RedisServer::start();
    let (a, sa, _) = host(&redis).await;
    let (_, sb, _) = host(&redis).await;
    let ids: Vec<ConnId> = (1..=200).map(|i| id_base(a.host()) + i).collect();
    for &id in &ids {
        sa.connections.open(record(id, "/chat")).await.unwrap();
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
        sa.connections.metadata_set(id, "n", &i.to_string()).await.unwrap();
        if i % 2 == 0 {
            sa.connections.subscribe(id, "room").await.unwrap();
        }
    }
    assert_eq!(resync.await.unwrap().unwrap(), (200, 0));
    assert_eq!(a.heartbeat().await.unwrap(), Beat::Current);
    let mut lost = Vec::new();
    for &id in &ids {
        let here = sa.connections.get(id).await.unwrap().unwrap();
        assert_eq!(here.metadata, [("n".to_string(), (id - ids[0]).to_string())]);
        if sb.connections.get(id).await.unwrap().as_ref() != Some(&here) {
            lost.push(id);
        }
    }
    assert!(lost.is_empty(), "Redis lost the changes to {} of 200 records: {lost:?}", lost.len());
    assert_eq!(sb.connections.members("room").await.unwrap().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_number_handed_out_twice_is_noticed() {
    let redis = RedisServer::start();
    let (a, _, _) = host(&redis).await;
    // Redis loses everything, and a new host starts before A beats again:
    // it is handed A's number.
    let () = redis::cmd("FLUSHALL").query_async(&mut a.commands()).await.unwrap();
    let (b, _, _) = host(&redis).await;
    assert_eq!(b.host(), a.host());
    assert_eq!(a.heartbeat().await.unwrap(), Beat::Taken);
    assert!(a.resync().await.is_err(), "A cannot take the number back");
    assert_eq!(b.heartbeat().await.unwrap(), Beat::Current);
    // A host that is handed a held number skips it.
    let () = redis::cmd("SET").arg("wharf:hosts:next").arg(0).query_async(&mut a.commands()).await.unwrap();
    let (c, _, _) = host(&redis).await;
    assert_ne!(c.host(), b.host());
}

#[test]
fn redis_passwords_stay_out_of_logs() {
    assert_eq!(super::redact("redis://:s3cret@10.0.0.5:6379/0"), "redis://:***@10.0.0.5:6379/0");
    assert_eq!(super::redact("redis://app:s3cret@h:1/2"), "redis://app:***@h:1/2");
    assert_eq!(super::redact("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_history_is_one_sequence_for_every_host_and_a_flush_starts_an_epoch() {
    use crate::handler::Message;
    use crate::store::{Entry, History};
    let redis = RedisServer::start();
    let (a, _, _) = host(&redis).await;
    let (b, _, _) = host(&redis).await;
    crate::store::history_suite(&*a, "c:room").await;

    // Two hosts publish at once: one sequence of offsets, published to
    // every host in offset order, each frame carrying its position.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe(super::bus::ALL).await.unwrap();
    let limits = crate::store::HISTORY_LIMITS;
    let publish = |store: Arc<RedisStore>, who: &'static str| async move {
        for i in 0..100 {
            let msg = Entry::Plain(Message::Text(format!("{who}{i}")));
            store.append("c:race", limits, msg, &|_, _| panic!("Redis delivers through the bus")).await.unwrap();
        }
    };
    let (ta, tb) = (tokio::spawn(publish(a.clone(), "a")), tokio::spawn(publish(b.clone(), "b")));
    ta.await.unwrap();
    tb.await.unwrap();
    let mut stream = sub.on_message();
    let mut offsets = Vec::new();
    let mut epoch = None;
    while offsets.len() < 200 {
        let frame = tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(&mut stream))
            .await
            .expect("every publication is published")
            .unwrap();
        let payload: Vec<u8> = frame.get_payload().unwrap();
        let (origin, env) = Envelope::decode(&payload).unwrap();
        assert_eq!(origin, super::envelope::STORE_ORIGIN, "no host skips it");
        let Envelope::Recorded { channel, pos, .. } = env else { panic!("{env:?}") };
        assert_eq!(channel, "c:race");
        assert_eq!(*epoch.get_or_insert(pos.epoch.clone()), pos.epoch);
        offsets.push(pos.offset);
    }
    assert_eq!(offsets, (1..=200).collect::<Vec<u64>>(), "one sequence, in order");
    let page = b.read("c:race", limits, None, 3).await.unwrap();
    assert_eq!(page.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), [3, 4, 5].map(|o| o + 195));

    // Redis loses its data: the next publication starts a new epoch, and
    // an old position is not served.
    let old = page.latest.clone();
    let mut conn = a.commands();
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
    let next = a.append("c:race", limits, Entry::Plain(Message::Text("x".into())), &|_, _| {}).await.unwrap();
    assert_eq!(next.offset, 1);
    assert_ne!(next.epoch, old.epoch);
    assert!(!b.read("c:race", limits, Some(&old), 10).await.unwrap().recovered);
}
