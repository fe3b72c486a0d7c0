//! `app-rooms`: the second handler of the `/app` route (examples/app),
//! after `app-auth`, which has checked the client's token and set its
//! `user` metadata. Messages are picked by their `action` field
//! (`[routes.select]`): `{"action":"join","room":"NAME"}` makes the client
//! a member of that room (leaving the one it was in),
//! `{"action":"say","text":"…"}` publishes
//! `{"type":"say","room":…,"from":USER,"text":…}` to its room, and
//! `{"action":"leave"}` leaves it. On open the client gets
//! `{"type":"welcome","user":USER}`; a member's close tells its room
//! `{"type":"left","user":USER}`.

use serde_json::{Value, json};
use wharf_guest::{Accept, Connection, Handler, Message, Reject, Request, channels, export_handler};

struct Rooms;

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn channel(room: &str) -> String {
    format!("room:{room}")
}

fn error(why: &str) -> Option<Message> {
    Some(Message::text(json!({ "type": "error", "error": why }).to_string()))
}

impl Handler for Rooms {
    fn on_open(conn: Connection, _req: Request) -> Result<Accept, Reject> {
        // Set by app-auth's on-open, which ran first.
        let user = conn.metadata("user").ok().flatten().ok_or_else(|| Reject::new(401, "not signed in"))?;
        let _ = conn.send(json!({ "type": "welcome", "user": user }).to_string());
        Ok(Accept::default())
    }

    fn on_message(conn: Connection, msg: Message) -> Option<Message> {
        let request: Value = serde_json::from_str(msg.as_text()?).ok()?;
        let user = conn.metadata("user").ok().flatten().unwrap_or_default();
        let current = conn.metadata("room").ok().flatten();
        match request["action"].as_str() {
            Some("join") => {
                let room = request["room"].as_str().filter(|r| valid_name(r))?;
                if let Some(old) = &current {
                    let _ = conn.unsubscribe(&channel(old));
                }
                conn.subscribe(&channel(room)).ok()?;
                conn.set_metadata("room", room).ok()?;
                let _ = channels::publish(
                    &channel(room),
                    json!({ "type": "joined", "room": room, "user": user }).to_string(),
                );
                None
            }
            Some("say") => {
                let Some(room) = current else { return error("join a room first") };
                let text = request["text"].as_str().unwrap_or_default();
                let said = json!({ "type": "say", "room": room, "from": user, "text": text });
                channels::publish(&channel(&room), said.to_string()).err().and_then(|e| error(&e.to_string()))
            }
            Some("leave") => {
                let room = current?;
                let _ = conn.unsubscribe(&channel(&room));
                let _ = conn.delete_metadata("room");
                Some(Message::text(json!({ "type": "left", "room": room }).to_string()))
            }
            _ => error("unknown action"),
        }
    }

    fn on_close(conn: Connection, _code: u16, _reason: String) {
        if let (Ok(Some(room)), Ok(Some(user))) = (conn.metadata("room"), conn.metadata("user")) {
            let _ =
                channels::publish(&channel(&room), json!({ "type": "left", "room": room, "user": user }).to_string());
        }
    }
}

export_handler!(Rooms);
