//! The registry of live connections on this host: each one's mailbox
//! (outbound queue and close request), route membership and channel
//! membership.
//!
//! Delivery never waits: a message goes into the recipient's queue, bounded
//! in messages and in payload bytes. A recipient whose queue is full is a
//! slow reader, and its route's policy applies: close it (1008), or drop its
//! oldest queued messages. Only the connection's own task writes to its
//! socket.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use dashmap::DashMap;
use futures_util::task::AtomicWaker;

use super::Outbound;
use crate::close;
use crate::config::SlowReader;
use crate::handler::{ConnId, Effect};
use crate::history::{Page, Position};

/// A queue that grew past this many slots is shrunk once drained, so a burst
/// does not pin its memory to an idle connection.
const SHRINK_ABOVE: usize = 64;

/// How a connection's outbound queue behaves.
#[derive(Clone, Copy, Debug)]
pub struct QueuePolicy {
    /// Most queued messages.
    pub capacity: usize,
    /// Most queued payload bytes. A message larger than this is still
    /// queued when the queue is empty, so any message within the route's
    /// size limit can be delivered.
    pub max_bytes: usize,
    /// What a full queue does.
    pub slow_reader: SlowReader,
}

#[derive(Default)]
struct MailboxState {
    queue: VecDeque<Outbound>,
    /// Payload bytes in `queue`.
    bytes: usize,
    close: Option<(u16, String)>,
    /// The messages queued before the close request go out first (a close
    /// that was asked for); a slow reader's close drops them.
    flush_first: bool,
}

/// One connection's outbound queue and close request: filled by anyone,
/// drained by the connection's task. Waking the task is lock-free: `ready`
/// says (without the lock) that there is something to take, and `waker`
/// holds the task's waker.
pub struct Mailbox {
    mail: Mutex<MailboxState>,
    ready: AtomicBool,
    waker: AtomicWaker,
    /// When the client last sent a message, in Unix milliseconds.
    last_active_ms: AtomicU64,
    policy: QueuePolicy,
}

impl Mailbox {
    fn new(policy: QueuePolicy) -> Self {
        Mailbox {
            mail: Mutex::new(MailboxState::default()),
            ready: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            last_active_ms: AtomicU64::new(crate::store::now_ms()),
            policy: QueuePolicy { capacity: policy.capacity.max(1), ..policy },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxState> {
        self.mail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records client activity now.
    pub fn touch(&self) {
        self.last_active_ms.store(crate::store::now_ms(), Ordering::Relaxed);
    }

    /// Asks the connection to close once the messages already queued have
    /// been written (none can be queued after it); the first request wins.
    pub fn request_close(&self, code: u16, reason: &str) {
        let mut mail = self.lock();
        if mail.close.is_none() {
            mail.close = Some((code, reason.to_string()));
            mail.flush_first = true;
            self.ready.store(true, Ordering::Release);
            drop(mail);
            self.waker.wake();
        }
    }

    /// Resolves once there is something to take: messages or a close
    /// request.
    pub fn ready(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.ready.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A push between the check and the registration found no waker.
            if self.ready.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
        })
    }

    /// The pending close request, if any.
    pub fn pending(&self) -> Option<(u16, String)> {
        self.lock().close.clone()
    }

    /// Queues a message, applying the slow-reader policy when full.
    fn push(&self, msg: Outbound) -> Delivery {
        let mut mail = self.lock();
        if mail.close.is_some() {
            return Delivery::Gone;
        }
        let was_empty = mail.queue.is_empty();
        let delivery = if self.fits(&mail, msg.len()) {
            Delivery::Queued
        } else {
            match self.policy.slow_reader {
                SlowReader::Close => {
                    mail.close = Some((close::POLICY, "outbound queue full".into()));
                    drop(mail);
                    self.waker.wake();
                    return Delivery::Overflow;
                }
                SlowReader::DropOldest => {
                    let mut dropped = 0;
                    while !self.fits(&mail, msg.len()) {
                        let Some(old) = mail.queue.pop_front() else { break };
                        mail.bytes -= old.len();
                        dropped += 1;
                    }
                    Delivery::DroppedOldest(dropped)
                }
            }
        };
        mail.bytes += msg.len();
        mail.queue.push_back(msg);
        self.ready.store(true, Ordering::Release);
        drop(mail);
        if was_empty {
            self.waker.wake();
        }
        delivery
    }

    /// Whether a message of `len` bytes fits beside what is queued.
    fn fits(&self, mail: &MailboxState, len: usize) -> bool {
        mail.queue.is_empty() || (mail.queue.len() < self.policy.capacity && mail.bytes + len <= self.policy.max_bytes)
    }

    /// The pending close request (once the messages queued before it have
    /// been taken, when it was asked for), or else up to `max` queued
    /// messages moved into `out`: one lock for the connection task's every
    /// turn.
    pub fn next(&self, out: &mut Vec<Outbound>, max: usize) -> Option<(u16, String)> {
        let mut mail = self.lock();
        if let Some(close) = &mail.close
            && (!mail.flush_first || mail.queue.is_empty())
        {
            return Some(close.clone());
        }
        self.drain(&mut mail, out, max);
        None
    }

    /// Moves up to `max` queued messages into `out`; how many.
    pub fn take(&self, out: &mut Vec<Outbound>, max: usize) -> usize {
        self.drain(&mut self.lock(), out, max)
    }

    fn drain(&self, mail: &mut MailboxState, out: &mut Vec<Outbound>, max: usize) -> usize {
        let n = mail.queue.len().min(max);
        for msg in mail.queue.drain(..n) {
            mail.bytes -= msg.len();
            out.push(msg);
        }
        if mail.queue.is_empty() {
            if mail.close.is_none() {
                self.ready.store(false, Ordering::Release);
            }
            if mail.queue.capacity() > SHRINK_ABOVE {
                mail.queue = VecDeque::new();
            }
        }
        n
    }
}

/// What became of a message sent to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the connection's task.
    Queued,
    /// Queued, and this many of the oldest queued messages were dropped to
    /// make room.
    DroppedOldest(u64),
    /// The connection's queue was full: it is being closed as a slow reader.
    Overflow,
    /// No such connection, or it is closing.
    Gone,
    /// The connection is on another host, which could not be reached (the
    /// store is unavailable).
    Unreachable,
}

