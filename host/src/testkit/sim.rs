//! Simulated connections: clients that go through the same registry,
//! dispatch, runtime and store as sockets do, without a socket.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::app::App;
use crate::events::{Message, OpenRequest};
use crate::server::{Dispatch, Inbox, QueuePolicy};

/// One simulated client.
struct Client<R> {
    id: u64,
    route: R,
    inbox: Inbox,
    received: VecDeque<Received>,
    open: bool,
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

/// Named simulated clients of one application.
pub struct Sim {
    app: Arc<App>,
    clients: HashMap<String, Client<<crate::app::DispatchHandle as Dispatch>::Route>>,
}

fn from_ws(msg: WsMessage) -> Option<Received> {
    match msg {
        WsMessage::Text(t) => Some(Received::Data(Message::Text(t.as_str().to_owned()))),
        WsMessage::Binary(b) => Some(Received::Data(Message::Binary(b.to_vec()))),
        _ => None,
    }
}

impl Sim {
    /// Clients of `app`, none open yet.
    pub fn new(app: Arc<App>) -> Self {
        Sim { app, clients: HashMap::new() }
    }

    /// Opens a connection for `name`: `Ok(None)` accepted, `Ok(Some(status))`
    /// rejected, `Err` when the handler failed.
    pub async fn open(
        &mut self,
        name: &str,
        path: &str,
        query: &str,
        headers: &[(String, String)],
        subprotocols: &[String],
    ) -> Result<Option<u16>, String> {
        if self.clients.get(name).is_some_and(|c| c.open) {
            return Err(format!("client `{name}` is already open"));
        }
        let dispatch = self.app.dispatcher();
        let Some((key, route)) = dispatch.route(path) else { return Err(format!("no route at {path}")) };
        let registry = self.app.registry().clone();
        let policy = <crate::app::DispatchHandle as Dispatch>::policy(&route);
        let queue = QueuePolicy { capacity: policy.outbound_queue, slow_reader: policy.slow_reader };
        let (id, inbox) = registry.reserve(key, queue);
        let req = OpenRequest {
            path: path.to_string(),
            query: query.to_string(),
            headers: headers.to_vec(),
            subprotocols: subprotocols.to_vec(),
            remote_addr: "127.0.0.1:0".into(),
        };
        match dispatch.open(&route, id, req).await {
            Ok(Ok(accept)) => {
                let policy = <crate::app::DispatchHandle as Dispatch>::policy(&route);
                if let Err(why) = policy.negotiate(subprotocols, accept.subprotocol.as_deref()) {
                    registry.remove(id);
                    dispatch.close(&route, id, 1011, "handler error").await;
                    return Err(format!("on-open: {why}"));
                }
                registry.activate(id);
                self.clients
                    .insert(name.to_string(), Client { id, route, inbox, received: VecDeque::new(), open: true });
                self.settle().await;
                Ok(None)
            }
            Ok(Err(reject)) => {
                registry.remove(id);
                Ok(Some(reject.status))
            }
            Err(failure) => {
                registry.remove(id);
                Err(format!("on-open failed: {failure}"))
            }
        }
    }

    /// Sends a message from `name`; the direct reply and queued messages land
    /// in the clients' received lists.
    pub async fn send(&mut self, name: &str, msg: Message) -> Result<(), String> {
        let dispatch = self.app.dispatcher();
        let client = self.open_client(name)?;
        let outcome = dispatch.message(&client.route, client.id, msg).await;
        match outcome {
            Ok(reply) => {
                self.settle().await;
                if let Some(reply) = reply {
                    self.clients.get_mut(name).expect("client exists").received.push_back(Received::Data(reply));
                }
                Ok(())
            }
            Err(failure) => {
                self.end(name, 1011, "handler error").await;
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
        if !client.open {
            return None;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            if client.inbox.take(&mut out, 1) > 0 {
                return out.pop().and_then(from_ws);
            }
            if client.inbox.pending().is_some() {
                // Closing: `settle` reports it.
                return None;
            }
            if tokio::time::timeout_at(deadline, client.inbox.ready()).await.is_err() {
                return None;
            }
        }
    }

    /// Closes `name`'s connection from the client side.
    pub async fn close(&mut self, name: &str, code: u16) -> Result<(), String> {
        self.open_client(name)?;
        self.end(name, code, "").await;
        Ok(())
    }

    /// Closes every open client with 1000.
    pub async fn close_all(&mut self) {
        let names: Vec<String> = self.clients.iter().filter(|(_, c)| c.open).map(|(n, _)| n.clone()).collect();
        for name in names {
            self.end(&name, 1000, "").await;
        }
    }

    /// The connection id of `name`.
    pub fn id(&self, name: &str) -> Option<u64> {
        self.clients.get(name).map(|c| c.id)
    }

    fn open_client(
        &mut self,
        name: &str,
    ) -> Result<&mut Client<<crate::app::DispatchHandle as Dispatch>::Route>, String> {
        match self.clients.get_mut(name) {
            Some(c) if c.open => Ok(c),
            Some(_) => Err(format!("client `{name}` is closed")),
            None => Err(format!("client `{name}` never opened")),
        }
    }

    /// Moves queued messages into received lists and carries out close
    /// requests (a handler's `close`, a full queue), as connection tasks do.
    async fn settle(&mut self) {
        let mut closing = Vec::new();
        for (name, client) in self.clients.iter_mut().filter(|(_, c)| c.open) {
            let mut queued = Vec::new();
            client.inbox.take(&mut queued, usize::MAX);
            client.received.extend(queued.into_iter().filter_map(from_ws));
            if let Some((code, reason)) = client.inbox.pending() {
                client.received.push_back(Received::Closed(code));
                closing.push((name.clone(), code, reason));
            }
        }
        for (name, code, reason) in closing {
            Box::pin(self.end(&name, code, &reason)).await;
        }
    }

    /// Ends a connection once: out of the registry, then on-close.
    async fn end(&mut self, name: &str, code: u16, reason: &str) {
        let dispatch = self.app.dispatcher();
        let Some(client) = self.clients.get_mut(name).filter(|c| c.open) else { return };
        client.open = false;
        let (id, registry) = (client.id, self.app.registry().clone());
        registry.remove(id);
        let client = &self.clients[name];
        dispatch.close(&client.route, id, code, reason).await;
        Box::pin(self.settle()).await;
    }
}
