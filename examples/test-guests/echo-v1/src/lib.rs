//! `echo-v1`: a test handler for the host's hot-reload tests, not an
//! example. It replies `v1:<message>` to every text message, so a test can
//! tell which version answered.

use wharf_guest::{Connection, Handler, Message, export_handler};

struct Versioned;

impl Handler for Versioned {
    fn on_message(_conn: Connection, msg: Message) -> Option<Message> {
        Some(Message::text(format!("v1:{}", msg.as_text().unwrap_or("(binary)"))))
    }
}

export_handler!(Versioned);
