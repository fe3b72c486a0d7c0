//! `broadcast`: the Lolo iFaaS WebSocket example.
//!
//! On open, the connection is told its id as
//! `{"connected":true,"yourConnectionId":"<id>"}`; every message it sends then
//! goes to every other connection on the route as `<id> says: <message>`.
//!
//! Run it with `make run`, then `wscat -c ws://127.0.0.1:8080/broadcast` in
//! two terminals.

use wharf_guest::{Accept, Connection, Handler, Message, Reject, Request, channels, export_handler};

struct Broadcast;

impl Handler for Broadcast {
    fn on_open(conn: Connection, _req: Request) -> Result<Accept, Reject> {
        let hello = format!("{{\"connected\":true,\"yourConnectionId\":\"{conn}\"}}");
        conn.send(hello).map_err(|e| Reject::new(503, e.to_string()))?;
        Ok(Accept::default())
    }

    fn on_message(conn: Connection, msg: Message) -> Option<Message> {
        let out = match msg {
            Message::Text(t) => Message::Text(format!("{conn} says: {t}")),
            Message::Binary(b) => {
                let mut out = format!("{conn} says: ").into_bytes();
                out.extend_from_slice(&b);
                Message::Binary(out)
            }
        };
        if let Err(e) = channels::broadcast(out, Some(conn)) {
            return Some(Message::text(format!("not sent: {e}")));
        }
        None
    }
}

export_handler!(Broadcast);
