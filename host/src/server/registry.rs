//! The registry of live connections on this host: each one's outbound queue
//! and close signal, route membership and channel membership.
//!
//! Delivery never waits: a message goes into the recipient's bounded queue,
//! and a recipient whose queue is full is a slow reader and is told to close
//! (1008). Only the connection's own task writes to its socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::events::ConnId;

/// Close code for a connection whose outbound queue overflowed.
pub const CLOSE_POLICY: u16 = 1008;

/// A request to close, read by the connection's task.
#[derive(Default)]
pub(crate) struct Control {
    close: Mutex<Option<(u16, String)>>,
    pub notify: Notify,
    /// When the client last sent a message, in Unix milliseconds.
    last_active_ms: AtomicU64,
}

impl Control {
    /// Records client activity now.
    pub fn touch(&self) {
        self.last_active_ms.store(crate::store::now_ms(), Ordering::Relaxed);
    }

    /// Asks the connection to close; the first request wins.
    pub fn request_close(&self, code: u16, reason: &str) {
        let mut slot = self.close.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some((code, reason.to_string()));
            self.notify.notify_one();
        }
    }

    /// The pending close request, if any.
    pub fn pending(&self) -> Option<(u16, String)> {
        self.close.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What became of a message sent to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the connection's task.
    Queued,
    /// The connection's queue was full: it is being closed as a slow reader.
    Overflow,
    /// No such connection.
    Gone,
}

/// The sending side of one connection.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<WsMessage>,
    control: Arc<Control>,
}

impl Outbox {
    /// Queues a message; a full queue closes the connection as too slow.
    fn send(&self, msg: WsMessage) -> Delivery {
        match self.tx.try_send(msg) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.control.request_close(CLOSE_POLICY, "outbound queue full");
                Delivery::Overflow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }
}

struct Entry {
    outbox: Outbox,
    route: Arc<str>,
    channels: Vec<String>,
}

/// The receiving side handed to a connection's task.
pub(crate) struct Inbox {
    pub rx: mpsc::Receiver<WsMessage>,
    pub control: Arc<Control>,
}

/// All live connections of this host.
pub struct Registry {
    next_id: AtomicU64,
    queue: usize,
    conns: DashMap<ConnId, Entry>,
    routes: DashMap<Arc<str>, HashMap<ConnId, Outbox>>,
    channels: DashMap<String, HashMap<ConnId, Outbox>>,
}

impl Registry {
    /// An empty registry whose connections queue at most `queue` messages.
    pub fn new(queue: usize) -> Self {
        Registry {
            next_id: AtomicU64::new(1),
            queue: queue.max(1),
            conns: DashMap::new(),
            routes: DashMap::new(),
            channels: DashMap::new(),
        }
    }