/// The sending side of one connection.
type Outbox = Arc<Mailbox>;

struct Entry {
    outbox: Outbox,
    route: Arc<str>,
    channels: HashSet<String>,
}

/// The receiving side handed to a connection's task.
pub type Inbox = Arc<Mailbox>;

/// One member of a channel.
struct Member {
    outbox: Outbox,
    /// The last publication a replay delivered to it (epoch, offset): a
    /// live one at or before it is not delivered again.
    replayed: Option<(Arc<str>, u64)>,
}

/// Publications that reached a channel while a member's replay was being
/// read: (offset, epoch, message).
type Held = Vec<(u64, Arc<str>, Outbound)>;

/// Most publications held for one replaying member; past it the
/// connection is closed as a slow reader.
const MAX_HELD: usize = crate::history::MAX_SIZE;

/// All live connections of this host.
pub struct Registry {
    next_id: AtomicU64,
    dropped: prometheus::IntCounter,
    conns: DashMap<ConnId, Entry>,
    routes: DashMap<Arc<str>, HashMap<ConnId, Outbox>>,
    channels: DashMap<String, HashMap<ConnId, Member>>,
    /// Members whose replay is under way, by channel: what was published
    /// meanwhile. A channel's entry here is locked before its members.
    replaying: DashMap<String, HashMap<ConnId, Held>>,
}

impl Registry {
    /// An empty registry; `dropped` counts messages dropped by the
    /// drop-oldest policy.
    pub fn new(dropped: prometheus::IntCounter) -> Self {
        Registry {
            next_id: AtomicU64::new(1),
            dropped,
            conns: DashMap::new(),
            routes: DashMap::new(),
            channels: DashMap::new(),
            replaying: DashMap::new(),
        }
    }

    /// The same registry, handing out ids above `base` (a host's
    /// [`crate::conn_id::id_base`]).
    pub fn ids_after(self, base: ConnId) -> Self {
        self.next_id.store(base + 1, Ordering::Relaxed);
        self
    }

