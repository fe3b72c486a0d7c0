//! `reads-file`: a test handler that wants the host's files. Reading a file
//! makes the component import `wasi:filesystem`, which Wharf does not grant:
//! the host must refuse it at load time, naming that import.

use wharf_guest::{Connection, Handler, Message, export_handler};

struct ReadsFile;

impl Handler for ReadsFile {
    fn on_message(_conn: Connection, _msg: Message) -> Option<Message> {
        Some(Message::text(std::fs::read_to_string("/etc/passwd").unwrap_or_else(|e| e.to_string())))
    }
}

export_handler!(ReadsFile);
