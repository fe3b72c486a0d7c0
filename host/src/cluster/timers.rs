//! Timers in Redis: each plugin's timers in a hash, and one sorted set of
//! every pending timer by when it is due. A claim (one script) takes the
//! due ones and moves each to when its lease ends, so exactly one host runs
//! a firing, and another claims it again if the holder died before ending
//! it (`TIMER_FINISH`, which removes or reschedules it only if it was not
//! set again meanwhile).

use std::sync::Arc;

use async_trait::async_trait;
use redis::Value;
use tokio::sync::Notify;

use super::scripts;
use super::store::RedisStore;
use crate::store::timers::{Claim, Due, Durable, Timer, Timers, decode, durable, encode};
use crate::store::{StoreError, StoreResult};

/// How often a host looks for due timers when nothing told it of one:
/// another host's `set` reaches it this late at most.
const POLL_MS: u64 = 20;

fn bad(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis: malformed timer answer ({what})"))
}

fn text(v: &Value) -> StoreResult<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| bad("not UTF-8")),
        Value::SimpleString(s) => Ok(s.clone()),
        _ => Err(bad("not a string")),
    }
}

fn blob(v: &Value) -> StoreResult<&[u8]> {
    match v {
        Value::BulkString(b) => Ok(b),
        _ => Err(bad("not a string")),
    }
}

fn timers_key(plugin: &str) -> String {
    format!("wharf:tm:{}:{plugin}", plugin.len())
}

impl RedisStore {
    async fn finish(&self, due: &Due, again: Option<(Timer, u64)>) -> StoreResult<()> {
        let mut conn = self.redis()?;
        let mut call = scripts::TIMER_FINISH.prepare_invoke();
        call.arg(&*due.plugin).arg(&due.timer.name).arg(encode(&due.timer));
        if let Some((timer, at)) = again {
            call.arg(encode(&timer)).arg(at);
        }
        let _: i64 = call.invoke_async(&mut conn).await.map_err(|e| self.failed(e))?;
        Ok(())
    }
}

#[async_trait]
impl Timers for RedisStore {
    async fn set_later(&self, plugin: &str, timer: Timer, max_pending: u64) -> StoreResult<Durable> {
        let mut conn = self.redis()?;
        let set: i64 = scripts::TIMER_SET
            .prepare_invoke()
            .arg(plugin)
            .arg(&timer.name)
            .arg(encode(&timer))
            .arg(timer.due_ms)
            .arg(max_pending)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.timers_changed.notify_one();
        if set == 1 { Ok(durable()) } else { Err(StoreError::QuotaExceeded) }
    }

    async fn cancel_later(&self, plugin: &str, name: &str) -> StoreResult<(bool, Durable)> {
        let mut conn = self.redis()?;
        let n: i64 = scripts::TIMER_CANCEL
            .prepare_invoke()
            .arg(plugin)
            .arg(name)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok((n == 1, durable()))
    }

    async fn get(&self, plugin: &str, name: &str) -> StoreResult<Option<Timer>> {
        let mut conn = self.redis()?;
        let v: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(timers_key(plugin))
            .arg(name)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        v.map(|b| decode(name, &b).ok_or(bad("timer"))).transpose()
    }

    async fn list(&self, plugin: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<Timer>> {
        let mut conn = self.redis()?;
        let all: Vec<(String, Vec<u8>)> =
            redis::cmd("HGETALL").arg(timers_key(plugin)).query_async(&mut conn).await.map_err(|e| self.failed(e))?;
        let mut list: Vec<Timer> = all
            .into_iter()
            .filter(|(name, _)| after.is_none_or(|a| name.as_str() > a))
            .map(|(name, b)| decode(&name, &b).ok_or(bad("timer")))
            .collect::<StoreResult<_>>()?;
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list.truncate(limit);
        Ok(list)
    }

    async fn claim(&self, now_ms: u64, lease_until_ms: u64, max: usize) -> StoreResult<Claim> {
        let mut conn = self.redis()?;
        let r: Vec<Value> = scripts::TIMER_CLAIM
            .prepare_invoke()
            .arg(now_ms)
            .arg(lease_until_ms)
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        let [Value::Array(claimed), next, Value::Int(pending)] = r.as_slice() else { return Err(bad("claim")) };
        let mut due = Vec::with_capacity(claimed.len());
        for c in claimed {
            let Value::Array(t) = c else { return Err(bad("claimed")) };
            let [plugin, name, timer] = t.as_slice() else { return Err(bad("claimed")) };
            let name = text(name)?;
            let Some(timer) = decode(&name, blob(timer)?) else {
                tracing::warn!(name, "a malformed timer in Redis is skipped");
                continue;
            };
            due.push(Due { plugin: Arc::from(text(plugin)?), timer });
        }
        let next = text(next)?;
        let next_ms =
            (!next.is_empty()).then(|| next.parse::<f64>().map(|f| f as u64)).transpose().map_err(|_| bad("next"))?;
        Ok(Claim { due, next_ms, pending: (*pending).max(0) as u64 })
    }

    async fn done(&self, due: &Due) -> StoreResult<()> {
        self.finish(due, None).await
    }

    async fn retry(&self, due: &Due, at_ms: u64, failed: bool) -> StoreResult<()> {
        let timer = Timer { due_ms: at_ms, attempts: due.timer.attempts + u32::from(failed), ..due.timer.clone() };
        self.finish(due, Some((timer, at_ms))).await
    }

    fn changed(&self) -> &Notify {
        &self.timers_changed
    }

    fn poll_ms(&self) -> u64 {
        POLL_MS
    }
}
