//! Host liveness on Redis, in one place: a host registers under its number
//! with a per-process token, renews a heartbeat key, writes its records back
//! when Redis forgot them (resync), removes the connections of hosts whose
//! heartbeat expired (reap), and deregisters when it stops. The liveness
//! task runs these on a tick and keeps [`Health`] and the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::{AsyncCommands, Value};
use tokio_util::sync::CancellationToken;

use super::store::{RedisStore, open_invocation};
use super::{Cluster, scripts};
use crate::conn_id::ConnId;

/// Most times a resync writes one record that keeps changing under it.
const MAX_REWRITES: u32 = 8;

/// What a heartbeat found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Beat {
    /// Redis knows this host and has every local change.
    Current,
    /// Redis forgot this host or missed a local change: call
    /// `RedisStore::resync`.
    Stale,
    /// Another host process holds this host's number (Redis lost its data
    /// and handed the number out again): connection ids would collide.
    Taken,
}

impl RedisStore {
    /// How long the heartbeat key lives: short enough that a reaper ticking
    /// every tenth of the TTL removes a dead host within the TTL.
    fn alive_ms(&self) -> u64 {
        (self.heartbeat_ttl.as_millis() as u64 * 7 / 10).max(500)
    }

    /// Registers this host; `false` when another process holds its number.
    pub(super) async fn register(&self) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let n: i64 =
            scripts::REGISTER.arg(self.host).arg(self.alive_ms()).arg(&self.token).invoke_async(&mut conn).await?;
        Ok(n == 1)
    }

    /// Renews this host's heartbeat.
    pub(super) async fn heartbeat(&self) -> redis::RedisResult<Beat> {
        let mut conn = self.conn.clone();
        let n: i64 =
            scripts::HEARTBEAT.arg(self.host).arg(self.alive_ms()).arg(&self.token).invoke_async(&mut conn).await?;
        Ok(match n {
            -1 => Beat::Taken,
            1 if !self.stale.load(Ordering::Acquire) => Beat::Current,
            _ => Beat::Stale,
        })
    }

    /// Registers this host again and makes Redis agree with the local
    /// records: writes each one, removes this host's records that closed
    /// meanwhile. How many records were written and removed.
    pub(super) async fn resync(&self) -> redis::RedisResult<(usize, usize)> {
        self.stale.store(false, Ordering::Release);
        let result = self.resync_inner().await;
        if result.is_err() {
            self.stale.store(true, Ordering::Release);
        }
        result
    }

    async fn resync_inner(&self) -> redis::RedisResult<(usize, usize)> {
        if !self.register().await? {
            return Err(redis::RedisError::from((redis::ErrorKind::Client, "another host holds this host's number")));
        }
        let mut conn = self.conn.clone();
        let mut written = 0;
        for mut record in self.local.all() {
            // A change is made to the local copy first, then to Redis: when
            // the copy still equals what was written, a change made meanwhile
            // either is in what was written or reaches Redis after it.
            let mut attempts = 0;
            loop {
                open_invocation(&record, self.host).invoke_async::<i64>(&mut conn).await?;
                attempts += 1;
                match self.local.get(record.id) {
                    Some(now) if now == record => break,
                    Some(now) if attempts < MAX_REWRITES => record = now,
                    // Still changing: the next heartbeat resyncs again.
                    Some(_) => {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "a connection kept changing while it was written",
                        )));
                    }
                    // Closed while it was being written: take it out again.
                    None => {
                        scripts::CLOSE.arg(record.id).invoke_async::<Value>(&mut conn).await?;
                        break;
                    }
                }
            }
            written += 1;
        }
        let held: Vec<ConnId> = conn.smembers(format!("wharf:h:{}:conns", self.host)).await?;
        let mut removed = 0;
        for id in held.into_iter().filter(|id| !self.local.contains(*id)) {
            scripts::CLOSE.arg(id).invoke_async::<Value>(&mut conn).await?;
            removed += 1;
        }
        Ok((written, removed))
    }

    /// Removes the connections of every host whose heartbeat expired.
    /// Returns the live hosts (this one included) and the ids removed per
    /// dead host.
    pub(super) async fn reap(&self) -> redis::RedisResult<(usize, Vec<(u32, i64)>)> {
        let mut conn = self.conn.clone();
        let hosts: Vec<u32> = conn.smembers("wharf:hosts").await?;
        let mut live = 0;
        let mut reaped = Vec::new();
        for h in hosts {
            if h == self.host {
                live += 1;
                continue;
            }
            let alive: bool = conn.exists(format!("wharf:h:{h}:alive")).await?;
            if alive {
                live += 1;
                continue;
            }
            let n: i64 = scripts::REAP.arg(h).invoke_async(&mut conn).await?;
            if n >= 0 {
                reaped.push((h, n));
            } else {
                live += 1;
            }
        }
        Ok((live.max(1), reaped))
    }

    /// Records whether Redis answers (the cluster's heartbeat decides).
    pub(super) fn set_reachable(&self, up: bool) {
        self.reachable.store(up, Ordering::Release);
    }

    /// This host is stopping and every connection has closed: deregister
    /// it, so other hosts need not wait for its heartbeat to expire.
    pub(super) async fn leave(&self) {
        let Ok(mut conn) = self.redis() else { return };
        let r: redis::RedisResult<()> = redis::pipe()
            .del(format!("wharf:h:{}:alive", self.host))
            .srem("wharf:hosts", self.host)
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not deregister this host from Redis; its heartbeat will expire");
        }
    }
}

