//! `relay`: acts on other connections by id, for the host's multi-host
//! tests. On open it answers `id:<its id>`. Then, with `ID` a connection id:
//!
//! - `send:ID:TEXT` emits TEXT to ID;
//! - `close:ID` closes ID with 4000;
//! - `set:ID:KEY=VALUE` sets ID's metadata;
//! - `get:KEY` answers `KEY=VALUE` (or `KEY unset`) from the sender's own metadata;
//! - `info:ID` answers `info ROUTE CHANNELS METADATA` (or the error);
//! - `join:ID:CHANNEL` subscribes ID to CHANNEL; `pub:CHANNEL:TEXT` publishes;
//! - `members:CHANNEL` answers the member ids, comma-separated.
//!
//! Channel history (world 0.2.0), with `POS` as `OFFSET@EPOCH`:
//!
//! - `pub:CHANNEL:TEXT` answers `at POS` on a channel that keeps history;
//! - `stamp:CHANNEL:JSON` publishes JSON with its position stamped in and
//!   answers `at POS`;
//! - `resume:ID:CHANNEL:POS` subscribes ID from POS (`-` for none) and
//!   answers `resumed recovered=B replayed=N latest=POS`;
//! - `history:CHANNEL:POS:LIMIT` answers `history recovered=B latest=POS
//!   offsets=O,O,...`.
//!
//! Each action answers `ok` or `error: ...`. When a connection closes and its
//! metadata has `farewell` = `CHANNEL:N:TEXT`, its close handler publishes N
//! messages `TEXT K (CODE)` to CHANNEL, K from 1 to N, CODE the close code.

use wharf_guest::{Accept, Connection, Handler, Message, Position, Reject, Request, channels, export_handler};

struct Relay;

fn id(s: &str) -> Result<Connection, String> {
    s.parse().map(Connection::from_id).map_err(|_| format!("bad id `{s}`"))
}

fn position(s: &str) -> Result<Option<Position>, String> {
    if s == "-" {
        return Ok(None);
    }
    let (offset, epoch) = s.split_once('@').ok_or("POS is OFFSET@EPOCH")?;
    Ok(Some(Position::new(offset.parse().map_err(|_| "bad offset")?, epoch)))
}

fn show(p: &Position) -> String {
    format!("{}@{}", p.offset, p.epoch)
}

fn act(conn: &Connection, text: &str) -> Result<String, String> {
    let (verb, rest) = text.split_once(':').ok_or("no verb")?;
    let e = |e: wharf_guest::Error| e.to_string();
    match verb {
        "send" => {
            let (to, msg) = rest.split_once(':').ok_or("send:ID:TEXT")?;
            id(to)?.send(msg).map_err(e)?;
        }
        "close" => id(rest)?.close(4000, "closed by relay").map_err(e)?,
        "set" => {
            let (to, kv) = rest.split_once(':').ok_or("set:ID:KEY=VALUE")?;
            let (k, v) = kv.split_once('=').ok_or("set:ID:KEY=VALUE")?;
            id(to)?.set_metadata(k, v).map_err(e)?;
        }
        "get" => {
            return Ok(match conn.metadata(rest).map_err(e)? {
                Some(v) => format!("{rest}={v}"),
                None => format!("{rest} unset"),
            });
        }
        "info" => {
            let info = id(rest)?.info().map_err(e)?;
            let meta: Vec<String> = info.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return Ok(format!("info {} {} {}", info.route, info.channels.join(","), meta.join(",")));
        }
        "join" => {
            let (who, channel) = rest.split_once(':').ok_or("join:ID:CHANNEL")?;
            id(who)?.subscribe(channel).map_err(e)?;
        }
        "pub" => {
            let (channel, msg) = rest.split_once(':').ok_or("pub:CHANNEL:TEXT")?;
            if let Some(pos) = channels::publish(channel, msg).map_err(e)? {
                return Ok(format!("at {}", show(&pos)));
            }
        }
        "stamp" => {
            let (channel, json) = rest.split_once(':').ok_or("stamp:CHANNEL:JSON")?;
            return Ok(format!("at {}", show(&channels::publish_stamped(channel, json).map_err(e)?)));
        }
        "resume" => {
            let mut parts = rest.splitn(3, ':');
            let (Some(who), Some(channel), Some(pos)) = (parts.next(), parts.next(), parts.next()) else {
                return Err("resume:ID:CHANNEL:POS".into());
            };
            let s = id(who)?.subscribe_since(channel, position(pos)?.as_ref()).map_err(e)?;
            let latest = s.latest.as_ref().map_or("-".into(), show);
            return Ok(format!("resumed recovered={} replayed={} latest={latest}", s.recovered, s.replayed));
        }
        "history" => {
            let mut parts = rest.splitn(3, ':');
            let (Some(channel), Some(pos), Some(limit)) = (parts.next(), parts.next(), parts.next()) else {
                return Err("history:CHANNEL:POS:LIMIT".into());
            };
            let limit = limit.parse().map_err(|_| "bad limit")?;
            let page = channels::history(channel, position(pos)?.as_ref(), limit).map_err(e)?;
            let offsets: Vec<String> = page.publications.iter().map(|p| p.offset.to_string()).collect();
            return Ok(format!(
                "history recovered={} latest={} offsets={}",
                page.recovered,
                show(&page.latest),
                offsets.join(",")
            ));
        }
        "members" => {
            let ids: Vec<String> = channels::members(rest).map_err(e)?.iter().map(|c| c.id().to_string()).collect();
            return Ok(ids.join(","));
        }
        other => return Err(format!("unknown verb `{other}`")),
    }
    Ok("ok".into())
}

impl Handler for Relay {
    fn on_open(conn: Connection, _req: Request) -> Result<Accept, Reject> {
        conn.send(format!("id:{conn}")).map_err(|e| Reject::new(503, e.to_string()))?;
        Ok(Accept::default())
    }

    fn on_message(conn: Connection, msg: Message) -> Option<Message> {
        let text = msg.as_text()?;
        Some(Message::text(act(&conn, text).unwrap_or_else(|e| format!("error: {e}"))))
    }

    fn on_close(conn: Connection, code: u16, _reason: String) {
        let Ok(Some(farewell)) = conn.metadata("farewell") else { return };
        let mut parts = farewell.splitn(3, ':');
        let (Some(channel), Some(Ok(n)), Some(text)) =
            (parts.next(), parts.next().map(str::parse::<u32>), parts.next())
        else {
            return;
        };
        for k in 1..=n {
            let _ = channels::publish(channel, format!("{text} {k} ({code})"));
        }
    }
}

export_handler!(Relay);
