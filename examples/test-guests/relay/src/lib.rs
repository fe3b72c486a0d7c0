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
//! Each action answers `ok` or `error: ...`. When a connection closes and its
//! metadata has `farewell` = `CHANNEL:N:TEXT`, its close handler publishes N
//! messages `TEXT K (CODE)` to CHANNEL, K from 1 to N, CODE the close code.

use wharf_guest::{Accept, Connection, Handler, Message, Reject, Request, channels, export_handler};

struct Relay;

fn id(s: &str) -> Result<Connection, String> {
    s.parse().map(Connection::from_id).map_err(|_| format!("bad id `{s}`"))
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
            channels::publish(channel, msg).map_err(e)?;
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