impl Cluster {
    pub(super) async fn liveness_loop(self: Arc<Self>, ttl: Duration, shutdown: CancellationToken) {
        let tick = (ttl / 10).max(Duration::from_millis(100));
        let beat_every = 2;
        let mut n: u64 = 0;
        let mut down_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            n += 1;
            if n.is_multiple_of(beat_every) || down_at.is_some() {
                // A heartbeat that hangs is a failed one: an outage must show
                // within a beat, not after the client's reconnect attempts.
                let beat = tokio::time::timeout(tick * beat_every as u32, self.store.heartbeat()).await;
                let beat = beat.unwrap_or_else(|_| {
                    Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "heartbeat timed out",
                    )))
                });
                match beat {
                    Ok(Beat::Taken) => {
                        if !self.health.taken.swap(true, Ordering::AcqRel) {
                            tracing::error!(
                                host = self.host,
                                "another host process holds this host's number (Redis lost its data and handed it out again): connection ids would collide; restart this host"
                            );
                        }
                        self.health.set(&self.health.heartbeat_ok, true);
                    }
                    Ok(beat) => {
                        if let Some(at) = down_at.take() {
                            tracing::info!(after_ms = at.elapsed().as_millis() as u64, "Redis answers again");
                        }
                        self.health.set(&self.health.heartbeat_ok, true);
                        self.store.set_reachable(true);
                        if beat == Beat::Stale {
                            match self.store.resync().await {
                                Ok((written, removed)) => tracing::info!(
                                    written,
                                    removed,
                                    host = self.host,
                                    "wrote this host's connections back to Redis"
                                ),
                                Err(e) => {
                                    tracing::warn!(error = %e, "writing this host's connections back to Redis failed; retrying")
                                }
                            }
                        }
                    }
                    Err(e) => {
                        if down_at.is_none() {
                            tracing::warn!(error = %e, "Redis unreachable: serving this host's connections, counting what cannot reach other hosts, retrying");
                            self.metrics.outages.inc();
                            down_at = Some(Instant::now());
                        }
                        self.health.set(&self.health.heartbeat_ok, false);
                        self.store.set_reachable(false);
                    }
                }
                self.refresh_up();
            }
            if down_at.is_some() {
                continue;
            }
            match self.store.reap().await {
                Ok((live, reaped)) => {
                    self.health.live_hosts.store(live, Ordering::Release);
                    self.metrics.hosts.set(live as i64);
                    for (host, conns) in reaped {
                        tracing::info!(
                            host,
                            connections = conns,
                            "a host stopped renewing its heartbeat; removed its connections"
                        );
                        self.metrics.reaped.inc_by(conns.max(0) as u64);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "looking for dead hosts failed"),
            }
        }
    }
}
