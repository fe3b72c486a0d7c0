//! Open connections and channel membership of this host, in memory: the
//! part of the store that lives and dies with the process holding the
//! sockets. The Redis back end keeps one too, for this host's own
//! connections.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;

use super::{ConnectionRecord, Connections, StoreError, StoreResult};
use crate::conn_id::ConnId;

/// Connection records and channel members.
#[derive(Default)]
pub struct Presence {
    conns: DashMap<ConnId, ConnectionRecord>,
    channels: DashMap<String, BTreeSet<ConnId>>,
}

/// The methods of [`Connections`], without waiting.
impl Presence {
    pub(crate) fn open(&self, record: ConnectionRecord) {
        for channel in &record.channels {
            self.channels.entry(channel.clone()).or_default().insert(record.id);
        }
        self.conns.insert(record.id, record);
    }

    pub(crate) fn close(&self, id: ConnId) -> Option<ConnectionRecord> {
        let (_, record) = self.conns.remove(&id)?;
        for channel in &record.channels {
            self.leave(channel, id);
        }
        Some(record)
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
        self.conns.iter().map(|r| r.clone()).collect()
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<ConnectionRecord> {
        self.conns.get(&id).map(|r| r.clone())
    }

    pub(crate) fn list(&self, route: Option<&str>, after: Option<ConnId>, limit: usize) -> Vec<ConnectionRecord> {
        let mut ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|r| route.is_none_or(|route| &*r.route == route) && after.is_none_or(|a| r.id > a))
            .map(|r| r.id)
            .collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|id| self.get(id)).take(limit).collect()
    }

    pub(crate) fn plugin(&self, id: ConnId) -> Option<Arc<str>> {
        self.conns.get(&id).map(|r| r.plugin.clone())
    }

    pub(crate) fn metadata_get(&self, id: ConnId, key: &str) -> StoreResult<Option<String>> {
        let rec = self.conns.get(&id).ok_or(StoreError::UnknownConnection)?;
        Ok(rec.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    pub(crate) fn metadata_set(&self, id: ConnId, key: &str, value: &str) -> StoreResult<()> {
        let mut rec = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        match rec.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => rec.metadata.push((key.to_string(), value.to_string())),
        }
        Ok(())
    }

    pub(crate) fn metadata_delete(&self, id: ConnId, key: &str) -> StoreResult<()> {
        let mut rec = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        rec.metadata.retain(|(k, _)| k != key);
        Ok(())
    }

    pub(crate) fn subscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        let mut rec = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        if !rec.channels.iter().any(|c| c == channel) {
            rec.channels.push(channel.to_string());
            self.channels.entry(channel.to_string()).or_default().insert(id);
        }
        Ok(())
    }

    pub(crate) fn unsubscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        let mut rec = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        rec.channels.retain(|c| c != channel);
        drop(rec);
        self.leave(channel, id);
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
        Presence::metadata_set(self, id, key, value)
    }

    async fn metadata_delete(&self, id: ConnId, key: &str) -> StoreResult<()> {
        Presence::metadata_delete(self, id, key)
    }

    async fn subscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        Presence::subscribe(self, id, channel)
    }

    async fn unsubscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        Presence::unsubscribe(self, id, channel)
    }

    async fn members(&self, channel: &str) -> StoreResult<Vec<ConnId>> {
        Ok(Presence::members(self, channel))
    }
}
