//! Channel history in Redis: one script appends a publication, trims the
//! channel to its limits and publishes it to every host at its offset, so
//! offsets are assigned atomically across hosts and every host (this one
//! included) delivers a channel's publications in offset order, from its
//! subscription (`bus.rs`, [`Envelope::Recorded`]). A Redis that lost its
//! data has no epoch for the channel, and the next publication starts a
//! new one.
//!
//! [`Envelope::Recorded`]: super::envelope::Envelope::Recorded

use async_trait::async_trait;
use redis::Value;

use super::envelope::recorded_prefix;
use super::scripts;
use super::store::RedisStore;
use crate::handler::Message;
use crate::history::{self, Limits, Page, Position, Publication};
use crate::store::{Deliver, Entry, History, StoreError, StoreResult, now_ms};

fn bad(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis: malformed history answer ({what})"))
}

fn int(v: &Value) -> StoreResult<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).map_err(|_| bad("negative")),
        _ => Err(bad("not an integer")),
    }
}

fn bytes(v: &Value) -> StoreResult<&[u8]> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        _ => Err(bad("not a string")),
    }
}

/// A kept entry: offset (20 digits), at_ms (13), kind, payload.
fn publication(entry: &[u8]) -> StoreResult<Publication> {
    let (head, payload) = entry.split_at_checked(34).ok_or(bad("short entry"))?;
    let offset = std::str::from_utf8(&head[..20]).ok().and_then(|d| d.parse().ok()).ok_or(bad("offset"))?;
    let msg = match head[33] {
        b'0' => Message::Text(String::from_utf8(payload.to_vec()).map_err(|_| bad("text"))?),
        b'1' => Message::Binary(payload.to_vec()),
        _ => return Err(bad("kind")),
    };
    Ok(Publication { offset, msg })
}

/// ARGV 1 to 6 of both history scripts: the channel, its limits, now, and
/// the epoch to start when it has none.
fn channel_args<'s>(script: &'s redis::Script, channel: &str, limits: &Limits) -> redis::ScriptInvocation<'s> {
    let mut call = script.prepare_invoke();
    call.arg(channel)
        .arg(limits.size)
        .arg(limits.ttl.as_millis() as u64)
        .arg(limits.max_bytes)
        .arg(now_ms())
        .arg(&*history::new_epoch());
    call
}

#[async_trait]
impl History for RedisStore {
    async fn append(
        &self,
        channel: &str,
        limits: Limits,
        entry: Entry,
        _deliver: Deliver<'_>,
    ) -> StoreResult<Position> {
        let mut conn = self.redis()?;
        let (kind, payload): (&str, Vec<u8>) = match entry {
            Entry::Plain(Message::Text(t)) => ("0", t.into_bytes()),
            Entry::Plain(Message::Binary(b)) => ("1", b),
            Entry::Stamped(body) => ("2", body.into_bytes()),
        };
        let r: Vec<Value> = channel_args(&scripts::HISTORY_APPEND, channel, &limits)
            .arg(kind)
            .arg(payload)
            .arg(recorded_prefix(channel))
            .arg(super::bus::ALL)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        match r.as_slice() {
            [offset, epoch] => Ok(Position {
                offset: int(offset)?,
                epoch: std::str::from_utf8(bytes(epoch)?).map_err(|_| bad("epoch"))?.into(),
            }),
            _ => Err(bad("append")),
        }
    }

    async fn read(&self, channel: &str, limits: Limits, since: Option<&Position>, limit: usize) -> StoreResult<Page> {
        let mut conn = self.redis()?;
        let limit = limit.min(history::MAX_READ.max(limits.size));
        let r: Vec<Value> = channel_args(&scripts::HISTORY_READ, channel, &limits)
            .arg(since.map_or(String::new(), |p| p.offset.to_string()))
            .arg(since.map_or("", |p| &*p.epoch))
            .arg(limit)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        let [top, epoch, recovered, entries @ ..] = r.as_slice() else { return Err(bad("read")) };
        let epoch = std::str::from_utf8(bytes(epoch)?).map_err(|_| bad("epoch"))?;
        Ok(Page {
            publications: entries.iter().map(|e| publication(bytes(e)?)).collect::<StoreResult<_>>()?,
            latest: Position { offset: int(top)?, epoch: epoch.into() },
            recovered: int(recovered)? == 1,
        })
    }
}
