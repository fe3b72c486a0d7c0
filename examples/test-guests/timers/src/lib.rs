//! `timers`: a test handler for the host's own timer tests, not an example.
//!
//! Text commands, each answered with `ok`, a value or `error: REASON`:
//! `set NAME MS` and `at NAME UNIX_MS` set a timer whose payload is the
//! sender's id, `many PREFIX N MS` sets `PREFIX0`..`PREFIX{N-1}` due in MS
//! (payload empty), `spread PREFIX N START STEP` sets `PREFIX0`..
//! due at Unix ms `START + i * STEP` (payload the sender's id),
//! `cancel NAME` answers whether it was pending, `get NAME`
//! answers `NAME DUE ATTEMPTS` or `none`, `count NAME` answers how often
//! `on-timer` ran for NAME (a key/value counter), `total` how often it ran
//! for any timer, `started` how many slow ones started.
//!
//! `on-timer` of a name starting with `q` (quiet, for the benchmark) only
//! sends `fired NAME` to the connection in its payload. Of one starting
//! with `slow`, it first counts its start
//! (`started:NAME`, `started`) and sleeps 1.5 s (give it an
//! `event_timeout_ms` above that). Every `on-timer` then counts the firing
//! (`fired:NAME` and `fired` in key/value),
//! then sends `fired NAME` to the connection whose id is the payload (if
//! any, and still open), publishes it to channel `timers` and broadcasts it
//! to the route the timer was set on. A name starting with `trap` panics
//! after counting (a trap: the host retries it); `again:NAME` sets NAME
//! again 100 ms later from inside `on-timer`.

use std::time::Duration;

use wharf_guest::{Connection, Handler, Message, channels, export_handler, kv, timers};

struct Timers;

fn answer<T: ToString>(r: wharf_guest::Result<T>) -> String {
    match r {
        Ok(v) => v.to_string(),
        Err(e) => format!("error: {e}"),
    }
}

impl Handler for Timers {
    fn on_open(conn: Connection, _req: wharf_guest::Request) -> Result<wharf_guest::Accept, wharf_guest::Reject> {
        let _ = conn.subscribe("timers");
        Ok(wharf_guest::Accept::default())
    }

    fn on_message(conn: Connection, msg: Message) -> Option<Message> {
        let text = msg.as_text()?.to_string();
        let words: Vec<&str> = text.split(' ').collect();
        let ms = |w: Option<&&str>| w.and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
        let id = conn.id().to_string();
        let reply = match words.as_slice() {
            ["set", name, _] => {
                answer(timers::set(name, Duration::from_millis(ms(words.get(2))), id.as_bytes()).map(|()| "ok"))
            }
            ["at", name, _] => answer(timers::set_at(name, ms(words.get(2)), id.as_bytes()).map(|()| "ok")),
            ["many", prefix, n, _] => {
                let after = Duration::from_millis(ms(words.get(3)));
                let set = (0..n.parse::<u32>().unwrap_or(0))
                    .try_for_each(|i| timers::set(&format!("{prefix}{i}"), after, b""));
                answer(set.map(|()| "ok"))
            }
            ["spread", prefix, n, start, step] => {
                let (start, step) = (start.parse::<u64>().unwrap_or(0), step.parse::<u64>().unwrap_or(0));
                let set = (0..n.parse::<u64>().unwrap_or(0))
                    .try_for_each(|i| timers::set_at(&format!("{prefix}{i}"), start + i * step, id.as_bytes()));
                answer(set.map(|()| "ok"))
            }
            ["cancel", name] => answer(timers::cancel(name)),
            ["get", name] => answer(timers::get(name).map(|t| match t {
                Some(t) => format!("{} {} {}", t.name, t.due_unix_ms, t.attempts),
                None => "none".into(),
            })),
            ["count", name] => answer(
                kv::get(&format!("fired:{name}"))
                    .map(|v| v.map_or("0".into(), |b| String::from_utf8_lossy(&b).into_owned())),
            ),
            ["total"] => {
                answer(kv::get("fired").map(|v| v.map_or("0".into(), |b| String::from_utf8_lossy(&b).into_owned())))
            }
            ["started"] => {
                answer(kv::get("started").map(|v| v.map_or("0".into(), |b| String::from_utf8_lossy(&b).into_owned())))
            }
            _ => "error: unknown command".into(),
        };
        Some(Message::text(reply))
    }

    fn on_timer(name: String, payload: Vec<u8>) {
        let to = std::str::from_utf8(&payload).ok().and_then(|s| s.parse::<u64>().ok()).map(Connection::from_id);
        if name.starts_with('q') {
            if let Some(conn) = to {
                let _ = conn.send(format!("fired {name}").as_str());
            }
            return;
        }
        if name.starts_with("slow") {
            let _ = kv::increment(&format!("started:{name}"), 1);
            let _ = kv::increment("started", 1);
            std::thread::sleep(Duration::from_millis(1500));
        }
        let _ = kv::increment(&format!("fired:{name}"), 1);
        let _ = kv::increment("fired", 1);
        if name.starts_with("trap") {
            panic!("asked to trap in on-timer");
        }
        if let Some(again) = name.strip_prefix("again:") {
            let _ = timers::set(again, Duration::from_millis(100), &payload);
        }
        let note = format!("fired {name}");
        if let Some(conn) = to {
            let _ = conn.send(note.as_str());
        }
        let _ = channels::publish("timers", format!("{note} (published)"));
        let _ = channels::broadcast(format!("{note} (broadcast)"), None);
    }
}

export_handler!(Timers);
