//! Open connections and channel membership of this host, in memory: the
//! part of the store that lives and dies with the process holding the
//! sockets.

use std::collections::BTreeSet;
use std::sync::Arc;

use dashmap::DashMap;

use super::{ConnectionRecord, StoreError, StoreResult};
use crate::conn_id::ConnId;

/// Connection records and channel members.
#[derive(Default)]
pub(crate) struct Presence {
    conns: DashMap<ConnId, ConnectionRecord>,
    channels: DashMap<String, BTreeSet<ConnId>>,
}

impl Presence {
    pub fn open(&self, record: ConnectionRecord) {
        for channel in &record.channels {
            self.channels.entry(channel.clone()).or_default().insert(record.id);
        }
        self.conns.insert(record.id, record);
    }

    pub fn close(&self, id: ConnId) -> Option<ConnectionRecord> {
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

    pub fn contains(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    pub fn all(&self) -> Vec<ConnectionRecord> {
        self.conns.iter().map(|r| r.clone()).collect()
    }

    pub fn get(&self, id: ConnId) -> Option<ConnectionRecord> {
        self.conns.get(&id).map(|r| r.clone())
    }

    pub fn list(&self, route: Option<&str>, after: Option<ConnId>, limit: usize) -> Vec<ConnectionRecord> {
        let mut ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|r| route.is_none_or(|route| &*r.route == route) && after.is_none_or(|a| r.id > a))
            .map(|r| r.id)
            .collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|id| self.get(id)).take(limit).collect()
    }

    pub fn plugin(&self, id: ConnId) -> Option<Arc<str>> {
        self.conns.get(&id).map(|r| r.plugin.clone())
    }

    pub fn metadata_get(&self, id: ConnId, key: &str) -> StoreResult<Option<String>> {
        let rec = self.conns.get(&id).ok_or(StoreError::UnknownConnection)?;
        Ok(rec.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    pub fn metadata_set(&self, id: ConnId, key: &str, value: &str) -> StoreResult<()> {
        let mut rec = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        match rec.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => rec.metadata.push((key.to_string(), value.to_string())),
        }
        Ok(())
    }

    pub fn metadata_delete(&self, id: ConnId, key: &str) -> StoreResult<()> {
        let mut rec = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        rec.metadata.retain(|(k, _)| k != key);
        Ok(())
    }

    pub fn subscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        let mut rec = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        if !rec.channels.iter().any(|c| c == channel) {
            rec.channels.push(channel.to_string());
            self.channels.entry(channel.to_string()).or_default().insert(id);
        }
        Ok(())
    }

    pub fn unsubscribe(&self, id: ConnId, channel: &str) -> StoreResult<()> {
        let mut rec = self.conns.get_mut(&id).ok_or(StoreError::UnknownConnection)?;
        rec.channels.retain(|c| c != channel);
        drop(rec);
        self.leave(channel, id);
        Ok(())
    }

    pub fn members(&self, channel: &str) -> Vec<ConnId> {
        self.channels.get(channel).map(|m| m.iter().copied().collect()).unwrap_or_default()
    }
}
