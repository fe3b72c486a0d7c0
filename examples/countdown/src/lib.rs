//! `countdown`: a room whose countdown the host runs, whoever is connected.
//!
//! A client opens `/countdown?room=NAME` and gets
//! `{"type":"welcome","room":…,"running":BOOL,"left":N}`. It sends
//! `{"type":"start","seconds":N}` (1 to 3600): every member of the room
//! gets `{"type":"started","seconds":N}`, then once a second
//! `{"type":"tick","left":N-1}` … `{"type":"tick","left":0}` and
//! `{"type":"done"}`. `{"type":"stop"}` cancels it (`{"type":"stopped"}`),
//! `{"type":"status"}` answers `{"type":"status","running":…,"left":…}`.
//!
//! The countdown is one timer per room (`countdown:NAME`), kept by the host:
//! it goes on when every client has left, across a restart of the host on
//! the embedded store, and on exactly one host of several sharing Redis.
//! Each firing sets the next at its own due time plus a second (`set_at`),
//! so a late firing does not delay the ones after it.

use serde_json::{Value, json};
use wharf_guest::{Accept, Connection, Handler, Message, Reject, Request, channels, export_handler, timers};

/// The longest countdown, in seconds.
const MAX_SECONDS: u64 = 3600;

struct Countdown;

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The room's channel, and the name of its timer.
fn channel(room: &str) -> String {
    format!("countdown:{room}")
}

/// What a room's timer carries: the room, the seconds left after its next
/// firing's tick, and when that firing is due.
fn payload(room: &str, left: u64, at: u64) -> Vec<u8> {
    json!({ "room": room, "left": left, "at": at }).to_string().into_bytes()
}

/// The room's countdown: whether it runs, and the seconds left.
fn status(room: &str) -> (bool, u64) {
    let pending = timers::get(&channel(room)).ok().flatten();
    let left = pending
        .and_then(|t| serde_json::from_slice::<Value>(&t.payload).ok())
        .and_then(|p| p["left"].as_u64())
        .map(|left| left + 1);
    (left.is_some(), left.unwrap_or(0))
}

fn start(room: &str, seconds: u64) -> Result<(), String> {
    let name = channel(room);
    // Set it a second from now, read back when that is, and keep that in
    // the payload: each firing schedules the next from its own due time.
    timers::set(&name, std::time::Duration::from_secs(1), &payload(room, seconds - 1, 0)).map_err(|e| e.to_string())?;
    let due = timers::get(&name).map_err(|e| e.to_string())?.map_or(0, |t| t.due_unix_ms);
    timers::set_at(&name, due, &payload(room, seconds - 1, due)).map_err(|e| e.to_string())?;
    channels::publish(&name, json!({ "type": "started", "seconds": seconds }).to_string())
        .map_err(|e| e.to_string())?;
    Ok(())
}

impl Handler for Countdown {
    fn on_open(conn: Connection, req: Request) -> Result<Accept, Reject> {
        let room = req.query_param("room").unwrap_or("lobby").to_string();
        if !valid_name(&room) {
            return Err(Reject::new(400, "room: 1 to 64 ASCII letters, digits, - or _"));
        }
        conn.subscribe(&channel(&room)).map_err(|e| Reject::new(503, format!("cannot join the room: {e}")))?;
        let (running, left) = status(&room);
        let _ = conn.send(json!({ "type": "welcome", "room": room, "running": running, "left": left }).to_string());
        Ok(Accept::default().metadata("room", room))
    }

    fn on_message(conn: Connection, msg: Message) -> Option<Message> {
        let room = conn.metadata("room").ok().flatten()?;
        let request: Value = serde_json::from_str(msg.as_text()?).unwrap_or(Value::Null);
        let error = |why: &str| Some(Message::text(json!({ "type": "error", "error": why }).to_string()));
        match request["type"].as_str() {
            Some("start") => match request["seconds"].as_u64() {
                Some(s @ 1..=MAX_SECONDS) => start(&room, s).err().and_then(|e| error(&e)),
                _ => error("seconds: 1 to 3600"),
            },
            Some("stop") => {
                if timers::cancel(&channel(&room)).unwrap_or(false) {
                    let _ = channels::publish(&channel(&room), json!({ "type": "stopped" }).to_string());
                }
                None
            }
            Some("status") => {
                let (running, left) = status(&room);
                Some(Message::text(json!({ "type": "status", "running": running, "left": left }).to_string()))
            }
            _ => error("send {\"type\":\"start\",\"seconds\":N}, {\"type\":\"stop\"} or {\"type\":\"status\"}"),
        }
    }

    fn on_timer(_name: String, carried: Vec<u8>) {
        let Ok(p) = serde_json::from_slice::<Value>(&carried) else { return };
        let (Some(room), Some(left), Some(at)) = (p["room"].as_str(), p["left"].as_u64(), p["at"].as_u64()) else {
            return;
        };
        let name = channel(room);
        let _ = channels::publish(&name, json!({ "type": "tick", "left": left }).to_string());
        if left == 0 {
            let _ = channels::publish(&name, json!({ "type": "done" }).to_string());
        } else {
            // A failure here (the store unavailable) traps, so the host
            // runs this firing again rather than losing the countdown.
            timers::set_at(&name, at + 1000, &payload(room, left - 1, at + 1000)).expect("the next tick is set");
        }
    }
}

export_handler!(Countdown);