    /// Registers an opening connection: it can be sent to by id, but is not
    /// yet a member of its route.
    pub(crate) fn reserve(&self, route: Arc<str>, queue: QueuePolicy) -> (ConnId, Inbox) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::new(queue));
        self.conns.insert(id, Entry { outbox: mailbox.clone(), route, channels: HashSet::new() });
        (id, mailbox)
    }

    /// Makes an accepted connection a member of its route (for broadcast).
    pub(crate) fn activate(&self, id: ConnId) {
        if let Some(e) = self.conns.get(&id) {
            self.routes.entry(e.route.clone()).or_default().insert(id, e.outbox.clone());
        }
    }

    /// Forgets a connection everywhere; whether it was registered.
    pub fn remove(&self, id: ConnId) -> bool {
        let Some((_, entry)) = self.conns.remove(&id) else { return false };
        self.routes.remove_if_mut(&entry.route, |_, members| {
            members.remove(&id);
            members.is_empty()
        });
        for channel in &entry.channels {
            self.leave(id, channel);
        }
        true
    }

    /// Takes `id` out of `channel`'s members and replays.
    fn leave(&self, id: ConnId, channel: &str) {
        self.replaying.remove_if_mut(channel, |_, held| {
            held.remove(&id);
            held.is_empty()
        });
        self.channels.remove_if_mut(channel, |_, members| {
            members.remove(&id);
            members.is_empty()
        });
    }

    /// Queues a message for one connection.
    pub fn send(&self, id: ConnId, msg: Outbound) -> Delivery {
        let delivery = match self.conns.get(&id) {
            Some(e) => e.outbox.push(msg),
            None => Delivery::Gone,
        };
        if let Delivery::DroppedOldest(n) = delivery {
            self.dropped.inc_by(n);
        }
        delivery
    }

    /// Queues a message for every member of a route but `except`; how many.
    pub fn broadcast(&self, route: &str, msg: &Outbound, except: Option<ConnId>) -> usize {
        let Some(members) = self.routes.get(route) else { return 0 };
        self.fan_out(members.iter(), msg, except)
    }

    /// Adds a connection to a channel; whether the connection is registered.
    pub fn subscribe(&self, id: ConnId, channel: &str) -> bool {
        let Some(mut e) = self.conns.get_mut(&id) else { return false };
        if !e.channels.contains(channel) {
            e.channels.insert(channel.to_string());
            let member = Member { outbox: e.outbox.clone(), replayed: None };
            self.channels.entry(channel.to_string()).or_default().insert(id, member);
        }
        true
    }

    /// Starts a subscription that replays: from now until
    /// [`Registry::finish_replay`], publications to `channel` are held for
    /// `id` instead of delivered. Whether the connection is registered.
    pub fn begin_replay(&self, id: ConnId, channel: &str) -> bool {
        let Some(mut e) = self.conns.get_mut(&id) else { return false };
        e.channels.insert(channel.to_string());
        drop(e);
        let mut replaying = self.replaying.entry(channel.to_string()).or_default();
        replaying.insert(id, Vec::new());
        self.channels.remove_if_mut(channel, |_, members| {
            members.remove(&id);
            members.is_empty()
        });
        true
    }

    /// Ends a replay that `begin_replay` started: queues for `id` the
    /// publications of `page` after `since`, then those held meanwhile that
    /// `page` did not have, and makes it a member; none twice, none
    /// missing. Nothing when the connection left the channel meanwhile.
    pub fn finish_replay(&self, id: ConnId, channel: &str, since: Option<&Position>, page: &Page) {
        let Some(outbox) = self.conns.get(&id).map(|e| e.outbox.clone()) else { return };
        let Some(mut replaying) = self.replaying.get_mut(channel) else { return };
        let Some(held) = replaying.remove(&id) else { return };
        let mut epoch = page.latest.epoch.clone();
        let mut last = since.filter(|p| p.epoch == epoch).map_or(0, |p| p.offset);
        let queue = |msg: Outbound| {
            if let Delivery::DroppedOldest(n) = outbox.push(msg) {
                self.dropped.inc_by(n);
            }
        };
        for p in &page.publications {
            if p.offset > last {
                queue(p.msg.clone().into());
                last = p.offset;
            }
        }
        for (offset, held_epoch, msg) in held {
            if held_epoch == epoch && offset <= last {
                continue;
            }
            queue(msg);
            (epoch, last) = (held_epoch, offset);
        }
        let member = Member { outbox, replayed: Some((epoch, last)) };
        self.channels.entry(channel.to_string()).or_default().insert(id, member);
        if replaying.is_empty() {
            drop(replaying);
            self.replaying.remove_if(channel, |_, r| r.is_empty());
        }
    }

    /// Removes a connection from a channel.
    pub fn unsubscribe(&self, id: ConnId, channel: &str) {
        let Some(mut e) = self.conns.get_mut(&id) else { return };
        if !e.channels.remove(channel) {
            return;
        }
        drop(e);
        self.leave(id, channel);
    }

    /// Queues a message for every member of a channel; how many.
    pub fn publish(&self, channel: &str, msg: &Outbound) -> usize {
        let Some(members) = self.channels.get(channel) else { return 0 };
        self.fan_out(members.iter().map(|(id, m)| (id, &m.outbox)), msg, None)
    }

    /// Queues a publication of a channel that keeps history, at `pos`, for
    /// every member (but one whose replay already delivered it) and holds
    /// it for members whose replay is under way; how many took it. Calls
    /// for one channel must come in offset order.
    pub fn publish_at(&self, channel: &str, pos: &Position, msg: &Outbound) -> usize {
        let mut replaying = self.replaying.get_mut(channel);
        if let Some(replaying) = replaying.as_mut() {
            for (id, held) in replaying.iter_mut() {
                if held.len() >= MAX_HELD {
                    if let Some(e) = self.conns.get(id) {
                        e.outbox.request_close(close::POLICY, "outbound queue full");
                    }
                    continue;
                }
                held.push((pos.offset, pos.epoch.clone(), msg.clone()));
            }
        }
        let Some(members) = self.channels.get(channel) else { return 0 };
        let fresh = members.iter().filter(|(_, m)| match &m.replayed {
            Some((epoch, last)) => *epoch != pos.epoch || pos.offset > *last,
            None => true,
        });
        self.fan_out(fresh.map(|(id, m)| (id, &m.outbox)), msg, None)
    }

    /// Asks every accepted connection on a route to close; how many.
    pub fn close_route(&self, route: &str, code: u16, reason: &str) -> usize {
        let Some(members) = self.routes.get(route) else { return 0 };
        members.values().for_each(|outbox| outbox.request_close(code, reason));
        members.len()
    }

    /// When a connection's client last sent a message (Unix milliseconds).
    pub fn last_active_ms(&self, id: ConnId) -> Option<u64> {
        self.conns.get(&id).map(|e| e.outbox.last_active_ms.load(Ordering::Relaxed))
    }

    /// Asks a connection to close; whether it is registered.
    pub fn close(&self, id: ConnId, code: u16, reason: &str) -> bool {
        match self.conns.get(&id) {
            Some(e) => {
                e.outbox.request_close(code, reason);
                true
            }
            None => false,
        }
    }
}

