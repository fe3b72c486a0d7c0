//! `echo`: every text or binary message comes back unchanged, as the direct
//! reply to its sender.
//!
//! Run it with the other examples: `make run`, then
//! `wscat -c ws://127.0.0.1:8080/echo`.

use wharf_guest::{Connection, Handler, Message, export_handler};

struct Echo;

impl Handler for Echo {
    fn on_message(_conn: Connection, msg: Message) -> Option<Message> {
        Some(msg)
    }
}

export_handler!(Echo);
