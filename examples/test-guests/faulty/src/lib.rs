//! `faulty`: a test handler for the host's own tests, not an example.
//!
//! It echoes, but misbehaves on command (`slow-open=MS` in the query makes
//! `on-open` take that long): `panic` panics (a trap), `spin`
//! loops forever (stopped by the event deadline), `bomb` allocates until the
//! memory cap stops it, `recurse` recurses until the stack runs out,
//! `flood:BYTES` emits messages of that size to itself until the host says
//! no and replies with how many went out and why, `kv-flood` does the same
//! with key/value writes, `bigkv:BYTES` stores a value of that size, and
//! `env` reports what the sandbox's environment holds, `reply:BYTES` answers
//! with a reply of that size, `log-flood` writes 1,000 log lines of 4,000
//! bytes. It accepts with `meta=N` metadata entries of `meta-bytes=BYTES`
//! each when the query asks for them. It rejects an open whose
//! query says `reject=STATUS`, records every close in key/value (`closed` is
//! a counter, `closed:<id>` the code), and replies to `closes?` with the
//! counter so tests can see that `on-close` ran exactly once. `get:KEY` and
//! `set:KEY=VALUE` read and write its key/value namespace; `join:CHANNEL`,
//! `members:CHANNEL`, `say:CHANNEL=TEXT` (publish) and `info:ID` exercise
//! channels and presence; `meta:KEY=VALUE` sets metadata;
//! `forward:HANDLER:TEXT` hands TEXT on to another handler of the route. `count`
//! replies with how many events this instance has handled: it grows on a
//! warm, reused instance and stays 1 when every event gets a fresh one.

use std::sync::atomic::{AtomicU32, Ordering};

use wharf_guest::{Accept, Connection, Handler, Message, Reject, Request, channels, export_handler, kv};

struct Faulty;

/// Events handled by this instance; lives in the instance's memory only.
static EVENTS: AtomicU32 = AtomicU32::new(0);

