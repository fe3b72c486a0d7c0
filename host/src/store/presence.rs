//! Open connections and channel membership of this host, in memory: the
//! part of the store that lives and dies with the process holding the
//! sockets. The Redis back end keeps one too, for this host's own
//! connections.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use indexmap::{IndexMap, IndexSet};

use super::{ConnectionRecord, Connections, RecordCaps, StoreError, StoreResult};
use crate::conn_id::ConnId;

/// One open connection: its record, with metadata and channels in indexed
/// sets (a write is a hash lookup, whatever their number) and the bytes its
/// metadata holds.
struct Live {
    /// The record without metadata and channels.
    record: ConnectionRecord,
    metadata: IndexMap<String, String>,
    metadata_bytes: usize,
    channels: IndexSet<String>,
}

impl Live {
    fn new(mut record: ConnectionRecord) -> Self {
        let metadata: IndexMap<String, String> = std::mem::take(&mut record.metadata).into_iter().collect();
        let metadata_bytes = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        let channels = std::mem::take(&mut record.channels).into_iter().collect();
        Live { record, metadata, metadata_bytes, channels }
    }

    fn to_record(&self) -> ConnectionRecord {
        ConnectionRecord {
            metadata: self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            channels: self.channels.iter().cloned().collect(),
            ..self.record.clone()
        }
    }
}

/// Connection records and channel members, each connection's metadata and
/// channels within [`RecordCaps`].
#[derive(Default)]
pub struct Presence {
    conns: DashMap<ConnId, Live>,
    channels: DashMap<String, BTreeSet<ConnId>>,
    caps: RecordCaps,
}

/// The methods of [`Connections`], without waiting.
impl Presence {
    /// Presence whose connections hold at most `caps`.
    pub fn new(caps: RecordCaps) -> Self {
        Presence { caps, ..Presence::default() }
    }

    /// Records a connection as given (its metadata and channels are not
    /// checked against the caps: they were when they were set).
    pub(crate) fn open(&self, record: ConnectionRecord) {
        for channel in &record.channels {
            self.channels.entry(channel.clone()).or_default().insert(record.id);
        }
        self.conns.insert(record.id, Live::new(record));
    }

    pub(crate) fn close(&self, id: ConnId) -> Option<ConnectionRecord> {
        let (_, live) = self.conns.remove(&id)?;
        for channel in &live.channels {
            self.leave(channel, id);
        }
        Some(live.to_record())
    }

    fn leave(&self, channel: &str, id: ConnId) {
        self.channels.remove_if_mut(channel, |_, members| {
            members.remove(&id);
            members.is_empty()
        });
    }

    pub(crate) fn contains(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    pub(crate) fn all(&self) -> Vec<ConnectionRecord> {
        self.conns.iter().map(|r| r.to_record()).collect()
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<ConnectionRecord> {
        self.conns.get(&id).map(|r| r.to_record())
    }

    pub(crate) fn list(&self, route: Option<&str>, after: Option<ConnId>, limit: usize) -> Vec<ConnectionRecord> {
        let mut ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|r| route.is_none_or(|route| &*r.record.route == route) && after.is_none_or(|a| *r.key() > a))
            .map(|r| *r.key())
            .collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|id| self.get(id)).take(limit).collect()
    }

    pub(crate) fn plugin(&self, id: ConnId) -> Option<Arc<str>> {
        self.conns.get(&id).map(|r| r.record.plugin.clone())
    }

    pub(crate) fn metadata_get(&self, id: ConnId, key: &str) -> StoreResult<Option<String>> {
        let live = self.conns.get(&id).ok_or(StoreError::UnknownConnection)?;
        Ok(live.metadata.get(key).cloned())
    }

    /// Sets a metadata value; `QuotaExceeded` when the connection would
    /// hold more keys or bytes than the caps (`checked`; a change another
    /// host already made is mirrored unchecked).
    pub(crate) fn metadata_set(&self, id: ConnId, key: &str, value: &str, checked: bool) -> StoreResult<()> {
        let mut live = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        let old = live.metadata.get(key).map(|v| key.len() + v.len());
        let bytes = live.metadata_bytes - old.unwrap_or(0) + key.len() + value.len();
        let caps = &self.caps;
        if checked
            && ((old.is_none() && live.metadata.len() >= caps.max_metadata_keys) || bytes > caps.max_metadata_bytes)
        {
            return Err(StoreError::QuotaExceeded);
        }
        live.metadata_bytes = bytes;
        live.metadata.insert(key.to_string(), value.to_string());
        Ok(())
    }

    pub(crate) fn metadata_delete(&self, id: ConnId, key: &str) -> StoreResult<()> {
        let mut live = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        if let Some(value) = live.metadata.shift_remove(key) {
            live.metadata_bytes -= key.len() + value.len();
        }
        Ok(())
    }

    /// Joins a channel; `QuotaExceeded` when the connection is in as many
    /// channels as the caps allow (`checked`, as for metadata).
    pub(crate) fn subscribe(&self, id: ConnId, channel: &str, checked: bool) -> StoreResult<()> {
        let mut live = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        if live.channels.contains(channel) {
            return Ok(());
        }
        if checked && live.channels.len() >= self.caps.max_channels {
            return Err(StoreError::QuotaExceeded);
        }
        live.channels.insert(channel.to_string());
        self.channels.entry(channel.to_string()).or_default().insert(id);
        Ok(())
    }

    pub(crate) fn unsubscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        let mut live = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        let was = live.channels.shift_remove(channel);
        drop(live);
        if was {
            self.leave(channel, id);
        }
        Ok(())
    }

    pub(crate) fn members(&self, channel: &str) -> Vec<ConnId> {
        self.channels.get(channel).map(|m| m.iter().copied().collect()).unwrap_or_default()
    }
}

#[async_trait]
impl Connections for Presence {
    async fn open(&self, record: ConnectionRecord) -> StoreResult<()> {
        Presence::open(self, record);
        Ok(())
    }

    async fn close(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>> {
        Ok(Presence::close(self, id))
    }

    async fn get(&self, id: ConnId) -> StoreResult<Option<ConnectionRecord>> {
        Ok(Presence::get(self, id))
    }

    async fn list(
        &self,
        route: Option<&str>,
        after: Option<ConnId>,
        limit: usize,
    ) -> StoreResult<Vec<ConnectionRecord>> {
        Ok(Presence::list(self, route, after, limit))
    }

    async fn plugin(&self, id: ConnId) -> StoreResult<Option<Arc<str>>> {
        Ok(Presence::plugin(self, id))
    }

    async fn metadata_get(&self, id: ConnId, key: &str) -> StoreResult<Option<String>> {
        Presence::metadata_get(self, id, key)
    }

    async fn metadata_set(&self, id: ConnId, key: &str, value: &str) -> StoreResult<()> {
        Presence::metadata_set(self, id, key, value, true)
    }

    async fn metadata_delete(&self, id: ConnId, key: &str) -> StoreResult<()> {
        Presence::metadata_delete(self, id, key)
    }

    async fn subscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        Presence::subscribe(self, id, channel, true)
    }

    async fn unsubscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        Presence::unsubscribe(self, id, channel)
    }

    async fn members(&self, channel: &str) -> StoreResult<Vec<ConnId>> {
        Ok(Presence::members(self, channel))
    }
}