impl Registry {
    /// Applies an effect to this host's connections: the one place an
    /// effect reaches mailboxes, whether a handler on this host asked for it
    /// or another host sent it. For an effect on one connection, whether
    /// that connection is here.
    pub fn apply(&self, effect: Effect) -> bool {
        match effect {
            Effect::Emit { to, msg } => self.send(to, msg.into()) != Delivery::Gone,
            Effect::Broadcast { route, msg, except } => {
                self.broadcast(&route, &msg.into(), except);
                true
            }
            Effect::Publish { channel, msg } => {
                self.publish(&channel, &msg.into());
                true
            }
            Effect::Subscribe { conn, channel } => self.subscribe(conn, &channel),
            Effect::Resume { conn, channel, since, page } => {
                self.finish_replay(conn, &channel, since.as_ref(), &page);
                self.conns.contains_key(&conn)
            }
            Effect::Unsubscribe { conn, channel } => {
                self.unsubscribe(conn, &channel);
                true
            }
            Effect::Close { conn, code, reason } => self.close(conn, code, &reason),
            // Taken by the route's pipeline; nothing to deliver.
            Effect::Forward { conn, .. } => self.conns.contains_key(&conn),
        }
    }

    /// Queues `msg` for every member but `except`; how many took it.
    fn fan_out<'m>(
        &self,
        members: impl Iterator<Item = (&'m ConnId, &'m Outbox)>,
        msg: &Outbound,
        except: Option<ConnId>,
    ) -> usize {
        let (mut queued, mut dropped) = (0, 0);
        for (id, outbox) in members {
            if Some(*id) == except {
                continue;
            }
            match outbox.push(msg.clone()) {
                Delivery::Queued => queued += 1,
                Delivery::DroppedOldest(n) => {
                    queued += 1;
                    dropped += n;
                }
                Delivery::Overflow | Delivery::Gone | Delivery::Unreachable => {}
            }
        }
        self.dropped.inc_by(dropped);
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Outbound {
        Outbound::text(s)
    }

    fn msg(s: &str) -> crate::handler::Message {
        crate::handler::Message::Text(s.into())
    }

    fn registry() -> Registry {
        Registry::new(prometheus::IntCounter::new("dropped", "dropped").unwrap())
    }

    fn queue(capacity: usize, slow_reader: SlowReader) -> QueuePolicy {
        QueuePolicy { capacity, max_bytes: usize::MAX, slow_reader }
    }

    fn drain(inbox: &Inbox) -> Vec<Outbound> {
        let mut out = Vec::new();
        inbox.take(&mut out, usize::MAX);
        out
    }

    #[test]
    fn broadcast_reaches_active_members_only() {
        let r = registry();
        let q = queue(8, SlowReader::Close);
        let (a, ia) = r.reserve("/r".into(), q);
        let (b, ib) = r.reserve("/r".into(), q);
        let (_c, ic) = r.reserve("/r".into(), q);
        r.activate(a);
        r.activate(b);
        assert_eq!(r.broadcast("/r", &text("x"), Some(a)), 1);
        assert!(drain(&ia).is_empty());
        assert_eq!(drain(&ib), [text("x")]);
        assert!(drain(&ic).is_empty(), "not yet accepted");
    }

    fn pos(offset: u64, epoch: &str) -> Position {
        Position { offset, epoch: epoch.into() }
    }

    fn page(epoch: &str, offsets: std::ops::RangeInclusive<u64>, latest: u64) -> Page {
        Page {
            publications: offsets
                .map(|o| crate::history::Publication { offset: o, msg: msg(&format!("p{o}")) })
                .collect(),
            latest: pos(latest, epoch),
            recovered: true,
        }
    }

    #[test]
    fn a_replay_delivers_what_was_missed_then_what_came_meanwhile_none_twice() {
        let r = registry();
        let (a, ia) = r.reserve("/r".into(), queue(64, SlowReader::Close));
        let (b, ib) = r.reserve("/r".into(), queue(64, SlowReader::Close));
        r.subscribe(b, "room");
        assert!(r.begin_replay(a, "room"));
        // While a's history is read (it reaches offset 5), 5 arrives late
        // (another host's publication, already in what was read), then 6.
        assert_eq!(r.publish_at("room", &pos(5, "e"), &text("p5")), 1, "b gets it; a's is held");
        assert_eq!(r.publish_at("room", &pos(6, "e"), &text("p6")), 1);
        assert_eq!(drain(&ia), [], "nothing for a until its replay is applied");
        r.finish_replay(a, "room", Some(&pos(2, "e")), &page("e", 3..=5, 5));
        assert_eq!(drain(&ia), [text("p3"), text("p4"), text("p5"), text("p6")], "in order, 5 once");
        // A publication the replay already gave is not delivered again (a
        // late copy from the Redis stream); a later one is.
        assert_eq!(r.publish_at("room", &pos(6, "e"), &text("p6")), 1, "only b");
        assert_eq!(r.publish_at("room", &pos(7, "e"), &text("p7")), 2);
        assert_eq!(drain(&ia), [text("p7")]);
        // A new epoch (history lost) starts over at 1: delivered.
        assert_eq!(r.publish_at("room", &pos(1, "f"), &text("f1")), 2);
        assert_eq!(drain(&ia), [text("f1")]);
        assert_eq!(drain(&ib), [text("p5"), text("p6"), text("p6"), text("p7"), text("f1")]);
    }

    #[test]
    fn a_replay_from_another_epoch_or_a_left_channel_delivers_no_old_offsets() {
        let r = registry();
        let (a, ia) = r.reserve("/r".into(), queue(64, SlowReader::Close));
        r.subscribe(a, "room");
        assert!(r.begin_replay(a, "room"), "a member that resumes replays instead");
        assert_eq!(r.publish("room", &text("plain")), 0, "it is not a live member meanwhile");
        r.finish_replay(a, "room", Some(&pos(9, "old")), &page("new", 1..=2, 2));
        assert_eq!(drain(&ia), [text("p1"), text("p2")], "another epoch: what is kept, from the start");
        assert_eq!(r.publish("room", &text("plain")), 1);
        drain(&ia);
        // Left (unsubscribed) before its replay was applied: nothing.
        assert!(r.begin_replay(a, "hall"));
        r.unsubscribe(a, "hall");
        r.finish_replay(a, "hall", None, &page("e", 1..=1, 1));
        assert_eq!(drain(&ia), []);
        assert_eq!(r.publish_at("hall", &pos(2, "e"), &text("x")), 0);
        assert!(r.remove(a));
        assert!(r.channels.is_empty() && r.replaying.is_empty());
        assert!(!r.begin_replay(a, "room"), "a connection that is gone");
    }

    #[test]
    fn channels_and_removal() {
        let r = registry();
        let (a, ia) = r.reserve("/r".into(), queue(8, SlowReader::Close));
        assert!(r.subscribe(a, "room"));
        assert!(r.subscribe(a, "room"), "idempotent");
        assert_eq!(r.publish("room", &text("m")), 1);
        assert_eq!(drain(&ia), [text("m")], "delivered once");
        assert!(r.remove(a));
        assert!(!r.remove(a));
        assert_eq!(r.publish("room", &text("m")), 0);
        assert!(r.channels.is_empty() && r.conns.is_empty());
        assert!(!r.subscribe(a, "room"));
    }

    #[test]
    fn full_queue_requests_policy_close() {
        let r = registry();
        let (a, inbox) = r.reserve("/r".into(), queue(1, SlowReader::Close));
        assert_eq!(r.send(a, text("1")), Delivery::Queued);
        assert_eq!(r.send(a, text("2")), Delivery::Overflow);
        assert_eq!(r.send(999, text("3")), Delivery::Gone);
        assert_eq!(inbox.pending(), Some((close::POLICY, "outbound queue full".into())));
        r.close(a, 1000, "later");
        assert_eq!(inbox.pending().unwrap().0, close::POLICY, "first request wins");
        assert_eq!(r.send(a, text("4")), Delivery::Gone, "a closing connection takes nothing more");
    }

    #[test]
    fn an_asked_close_comes_after_what_was_queued_before_it() {
        let r = registry();
        let (a, inbox) = r.reserve("/r".into(), queue(8, SlowReader::Close));
        r.send(a, text("bye"));
        r.send(a, text("for now"));
        r.close(a, 4000, "done");
        assert_eq!(r.send(a, text("late")), Delivery::Gone, "nothing is queued after the close");
        let mut out = Vec::new();
        assert_eq!(inbox.next(&mut out, 1), None, "the queued messages first");
        assert_eq!(inbox.next(&mut out, 8), None);
        assert_eq!(out, [text("bye"), text("for now")]);
        assert_eq!(inbox.next(&mut out, 8), Some((4000, "done".into())));

        // A slow reader's close does not wait for the queue it overfilled.
        let (b, inbox) = r.reserve("/r".into(), queue(1, SlowReader::Close));
        r.send(b, text("1"));
        r.send(b, text("2"));
        assert_eq!(inbox.next(&mut Vec::new(), 8), Some((close::POLICY, "outbound queue full".into())));
    }

    #[test]
    fn full_queue_drops_oldest_when_configured() {
        let r = registry();
        let (a, inbox) = r.reserve("/r".into(), queue(2, SlowReader::DropOldest));
        r.activate(a);
        assert_eq!(r.send(a, text("1")), Delivery::Queued);
        assert_eq!(r.send(a, text("2")), Delivery::Queued);
        assert_eq!(r.send(a, text("3")), Delivery::DroppedOldest(1));
        assert_eq!(r.broadcast("/r", &text("4"), None), 1);
        assert_eq!(inbox.pending(), None, "not closed");
        assert_eq!(drain(&inbox), [text("3"), text("4")]);
        assert_eq!(r.dropped.get(), 2);
    }

    #[test]
    fn a_queue_is_bounded_in_bytes_too() {
        let r = registry();
        let policy = QueuePolicy { capacity: 100, max_bytes: 10, slow_reader: SlowReader::Close };
        let (a, inbox) = r.reserve("/r".into(), policy);
        assert_eq!(r.send(a, text("12345")), Delivery::Queued);
        assert_eq!(r.send(a, text("67890")), Delivery::Queued, "10 of 10 bytes");
        let mut out = Vec::new();
        inbox.take(&mut out, 1);
        assert_eq!(r.send(a, text("abcde")), Delivery::Queued, "taking one gave its bytes back");
        assert_eq!(r.send(a, text("x")), Delivery::Overflow, "11 bytes");
        assert_eq!(inbox.pending(), Some((close::POLICY, "outbound queue full".into())));

        let (b, inbox) = r.reserve("/r".into(), policy);
        assert_eq!(r.send(b, text(&"L".repeat(50))), Delivery::Queued, "an empty queue takes a larger message");
        inbox.take(&mut out, usize::MAX);
        for m in ["1234", "5678", "90"] {
            assert_eq!(r.send(b, text(m)), Delivery::Queued);
        }
        let policy = QueuePolicy { slow_reader: SlowReader::DropOldest, ..policy };
        let (c, inbox_c) = r.reserve("/r".into(), policy);
        for m in ["1234", "5678", "90"] {
            r.send(c, text(m));
        }
        assert_eq!(r.send(c, text("abcdefgh")), Delivery::DroppedOldest(2), "dropped until 8 bytes fit");
        assert_eq!(drain(&inbox_c), [text("90"), text("abcdefgh")]);
        assert_eq!(r.dropped.get(), 2);
        assert_eq!(inbox.pending(), None);
    }

    #[test]
    fn drained_queue_gives_back_its_memory() {
        let r = registry();
        let (a, inbox) = r.reserve("/r".into(), queue(1000, SlowReader::Close));
        for i in 0..500 {
            r.send(a, text(&i.to_string()));
        }
        let mut out = Vec::new();
        assert_eq!(inbox.take(&mut out, 100), 100);
        assert_eq!(inbox.take(&mut out, 1000), 400);
        assert_eq!(inbox.lock().queue.capacity(), 0);
    }

    /// Two accepted members of route `/r`.
    fn two_members(r: &Registry) -> ((ConnId, Inbox), (ConnId, Inbox)) {
        let q = queue(8, SlowReader::Close);
        let (a, b) = (r.reserve("/r".into(), q), r.reserve("/r".into(), q));
        r.activate(a.0);
        r.activate(b.0);
        (a, b)
    }

    #[test]
    fn effects_reach_the_mailboxes_they_name() {
        let r = registry();
        let ((a, ia), (b, ib)) = two_members(&r);
        assert!(r.apply(Effect::Emit { to: a, msg: msg("to a") }));
        assert!(!r.apply(Effect::Emit { to: 999, msg: msg("nobody") }), "no such connection here");
        assert!(r.apply(Effect::Broadcast { route: "/r".into(), msg: msg("all but b"), except: Some(b) }));
        assert!(r.apply(Effect::Subscribe { conn: b, channel: "room".into() }));
        assert!(!r.apply(Effect::Subscribe { conn: 999, channel: "room".into() }));
        assert!(r.apply(Effect::Publish { channel: "room".into(), msg: msg("room") }));
        assert!(r.apply(Effect::Unsubscribe { conn: b, channel: "room".into() }));
        assert!(r.apply(Effect::Publish { channel: "room".into(), msg: msg("after leaving") }));
        assert_eq!(drain(&ia), [text("to a"), text("all but b")]);
        assert_eq!(drain(&ib), [text("room")]);
        assert!(r.apply(Effect::Close { conn: a, code: 4000, reason: "bye".into() }));
        assert_eq!(ia.pending(), Some((4000, "bye".into())));
        assert!(!r.apply(Effect::Close { conn: 999, code: 4000, reason: String::new() }));
        assert_eq!(ib.pending(), None);
    }

    #[test]
    fn a_broadcast_shares_one_payload() {
        let r = registry();
        let ((_, ia), (_, ib)) = two_members(&r);
        r.apply(Effect::Broadcast { route: "/r".into(), msg: msg("shared"), except: None });
        let (ga, gb) = (drain(&ia), drain(&ib));
        assert_eq!(ga[0].payload().as_ptr(), gb[0].payload().as_ptr(), "encoded once");
    }
}
