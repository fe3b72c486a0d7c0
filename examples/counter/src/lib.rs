//! `counter`: every message atomically increments key `hits` in the plugin's
//! key/value namespace and replies with the new value as text. With the
//! embedded store (the default) the count survives a restart of the host.
//!
//! Run it with `make run`, then `wscat -c ws://127.0.0.1:8080/counter` and
//! send anything.

use wharf_guest::{Connection, Handler, Message, export_handler, kv};

struct Counter;

impl Handler for Counter {
    fn on_message(_conn: Connection, _msg: Message) -> Option<Message> {
        Some(match kv::increment("hits", 1) {
            Ok(n) => Message::text(n.to_string()),
            Err(e) => Message::text(format!("error: {e}")),
        })
    }
}

export_handler!(Counter);
