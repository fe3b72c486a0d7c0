//! `pass`: a test handler for the host's pipeline benchmark and tests, not
//! an example. It hands every message on to the next handler of its
//! route's chain (`pipeline::forward_next`) and replies nothing; an error
//! (no next handler) is the reply.

use wharf_guest::{Connection, Handler, Message, export_handler, pipeline};

struct Pass;

impl Handler for Pass {
    fn on_message(_conn: Connection, msg: Message) -> Option<Message> {
        pipeline::forward_next(msg).err().map(|e| Message::text(format!("error: {e}")))
    }
}

export_handler!(Pass);
