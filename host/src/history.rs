//! Channel history, the plain parts: a publication's [`Position`] (offset
//! and epoch), what a read answers ([`Page`]), the `[[channels]]` rules that
//! say which channels keep how much ([`Rules`]), and the JSON stamp
//! `publish-stamped` adds. The back ends are `store::History`; the hub's
//! `hub::history` puts publishing, reading and replaying together.

use std::sync::Arc;
use std::time::Duration;

use crate::handler::Message;

/// Most publications one channel may be configured to keep.
pub const MAX_SIZE: usize = 10_000;
/// Most bytes one channel may be configured to keep.
pub const MAX_BYTES: usize = 64 << 20;
/// Most publications one read answers.
pub const MAX_READ: usize = 1000;
/// How long a channel's offset and epoch outlive its last publication once
/// every publication has expired; after it, the next publication starts a
/// new epoch.
pub const META_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where a publication sits in its channel's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// One more with every publication; the first is 1, 0 is "before it".
    pub offset: u64,
    /// One unbroken run of the channel's history; a new one whenever the
    /// history was lost.
    pub epoch: Arc<str>,
}

/// One kept publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// Its offset in the page's epoch.
    pub offset: u64,
    /// The message as members received it.
    pub msg: Message,
}

/// What a read of a channel's history answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Oldest first.
    pub publications: Vec<Publication>,
    /// The channel's position now (offset 0: none in this epoch).
    pub latest: Position,
    /// Whether every publication after the asked position is in
    /// `publications` or after it: `false` when it is older than what is
    /// kept, or of another epoch.
    pub recovered: bool,
}

/// How much one channel keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most publications.
    pub size: usize,
    /// How long each is kept.
    pub ttl: Duration,
    /// Most bytes of payload together.
    pub max_bytes: usize,
}

/// One `[[channels]]` table: the channels it covers and what they keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// A channel name as plugins name it, or a prefix when it ends in `*`.
    pub pattern: String,
    /// Only channels of this namespace; any when `None`.
    pub namespace: Option<String>,
    /// What the channels keep.
    pub limits: Limits,
}

impl Rule {
    fn matches(&self, namespace: &str, name: &str) -> bool {
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return false;
        }
        match self.pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.pattern,
        }
    }
}

/// The `[[channels]]` rules in config order: the first that matches wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    /// What qualified channel `channel` keeps, if anything.
    pub fn limits(&self, channel: &str) -> Option<Limits> {
        let (namespace, name) = crate::channel::split(channel);
        self.0.iter().find(|r| r.matches(namespace, name)).map(|r| r.limits)
    }
}

/// A new epoch: 16 hex digits, different on every call (the clock and a
/// counter through the standard library's randomly keyed hasher).
pub fn new_epoch() -> Arc<str> {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    Arc::from(format!("{:016x}", h.finish()))
}

/// `json` is not one JSON object.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a JSON object")]
pub struct NotAnObject;

/// The inside of JSON object `json` after its `{`, once it is checked to be
/// exactly one object: what [`stamp`] writes the position in front of.
pub fn object_body(json: &str) -> Result<&str, NotAnObject> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|_| NotAnObject)?;
    if !value.is_object() {
        return Err(NotAnObject);
    }
    let body = json.trim_start().strip_prefix('{').ok_or(NotAnObject)?;
    Ok(body)
}

/// The object whose inside after `{` is `body` with `"offset"` and
/// `"epoch"` as its first fields.
pub fn stamp(body: &str, pos: &Position) -> String {
    let sep = if body.trim_start().starts_with('}') { "" } else { "," };
    format!(r#"{{"offset":{},"epoch":"{}"{sep}{body}"#, pos.offset, pos.epoch)
}

/// A message's payload size, as the byte caps count it.
pub fn size(msg: &Message) -> usize {
    match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, namespace: Option<&str>, size: usize) -> Rule {
        Rule {
            pattern: pattern.into(),
            namespace: namespace.map(Into::into),
            limits: Limits { size, ttl: Duration::from_secs(1), max_bytes: 1 << 20 },
        }
    }

    #[test]
    fn the_first_matching_rule_wins_by_name_prefix_and_namespace() {
        let rules = Rules(vec![rule("lobby", None, 1), rule("room*", Some("chat"), 2), rule("room*", None, 3)]);
        assert_eq!(rules.limits("chat:lobby").map(|l| l.size), Some(1));
        assert_eq!(rules.limits("chat:room-1").map(|l| l.size), Some(2));
        assert_eq!(rules.limits("game:room").map(|l| l.size), Some(3));
        assert_eq!(rules.limits("chat:lobby2"), None, "an exact name is exact");
        assert_eq!(rules.limits("chat:roo"), None);
        assert_eq!(Rules(vec![rule("*", None, 4)]).limits("x:anything").map(|l| l.size), Some(4));
    }

    #[test]
    fn a_stamp_puts_the_position_first_in_one_object() {
        let pos = Position { offset: 7, epoch: "e1".into() };
        let stamped = stamp(object_body(r#" {"text":"hi"}"#).unwrap(), &pos);
        assert_eq!(stamped, r#"{"offset":7,"epoch":"e1","text":"hi"}"#);
        let v: serde_json::Value = serde_json::from_str(&stamped).unwrap();
        assert_eq!(v["offset"], 7);
        assert_eq!(stamp(object_body("{ }").unwrap(), &pos), r#"{"offset":7,"epoch":"e1" }"#);
        serde_json::from_str::<serde_json::Value>(&stamp(object_body("{ }").unwrap(), &pos)).unwrap();
        for bad in ["[1]", "\"s\"", "{", "{} {}", "", "1"] {
            assert_eq!(object_body(bad), Err(NotAnObject), "{bad}");
        }
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch(), new_epoch());
        assert_eq!(new_epoch().len(), 16);
    }
}
