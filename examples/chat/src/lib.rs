//! `chat`: the chat service of the Fanout "WebSockets with AWS Lambda" article.
//!
//! Every connection joins channel `room` on open. `/nick NAME` stores `nick`
//! in the connection's metadata (kept by the host between events) and replies
//! `nickname set to [NAME]`; any other text is published to `room` as
//! `NICK: text` (`anonymous` until a nick is set), so every member, the sender
//! too, receives it.
//!
//! Run it with `make run` and open http://127.0.0.1:8080/ in two browser
//! tabs, or `wscat -c ws://127.0.0.1:8080/chat`.

use wharf_guest::{Accept, Connection, Handler, Message, Reject, Request, channels, export_handler};

const ROOM: &str = "room";

struct Chat;

impl Handler for Chat {
    fn on_open(conn: Connection, _req: Request) -> Result<Accept, Reject> {
        conn.subscribe(ROOM).map_err(|e| Reject::new(503, format!("cannot join the room: {e}")))?;
        Ok(Accept::default())
    }

    fn on_message(conn: Connection, msg: Message) -> Option<Message> {
        let text = msg.as_text()?;
        if let Some(nick) = text.strip_prefix("/nick ") {
            return Some(match conn.set_metadata("nick", nick) {
                Ok(()) => Message::text(format!("nickname set to [{nick}]")),
                Err(e) => Message::text(format!("cannot set nickname: {e}")),
            });
        }
        let nick = conn.metadata("nick").ok().flatten().unwrap_or_else(|| "anonymous".to_string());
        if let Err(e) = channels::publish(ROOM, format!("{nick}: {text}")) {
            return Some(Message::text(format!("not sent: {e}")));
        }
        None
    }
}

export_handler!(Chat);
