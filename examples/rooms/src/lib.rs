//! `rooms`: chat rooms whose clients miss nothing across reconnects.
//!
//! A client opens `/rooms?room=NAME&name=NICK`, and after a drop reopens it
//! with `&since=OFFSET&epoch=EPOCH`, the position of the last message it
//! saw. Every message of a room is published stamped with its position
//! (`{"offset":N,"epoch":"…","type":"say","from":…,"text":…}`); the host
//! keeps each room's history (`[[channels]] match = "room:*"`), and a
//! resumed subscription first gets what the client missed, in order, then
//! the live messages, none twice. After the replay the client gets
//! `{"type":"welcome","recovered":BOOL,"offset":N,"epoch":"…"}`;
//! `recovered: false` means some history is gone (too old, or the host lost
//! it), and the page says so.
//!
//! A client sends text, or `{"text": "…"}`, and asks for the last messages
//! with `{"type":"history","limit":N}` (default 20, at most 100): the reply
//! is `{"type":"history","recovered":…,"offset":…,"epoch":…,"messages":[…]}`,
//! the room's last kept messages (as members got them) and its position.

use serde_json::{Value, json};
use wharf_guest::{Accept, Connection, Handler, Message, Position, Reject, Request, channels, export_handler};

/// The most messages a `history` request gets.
const MAX_HISTORY: u64 = 100;

struct Rooms;

fn room_channel(room: &str) -> String {
    format!("room:{room}")
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Handler for Rooms {
    fn on_open(conn: Connection, req: Request) -> Result<Accept, Reject> {
        let room = req.query_param("room").unwrap_or("lobby").to_string();
        let name = req.query_param("name").unwrap_or("anonymous").to_string();
        if !valid_name(&room) || !valid_name(&name) {
            return Err(Reject::new(400, "room and name: 1 to 64 ASCII letters, digits, - or _"));
        }
        let since = match (req.query_param("since"), req.query_param("epoch")) {
            (Some(offset), Some(epoch)) => {
                let offset = offset.parse().map_err(|_| Reject::new(400, "since must be an offset"))?;
                Some(Position::new(offset, epoch))
            }
            _ => None,
        };
        let joined = conn
            .subscribe_since(&room_channel(&room), since.as_ref())
            .map_err(|e| Reject::new(503, format!("cannot join the room: {e}")))?;
        let latest = joined.latest.unwrap_or_else(|| Position::new(0, ""));
        let welcome = json!({
            "type": "welcome",
            "room": room,
            "recovered": joined.recovered,
            "replayed": joined.replayed,
            "offset": latest.offset,
            "epoch": latest.epoch,
        });
        conn.send(welcome.to_string()).map_err(|e| Reject::new(503, e.to_string()))?;
        Ok(Accept::default().metadata("room", room).metadata("name", name))
    }

    fn on_message(conn: Connection, msg: Message) -> Option<Message> {
        let text = msg.as_text()?;
        let room = conn.metadata("room").ok().flatten()?;
        let text = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("history") => {
                let limit = o.get("limit").and_then(Value::as_u64).unwrap_or(20).min(MAX_HISTORY);
                return Some(Message::text(recent(&room, limit as u32).to_string()));
            }
            Ok(Value::Object(o)) => o.get("text").and_then(Value::as_str).unwrap_or_default().to_string(),
            _ => text.to_string(),
        };
        if text.is_empty() {
            return None;
        }
        let name = conn.metadata("name").ok().flatten().unwrap_or_default();
        let say = json!({ "type": "say", "from": name, "text": text });
        match channels::publish_stamped(&room_channel(&room), &say.to_string()) {
            Ok(_) => None,
            Err(e) => Some(Message::text(json!({ "type": "error", "error": e.to_string() }).to_string())),
        }
    }
}

/// The reply to a `history` request: the room's last `limit` messages.
fn recent(room: &str, limit: u32) -> Value {
    match channels::history(&room_channel(room), None, limit) {
        Ok(page) => {
            let messages: Vec<Value> = page
                .publications
                .iter()
                .filter_map(|p| p.msg.as_text().and_then(|t| serde_json::from_str(t).ok()))
                .collect();
            json!({
                "type": "history",
                "recovered": page.recovered,
                "offset": page.latest.offset,
                "epoch": page.latest.epoch,
                "messages": messages,
            })
        }
        Err(e) => json!({ "type": "error", "error": e.to_string() }),
    }
}

export_handler!(Rooms);
