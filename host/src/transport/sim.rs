//! Simulated clients for the conformance kit: they open, send and close
//! through the hub's admission and lifecycle exactly as sockets do, and
//! take what their mailboxes hold instead of reading a socket.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::close;
use crate::handler::{Message, OpenRequest};
use crate::hub::{Connection, Hub, Outbound};

/// The address simulated clients connect from.
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One simulated client.
struct Client {
    /// `None` once closed.
    conn: Option<Connection>,
    id: u64,
    received: VecDeque<Received>,
}

/// What a simulated client got.
#[derive(Clone, Debug, PartialEq)]
pub enum Received {
    /// A data message.
    Data(Message),
    /// The host closed the connection with this code.
    Closed(u16),
}

impl std::fmt::Display for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Received::Data(Message::Text(t)) => write!(f, "text {t:?}"),
            Received::Data(Message::Binary(b)) => write!(f, "binary {} bytes", b.len()),
            Received::Closed(code) => write!(f, "close {code}"),
        }
    }
}

fn received(out: Outbound) -> Received {
    Received::Data(out.to_message())
}

/// Named simulated clients of one hub.
pub struct Sim {
    hub: Arc<Hub>,
    clients: HashMap<String, Client>,
}

impl Sim {
    /// Clients of `hub`, none open yet.
    pub fn new(hub: Arc<Hub>) -> Self {
        Sim { hub, clients: HashMap::new() }
    }

    /// Opens a connection for `name`: `Ok(None)` accepted, `Ok(Some(status))`
    /// refused with that HTTP status (by the handler or by admission),
    /// `Err` when the handler failed.
    pub async fn open(
        &mut self,
        name: &str,
        path: &str,
        query: &str,
        headers: &[(String, String)],
        subprotocols: &[String],
    ) -> Result<Option<u16>, String> {
        if self.clients.get(name).is_some_and(|c| c.conn.is_some()) {
            return Err(format!("client `{name}` is already open"));
        }
        let Some(route) = self.hub.route(path) else { return Err(format!("no route at {path}")) };
        let origin = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("origin")).map(|(_, v)| v.as_str());
        let mut req = OpenRequest {
            path: path.to_string(),
            query: query.to_string(),
            headers: headers.to_vec(),
            subprotocols: subprotocols.to_vec(),
            remote_addr: format!("{PEER}:0"),
        };
        let admission = match self.hub.admit(&route, PEER, origin, &mut req) {
            Ok(a) => a,
            Err(refused) => return Ok(Some(refused.status)),
        };
        match self.hub.open(route, admission, req).await {
            Ok(opened) => {
                let id = opened.conn.id();
                self.clients
                    .insert(name.to_string(), Client { conn: Some(opened.conn), id, received: VecDeque::new() });
                self.settle().await;
                Ok(None)
            }
            Err(refused) => match refused.failure {
                Some(failure) => Err(failure),
                None => Ok(Some(refused.status)),
            },
        }
    }

    /// Sends a message from `name`; the direct reply and queued messages land
    /// in the clients' received lists.
    pub async fn send(&mut self, name: &str, msg: Message) -> Result<(), String> {
        let outcome = self.open_conn(name)?.message(msg).await;
        match outcome {
            Ok(reply) => {
                self.settle().await;
                if let Some(reply) = reply {
                    self.clients.get_mut(name).expect("client exists").received.push_back(Received::Data(reply));
                }
                Ok(())
            }
            Err(failure) => {
                self.end(name, close::HANDLER_ERROR, close::HANDLER_ERROR_REASON).await;
                Err(format!("on-message failed: {failure}"))
            }
        }
    }

    /// The next thing `name` received, waiting up to `wait`.
    pub async fn next(&mut self, name: &str, wait: Duration) -> Option<Received> {
        self.settle().await;
        let client = self.clients.get_mut(name)?;
        if let Some(r) = client.received.pop_front() {
            return Some(r);
        }
        let conn = client.conn.as_ref()?;
        let mailbox = conn.mailbox();
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            if mailbox.take(&mut out, 1) > 0 {
                return out.pop().map(received);
            }
            if mailbox.pending().is_some() {
                // Closing: `settle` reports it.
                return None;
            }
            if tokio::time::timeout_at(deadline, mailbox.ready()).await.is_err() {
                return None;
            }
        }
    }

    /// Closes `name`'s connection from the client side.
    pub async fn close(&mut self, name: &str, code: u16) -> Result<(), String> {
        self.open_conn(name)?;
        self.end(name, code, "").await;
        Ok(())
    }

    /// Closes every open client with 1000.
    pub async fn close_all(&mut self) {
        let names: Vec<String> =
            self.clients.iter().filter(|(_, c)| c.conn.is_some()).map(|(n, _)| n.clone()).collect();
        for name in names {
            self.end(&name, close::NORMAL, "").await;
        }
    }

    /// The connection id of `name`.
    pub fn id(&self, name: &str) -> Option<u64> {
        self.clients.get(name).map(|c| c.id)
    }

    fn open_conn(&self, name: &str) -> Result<&Connection, String> {
        match self.clients.get(name) {
            Some(Client { conn: Some(c), .. }) => Ok(c),
            Some(_) => Err(format!("client `{name}` is closed")),
            None => Err(format!("client `{name}` never opened")),
        }
    }

    /// Moves queued messages into received lists and carries out close
    /// requests (a handler's `close`, a full queue), as connection tasks do.
    async fn settle(&mut self) {
        let mut closing = Vec::new();
        for (name, client) in &mut self.clients {
            let Some(conn) = &client.conn else { continue };
            let mut queued = Vec::new();
            conn.mailbox().take(&mut queued, usize::MAX);
            client.received.extend(queued.into_iter().map(received));
            if let Some((code, reason)) = conn.mailbox().pending() {
                client.received.push_back(Received::Closed(code));
                closing.push((name.clone(), code, reason));
            }
        }
        for (name, code, reason) in closing {
            Box::pin(self.end(&name, code, &reason)).await;
        }
    }

    /// Ends a connection once: the hub's close, then what it caused.
    async fn end(&mut self, name: &str, code: u16, reason: &str) {
        let Some(conn) = self.clients.get_mut(name).and_then(|c| c.conn.take()) else { return };
        conn.close(code, reason).await;
        Box::pin(self.settle()).await;
    }
}
