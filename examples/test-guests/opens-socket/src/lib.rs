//! `opens-socket`: a test handler that wants the network. Connecting a TCP
//! socket makes the component import `wasi:sockets`, which Wharf does not
//! grant: the host must refuse it at load time, naming those imports.

use wharf_guest::{Connection, Handler, Message, export_handler};

struct OpensSocket;

impl Handler for OpensSocket {
    fn on_message(_conn: Connection, _msg: Message) -> Option<Message> {
        Some(Message::text(match std::net::TcpStream::connect("127.0.0.1:80") {
            Ok(_) => "connected".to_string(),
            Err(e) => e.to_string(),
        }))
    }
}

export_handler!(OpensSocket);
