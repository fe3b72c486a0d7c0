//! `reads-file`: a test handler that wants the host's files. Reading a file
//! makes the component import `wasi:filesystem`, which the host links but
//! with no directory preopened: the component loads, and every read fails
//! inside it. It answers each message with what reading `/etc/passwd` gave.

use wharf_guest::{Connection, Handler, Message, export_handler};

struct ReadsFile;

impl Handler for ReadsFile {
    fn on_message(_conn: Connection, _msg: Message) -> Option<Message> {
        Some(Message::text(match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => format!("read: {text}"),
            Err(e) => format!("refused: {e}"),
        }))
    }
}

export_handler!(ReadsFile);