    /// Registers an opening connection: it can be sent to by id, but is not
    /// yet a member of its route.
    pub(crate) fn reserve(&self, route: Arc<str>) -> (ConnId, Inbox) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.queue);
        let control = Arc::new(Control::default());
        control.touch();
        let outbox = Outbox { tx, control: control.clone() };
        self.conns.insert(id, Entry { outbox, route, channels: Vec::new() });
        (id, Inbox { rx, control })
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
            self.channels.remove_if_mut(channel, |_, members| {
                members.remove(&id);
                members.is_empty()
            });
        }
        true
    }

    /// Queues a message for one connection.
    pub fn send(&self, id: ConnId, msg: WsMessage) -> Delivery {
        match self.conns.get(&id) {
            Some(e) => e.outbox.send(msg),
            None => Delivery::Gone,
        }
    }

    /// Queues a message for every member of a route but `except`; how many.
    pub fn broadcast(&self, route: &str, msg: &WsMessage, except: Option<ConnId>) -> usize {
        let Some(members) = self.routes.get(route) else { return 0 };
        fan_out(&members, msg, except)
    }

    /// Adds a connection to a channel; whether the connection is registered.
    pub fn subscribe(&self, id: ConnId, channel: &str) -> bool {
        let Some(mut e) = self.conns.get_mut(&id) else { return false };
        if !e.channels.iter().any(|c| c == channel) {
            e.channels.push(channel.to_string());
            self.channels.entry(channel.to_string()).or_default().insert(id, e.outbox.clone());
        }
        true
    }

    /// Removes a connection from a channel.
    pub fn unsubscribe(&self, id: ConnId, channel: &str) {
        let Some(mut e) = self.conns.get_mut(&id) else { return };
        e.channels.retain(|c| c != channel);
        self.channels.remove_if_mut(channel, |_, members| {
            members.remove(&id);
            members.is_empty()
        });
    }

    /// Queues a message for every member of a channel; how many.
    pub fn publish(&self, channel: &str, msg: &WsMessage) -> usize {
        let Some(members) = self.channels.get(channel) else { return 0 };
        fan_out(&members, msg, None)
    }

    /// Asks every accepted connection on a route to close; how many.
    pub fn close_route(&self, route: &str, code: u16, reason: &str) -> usize {
        let Some(members) = self.routes.get(route) else { return 0 };
        members.values().for_each(|outbox| outbox.control.request_close(code, reason));
        members.len()
    }

    /// When a connection's client last sent a message (Unix milliseconds).
    pub fn last_active_ms(&self, id: ConnId) -> Option<u64> {
        self.conns.get(&id).map(|e| e.outbox.control.last_active_ms.load(Ordering::Relaxed))
    }

    /// Asks a connection to close; whether it is registered.
    pub fn close(&self, id: ConnId, code: u16, reason: &str) -> bool {
        match self.conns.get(&id) {
            Some(e) => {
                e.outbox.control.request_close(code, reason);
                true
            }
            None => false,
        }
    }
}

fn fan_out(members: &HashMap<ConnId, Outbox>, msg: &WsMessage, except: Option<ConnId>) -> usize {
    members
        .iter()
        .filter(|(id, _)| Some(**id) != except)
        .filter(|(_, outbox)| outbox.send(msg.clone()) == Delivery::Queued)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> WsMessage {
        WsMessage::text(s)
    }

    #[test]
    fn broadcast_reaches_active_members_only() {
        let r = Registry::new(8);
        let (a, mut ia) = r.reserve("/r".into());
        let (b, mut ib) = r.reserve("/r".into());
        let (_c, mut ic) = r.reserve("/r".into());
        r.activate(a);
        r.activate(b);
        assert_eq!(r.broadcast("/r", &text("x"), Some(a)), 1);
        assert!(ia.rx.try_recv().is_err());
        assert_eq!(ib.rx.try_recv().unwrap(), text("x"));
        assert!(ic.rx.try_recv().is_err(), "not yet accepted");
    }

    #[test]
    fn channels_and_removal() {
        let r = Registry::new(8);
        let (a, mut ia) = r.reserve("/r".into());
        assert!(r.subscribe(a, "room"));
        assert!(r.subscribe(a, "room"), "idempotent");
        assert_eq!(r.publish("room", &text("m")), 1);
        assert_eq!(ia.rx.try_recv().unwrap(), text("m"));
        assert!(ia.rx.try_recv().is_err(), "delivered once");
        assert!(r.remove(a));
        assert!(!r.remove(a));
        assert_eq!(r.publish("room", &text("m")), 0);
        assert!(r.channels.is_empty() && r.conns.is_empty());
        assert!(!r.subscribe(a, "room"));
    }

    #[test]
    fn full_queue_requests_policy_close() {
        let r = Registry::new(1);
        let (a, inbox) = r.reserve("/r".into());
        assert_eq!(r.send(a, text("1")), Delivery::Queued);
        assert_eq!(r.send(a, text("2")), Delivery::Overflow);
        assert_eq!(r.send(999, text("3")), Delivery::Gone);
        assert_eq!(inbox.control.pending(), Some((CLOSE_POLICY, "outbound queue full".into())));
        r.close(a, 1000, "later");
        assert_eq!(inbox.control.pending().unwrap().0, CLOSE_POLICY, "first request wins");
    }
}