impl Handler for Faulty {
    fn on_open(conn: Connection, req: Request) -> Result<Accept, Reject> {
        if let Some(status) = req.query_param("reject") {
            return Err(Reject::new(status.parse().unwrap_or(400), "rejected by request"));
        }
        if let Some(ms) = req.query_param("slow-open") {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(50)));
        }
        if req.query_param("panic-open").is_some() {
            panic!("asked to panic in on-open");
        }
        if let Some(n) = req.query_param("meta") {
            let size = req.query_param("meta-bytes").and_then(|b| b.parse().ok()).unwrap_or(1);
            let value = "m".repeat(size);
            let accept =
                (0..n.parse().unwrap_or(0)).fold(Accept::default(), |a, i| a.metadata(format!("k{i}"), value.clone()));
            return Ok(accept);
        }
        if let Some(p) = req.query_param("subprotocol") {
            return Ok(Accept::default().subprotocol(p).metadata("opened", conn.id().to_string()));
        }
        Ok(Accept::default())
    }

    fn on_message(conn: Connection, msg: Message) -> Option<Message> {
        let events = EVENTS.fetch_add(1, Ordering::Relaxed) + 1;
        match msg.as_text() {
            Some("count") => Some(Message::text(events.to_string())),
            Some("panic") => panic!("asked to panic"),
            Some("spin") =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            Some("bomb") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("recurse") => Some(Message::text(recurse(std::hint::black_box(1)).to_string())),
            Some(cmd) if cmd.starts_with("flood:") => {
                let size = cmd[6..].parse().unwrap_or(1);
                let chunk = "x".repeat(size);
                let mut sent = 0u64;
                let why = loop {
                    match conn.send(Message::text(chunk.clone())) {
                        Ok(()) => sent += 1,
                        Err(e) => break e,
                    }
                };
                Some(Message::text(format!("flood stopped after {sent}: {why}")))
            }
            Some("kv-flood") => {
                let mut ops = 0u64;
                let why = loop {
                    match kv::set(&format!("flood:{}", ops % 8), b"v") {
                        Ok(()) => ops += 1,
                        Err(e) => break e,
                    }
                };
                Some(Message::text(format!("kv stopped after {ops}: {why}")))
            }
            Some(cmd) if cmd.starts_with("bigkv:") => {
                let size = cmd[6..].parse().unwrap_or(0);
                Some(Message::text(match kv::set("big", &vec![7; size]) {
                    Ok(()) => "stored".to_string(),
                    Err(e) => e.to_string(),
                }))
            }
            Some(cmd) if cmd.starts_with("reply:") => Some(Message::text("r".repeat(cmd[6..].parse().unwrap_or(0)))),
            Some("log-flood") => {
                let line = "l".repeat(4000);
                for _ in 0..1000 {
                    wharf_guest::log::info(&line);
                }
                Some(Message::text("logged"))
            }
            Some("env") => Some(Message::text(format!(
                "vars={} args={} home={}",
                std::env::vars().count(),
                std::env::args().count(),
                std::env::var("HOME").unwrap_or_else(|_| "(unset)".into())
            ))),
            Some("closes?") => {
                let n = kv::get("closed").ok().flatten().unwrap_or_default();
                Some(Message::Text(String::from_utf8_lossy(&n).into_owned()))
            }
            Some(key) if key.starts_with("close-code?") => {
                let id = key.trim_start_matches("close-code?");
                let v = kv::get(&format!("closed:{id}")).ok().flatten().unwrap_or_default();
                Some(Message::Text(String::from_utf8_lossy(&v).into_owned()))
            }
            Some("whoami") => Some(Message::text(conn.id().to_string())),
            Some(cmd) if cmd.starts_with("join:") => {
                Some(Message::text(conn.subscribe(&cmd[5..]).map_or_else(|e| e.to_string(), |()| "ok".into())))
            }
            Some(cmd) if cmd.starts_with("members:") => Some(Message::text(match channels::members(&cmd[8..]) {
                Ok(ids) => ids.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
                Err(e) => e.to_string(),
            })),
            Some(cmd) if cmd.starts_with("info:") => {
                let other = Connection::from_id(cmd[5..].parse().unwrap_or(0));
                Some(Message::text(match other.info() {
                    Ok(i) => format!("{} {} {:?} {:?}", i.connection, i.route, i.metadata, i.channels),
                    Err(e) => e.to_string(),
                }))
            }
            Some(cmd) if cmd.starts_with("get:") => {
                let v = kv::get(&cmd[4..]).ok().flatten();
                Some(Message::Text(v.map_or("(none)".into(), |v| String::from_utf8_lossy(&v).into_owned())))
            }
            Some(cmd) if cmd.starts_with("set:") => {
                let (k, v) = cmd[4..].split_once('=').unwrap_or((&cmd[4..], ""));
                Some(Message::text(match kv::set(k, v.as_bytes()) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.to_string(),
                }))
            }
            Some(cmd) if cmd.starts_with("say:") => {
                let (channel, text) = cmd[4..].split_once('=').unwrap_or((&cmd[4..], ""));
                Some(Message::text(
                    channels::publish(channel, Message::text(text)).map_or_else(|e| e.to_string(), |_| "ok".into()),
                ))
            }
            Some(cmd) if cmd.starts_with("forward:") => {
                let (to, text) = cmd[8..].split_once(':').unwrap_or((&cmd[8..], ""));
                Some(Message::text(match wharf_guest::pipeline::forward(to, text) {
                    Ok(()) => "forwarded".to_string(),
                    Err(e) => e.to_string(),
                }))
            }
            Some(cmd) if cmd.starts_with("meta:") => {
                let (k, v) = cmd[5..].split_once('=').unwrap_or((&cmd[5..], ""));
                Some(Message::text(conn.set_metadata(k, v).map_or_else(|e| e.to_string(), |()| "ok".into())))
            }
            Some("bye") => {
                let _ = conn.close(4000, "bye");
                None
            }
            _ => Some(msg),
        }
    }

    fn on_close(conn: Connection, code: u16, _reason: String) {
        let _ = kv::increment("closed", 1);
        let _ = kv::set(&format!("closed:{}", conn.id()), code.to_string().as_bytes());
    }
}

/// Recurses without end: each frame keeps a buffer live so neither the
/// optimiser nor tail calls can flatten it.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    recurse(depth + 1) + frame[(depth % 32) as usize]
}

export_handler!(Faulty);
