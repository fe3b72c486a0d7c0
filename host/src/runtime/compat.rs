//! The frozen `wharf:handler@0.1.0` imports, served by 0.2.0's
//! (`capabilities.rs`): each converts its arguments, calls the 0.2.0
//! import, and converts the answer, so both versions share every check and
//! cap. What 0.2.0 added (positions, replays) is left out of 0.1.0's
//! answers; a 0.1.0 `publish` to a channel that keeps history is kept like
//! any other.

use super::bindings::{v1, v2};
use super::state::InstanceState;
use crate::handler::ConnId;

/// Maps the variants two versions' copies of one enum share by name.
macro_rules! same_variants {
    ($from:path => $to:path : $($v:ident),+) => {
        impl From<$from> for $to {
            fn from(e: $from) -> $to {
                use $from as F;
                use $to as T;
                match e { $(F::$v => T::$v),+ }
            }
        }
    };
}

same_variants!(v2::types::Error => v1::types::Error:
    UnknownConnection, NotAllowed, TooLarge, QuotaExceeded, InvalidArgument, Conflict, Unavailable);
same_variants!(v1::types::LogLevel => v2::types::LogLevel: Trace, Debug, Info, Warn, Error);

type Result<T> = std::result::Result<T, v1::types::Error>;

fn err(e: v2::types::Error) -> v1::types::Error {
    e.into()
}

impl From<v1::types::Message> for v2::types::Message {
    fn from(m: v1::types::Message) -> Self {
        match m {
            v1::types::Message::Text(t) => v2::types::Message::Text(t),
            v1::types::Message::Binary(b) => v2::types::Message::Binary(b),
        }
    }
}

impl v1::types::Host for InstanceState {}

impl v1::connections::Host for InstanceState {
    async fn emit(&mut self, conn: ConnId, msg: v1::types::Message) -> Result<()> {
        v2::connections::Host::emit(self, conn, msg.into()).await.map_err(err)
    }

    async fn close(&mut self, conn: ConnId, code: u16, reason: String) -> Result<()> {
        v2::connections::Host::close(self, conn, code, reason).await.map_err(err)
    }

    async fn get_metadata(&mut self, conn: ConnId, key: String) -> Result<Option<String>> {
        v2::connections::Host::get_metadata(self, conn, key).await.map_err(err)
    }

    async fn set_metadata(&mut self, conn: ConnId, key: String, value: String) -> Result<()> {
        v2::connections::Host::set_metadata(self, conn, key, value).await.map_err(err)
    }

    async fn delete_metadata(&mut self, conn: ConnId, key: String) -> Result<()> {
        v2::connections::Host::delete_metadata(self, conn, key).await.map_err(err)
    }

    async fn info(&mut self, conn: ConnId) -> Result<v1::types::ConnectionInfo> {
        let i = v2::connections::Host::info(self, conn).await.map_err(err)?;
        Ok(v1::types::ConnectionInfo { id: i.id, route: i.route, metadata: i.metadata, channels: i.channels })
    }
}

impl v1::channels::Host for InstanceState {
    async fn broadcast(&mut self, msg: v1::types::Message, except: Option<ConnId>) -> Result<()> {
        v2::channels::Host::broadcast(self, msg.into(), except).await.map_err(err)
    }

    async fn subscribe(&mut self, conn: ConnId, channel: String) -> Result<()> {
        v2::channels::Host::subscribe(self, conn, channel, None).await.map(drop).map_err(err)
    }

    async fn unsubscribe(&mut self, conn: ConnId, channel: String) -> Result<()> {
        v2::channels::Host::unsubscribe(self, conn, channel).await.map_err(err)
    }

    async fn publish(&mut self, channel: String, msg: v1::types::Message) -> Result<()> {
        v2::channels::Host::publish(self, channel, msg.into()).await.map(drop).map_err(err)
    }

    async fn members(&mut self, channel: String) -> Result<Vec<ConnId>> {
        v2::channels::Host::members(self, channel).await.map_err(err)
    }
}

impl v1::kv::Host for InstanceState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>> {
        v2::kv::Host::get(self, key).await.map_err(err)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<()> {
        v2::kv::Host::set(self, key, value, ttl_ms).await.map_err(err)
    }

    async fn delete(&mut self, key: String) -> Result<bool> {
        v2::kv::Host::delete(self, key).await.map_err(err)
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64> {
        v2::kv::Host::increment(self, key, delta).await.map_err(err)
    }

    async fn compare_and_swap(&mut self, key: String, expected: Option<Vec<u8>>, value: Vec<u8>) -> Result<bool> {
        v2::kv::Host::compare_and_swap(self, key, expected, value).await.map_err(err)
    }

    async fn list_keys(&mut self, prefix: String, cursor: Option<String>, limit: u32) -> Result<Vec<String>> {
        v2::kv::Host::list_keys(self, prefix, cursor, limit).await.map_err(err)
    }
}

impl v1::logging::Host for InstanceState {
    async fn log(&mut self, level: v1::types::LogLevel, text: String) {
        v2::logging::Host::log(self, level.into(), text).await
    }
}
