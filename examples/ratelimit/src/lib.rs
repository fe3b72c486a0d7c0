//! `ratelimit`: a handler that stands in front of another on a route and
//! lets each connection through at most [`PER_WINDOW`] messages a second.
//!
//! It is the first of the route's chain and gets every message
//! (`[routes.select] default = "ratelimit"`); a message within the limit
//! is handed on to the next handler of the chain
//! (`pipeline::forward_next`), whose reply goes to the client. One over it
//! is answered `{"type":"error","error":"rate limited: 5 messages a second"}`
//! and goes no further.
//!
//! The count is a key/value counter per connection; the first message of
//! a window sets a timer that clears it a second later, so the limiter
//! behaves the same on one host or many, and under `wharf test`'s clock.

use std::time::Duration;

use wharf_guest::{Connection, Handler, Message, export_handler, kv, log, pipeline, timers};

/// Messages a connection may send per window.
pub const PER_WINDOW: i64 = 5;

/// How long a window lasts.
const WINDOW: Duration = Duration::from_secs(1);

struct RateLimit;

/// The counter of connection `id`, and the name of the timer that clears it.
fn key(id: u64) -> String {
    format!("count:{id}")
}

fn error(why: &str) -> Option<Message> {
    Some(Message::text(format!(r#"{{"type":"error","error":"{why}"}}"#)))
}

impl Handler for RateLimit {
    fn on_message(conn: Connection, msg: Message) -> Option<Message> {
        let key = key(conn.id());
        let seen = match kv::increment(&key, 1) {
            Ok(n) => n,
            // Without its count the limiter cannot tell: it lets nothing by.
            Err(e) => return error(&format!("rate limiter unavailable: {e}")),
        };
        if seen == 1
            && let Err(e) = timers::set(&key, WINDOW, key.as_bytes())
        {
            log::warn(&format!("the window of {key} has no timer: {e}"));
        }
        if seen > PER_WINDOW {
            return error(&format!("rate limited: {PER_WINDOW} messages a second"));
        }
        pipeline::forward_next(msg).err().and_then(|e| error(&format!("no handler after the limiter: {e}")))
    }

    fn on_close(conn: Connection, _code: u16, _reason: String) {
        let key = key(conn.id());
        let _ = timers::cancel(&key);
        let _ = kv::delete(&key);
    }

    fn on_timer(name: String, _payload: Vec<u8>) {
        // The window is over: the next message starts a new one.
        let _ = kv::delete(&name);
    }
}

export_handler!(RateLimit);
