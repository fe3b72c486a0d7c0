//! What hosts send each other through Redis, and its wire format.
//!
//! A compact binary frame (a JSON body would inflate binary messages):
//! `version u8 | kind u8 | origin host u32 | fields`, integers big-endian,
//! strings and payloads as `u32 length | bytes`, a message as
//! `0 text | 1 binary` then its payload.

use std::sync::Arc;

use super::store::RecordChange;
use crate::handler::{ConnId, Effect, Message};
use crate::history::Position;

const VERSION: u8 = 1;

/// One delivery or request for other hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope {
    /// A handler's effect for this host's connections: a fan-out (publish,
    /// broadcast) to its members, or an effect on one connection it holds.
    /// The receiving host applies it to its registry as the sending host
    /// applied it to its own.
    Effect(Effect),
    /// Another host changed the record of a connection of this host in the
    /// store; update this host's copy.
    Record {
        /// The connection.
        conn: ConnId,
        /// What changed.
        change: RecordChange,
    },
    /// Asks the host holding `conns` when their clients last sent a
    /// message; it answers [`Envelope::Activity`] to the asking host.
    ActivityQuery {
        /// Matches the answer to the question.
        req: u64,
        /// Connections of the asked host.
        conns: Vec<ConnId>,
    },
    /// The answer to [`Envelope::ActivityQuery`] `req`: for each of its
    /// connections still open, when its client last sent a message (Unix
    /// milliseconds).
    Activity {
        /// The question's `req`.
        req: u64,
        /// (connection, last activity) pairs.
        seen: Vec<(ConnId, u64)>,
    },
    /// A publication to a channel that keeps history, at its position.
    /// Written by the Redis script that kept it ([`recorded_prefix`]), from
    /// no host ([`STORE_ORIGIN`]): every host delivers it, the publishing
    /// one included, so all deliver one channel's publications in offset
    /// order. Its offset is 20 ASCII digits.
    Recorded {
        /// The qualified channel.
        channel: String,
        /// Its position.
        pos: Position,
        /// The message.
        msg: Message,
    },
}

/// The origin of frames the store's scripts write: no host has it.
pub const STORE_ORIGIN: u32 = u32::MAX;

/// Kind of [`Envelope::Recorded`].
const RECORDED: u8 = 10;

/// The start of an [`Envelope::Recorded`] frame for `channel`, before its
/// offset: the Redis script that keeps the publication appends the rest.
pub fn recorded_prefix(channel: &str) -> Vec<u8> {
    let mut out = header(RECORDED, STORE_ORIGIN);
    put_bytes(&mut out, channel.as_bytes());
    out
}

/// A frame that is not a valid envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed cluster frame: {0}")]
pub struct Malformed(&'static str);

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_msg(out: &mut Vec<u8>, m: &Message) {
    match m {
        Message::Text(t) => {
            out.push(0);
            put_bytes(out, t.as_bytes());
        }
        Message::Binary(b) => {
            out.push(1);
            put_bytes(out, b);
        }
    }
}

fn header(kind: u8, origin: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&origin.to_be_bytes());
    out
}

/// The frame of [`Envelope::Effect`] for `effect`, sent by host `origin`,
/// without cloning the effect.
pub fn encode_effect(effect: &Effect, origin: u32) -> Vec<u8> {
    let kind = match effect {
        Effect::Publish { .. } => 1,
        Effect::Broadcast { .. } => 2,
        Effect::Emit { .. } => 3,
        Effect::Close { .. } => 4,
        // A replay is finished only by the host holding the connection;
        // another host can only make it a member.
        Effect::Subscribe { .. } | Effect::Resume { .. } => 5,
        Effect::Unsubscribe { .. } => 6,
        Effect::Forward { .. } => unreachable!("a forward is taken by its route's pipeline and never leaves the host"),
    };
    let mut out = header(kind, origin);
    match effect {
        Effect::Publish { channel, msg } => {
            put_bytes(&mut out, channel.as_bytes());
            put_msg(&mut out, msg);
        }
        Effect::Broadcast { route, msg, except } => {
            put_bytes(&mut out, route.as_bytes());
            out.extend_from_slice(&except.map_or(0, |e| e).to_be_bytes());
            out.push(u8::from(except.is_some()));
            put_msg(&mut out, msg);
        }
        Effect::Emit { to, msg } => {
            out.extend_from_slice(&to.to_be_bytes());
            put_msg(&mut out, msg);
        }
        Effect::Close { conn, code, reason } => {
            out.extend_from_slice(&conn.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            put_bytes(&mut out, reason.as_bytes());
        }
        Effect::Subscribe { conn, channel }
        | Effect::Resume { conn, channel, .. }
        | Effect::Unsubscribe { conn, channel } => {
            out.extend_from_slice(&conn.to_be_bytes());
            put_bytes(&mut out, channel.as_bytes());
        }
        Effect::Forward { .. } => {}
    }
    out
}

impl Envelope {
    /// The frame for this envelope, sent by host `origin`.
    pub fn encode(&self, origin: u32) -> Vec<u8> {
        match self {
            Envelope::Effect(effect) => encode_effect(effect, origin),
            Envelope::Record { conn, change } => {
                let mut out = header(7, origin);
                out.extend_from_slice(&conn.to_be_bytes());
                let (op, a, b) = match change {
                    RecordChange::MetadataSet { key, value } => (0, key, value.as_str()),
                    RecordChange::MetadataDelete { key } => (1, key, ""),
                    RecordChange::Subscribe { channel } => (2, channel, ""),
                    RecordChange::Unsubscribe { channel } => (3, channel, ""),
                };
                out.push(op);
                put_bytes(&mut out, a.as_bytes());
                put_bytes(&mut out, b.as_bytes());
                out
            }
            Envelope::ActivityQuery { req, conns } => {
                let mut out = header(8, origin);
                out.extend_from_slice(&req.to_be_bytes());
                out.extend_from_slice(&(conns.len() as u32).to_be_bytes());
                for c in conns {
                    out.extend_from_slice(&c.to_be_bytes());
                }
                out
            }
            Envelope::Recorded { channel, pos, msg } => {
                let mut out = recorded_prefix(channel);
                out[2..6].copy_from_slice(&origin.to_be_bytes());
                out.extend_from_slice(format!("{:020}", pos.offset).as_bytes());
                put_bytes(&mut out, pos.epoch.as_bytes());
                put_msg(&mut out, msg);
                out
            }
            Envelope::Activity { req, seen } => {
                let mut out = header(9, origin);
                out.extend_from_slice(&req.to_be_bytes());
                out.extend_from_slice(&(seen.len() as u32).to_be_bytes());
                for (c, at) in seen {
                    out.extend_from_slice(&c.to_be_bytes());
                    out.extend_from_slice(&at.to_be_bytes());
                }
                out
            }
        }
    }

    /// The envelope in a frame, and the host that sent it.
    pub fn decode(frame: &[u8]) -> Result<(u32, Envelope), Malformed> {
        let mut r = Reader(frame);
        if r.u8()? != VERSION {
            return Err(Malformed("unknown version"));
        }
        let kind = r.u8()?;
        let origin = u32::from_be_bytes(r.array()?);
        let env = match kind {
            1 => Envelope::Effect(Effect::Publish { channel: r.string()?, msg: r.msg()? }),
            2 => {
                let route: Arc<str> = r.string()?.into();
                let except = u64::from_be_bytes(r.array()?);
                let has_except = r.u8()? == 1;
                Envelope::Effect(Effect::Broadcast { route, except: has_except.then_some(except), msg: r.msg()? })
            }
            3 => Envelope::Effect(Effect::Emit { to: r.u64()?, msg: r.msg()? }),
            4 => Envelope::Effect(Effect::Close {
                conn: r.u64()?,
                code: u16::from_be_bytes(r.array()?),
                reason: r.string()?,
            }),
            5 => Envelope::Effect(Effect::Subscribe { conn: r.u64()?, channel: r.string()? }),
            6 => Envelope::Effect(Effect::Unsubscribe { conn: r.u64()?, channel: r.string()? }),
            7 => {
                let conn = u64::from_be_bytes(r.array()?);
                let op = r.u8()?;
                let (a, b) = (r.string()?, r.string()?);
                let change = match op {
                    0 => RecordChange::MetadataSet { key: a, value: b },
                    1 => RecordChange::MetadataDelete { key: a },
                    2 => RecordChange::Subscribe { channel: a },
                    3 => RecordChange::Unsubscribe { channel: a },
                    _ => return Err(Malformed("unknown record change")),
                };
                Envelope::Record { conn, change }
            }
            8 => {
                let req = r.u64()?;
                let n = r.count(8)?;
                Envelope::ActivityQuery { req, conns: (0..n).map(|_| r.u64()).collect::<Result<_, _>>()? }
            }
            9 => {
                let req = r.u64()?;
                let n = r.count(16)?;
                Envelope::Activity { req, seen: (0..n).map(|_| Ok((r.u64()?, r.u64()?))).collect::<Result<_, _>>()? }
            }
            RECORDED => {
                let channel = r.string()?;
                let digits = std::str::from_utf8(r.take(20)?).map_err(|_| Malformed("offset"))?;
                let offset = digits.parse().map_err(|_| Malformed("offset"))?;
                let pos = Position { offset, epoch: r.string()?.into() };
                Envelope::Recorded { channel, pos, msg: r.msg()? }
            }
            _ => return Err(Malformed("unknown kind")),
        };
        if !r.0.is_empty() {
            return Err(Malformed("trailing bytes"));
        }
        Ok((origin, env))
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A count of items of `size` bytes each that the rest of the frame
    /// can hold.
    fn count(&mut self, size: usize) -> Result<usize, Malformed> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        if n.saturating_mul(size) > self.0.len() {
            return Err(Malformed("truncated"));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, Malformed> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        Ok(self.take(n)?.to_vec())
    }

    fn string(&mut self) -> Result<String, Malformed> {
        String::from_utf8(self.bytes()?).map_err(|_| Malformed("text is not UTF-8"))
    }

    fn msg(&mut self) -> Result<Message, Malformed> {
        match self.u8()? {
            0 => Ok(Message::Text(self.string()?)),
            1 => Ok(Message::Binary(self.bytes()?)),
            _ => Err(Malformed("unknown message type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_round_trips() {
        let all = [
            Envelope::Effect(Effect::Publish { channel: "room".into(), msg: Message::Text("héllo".into()) }),
            Envelope::Effect(Effect::Broadcast {
                route: "/chat".into(),
                msg: Message::Binary(vec![0, 255]),
                except: Some(7),
            }),
            Envelope::Effect(Effect::Broadcast {
                route: "/chat".into(),
                msg: Message::Text(String::new()),
                except: None,
            }),
            Envelope::Effect(Effect::Emit { to: u64::MAX, msg: Message::Binary(vec![]) }),
            Envelope::Effect(Effect::Close { conn: 1 << 40 | 3, code: 4000, reason: "bye".into() }),
            Envelope::Effect(Effect::Subscribe { conn: 9, channel: "c".into() }),
            Envelope::Effect(Effect::Unsubscribe { conn: 9, channel: "c".into() }),
            Envelope::Record { conn: 4, change: RecordChange::MetadataSet { key: "k".into(), value: "v".into() } },
            Envelope::Record { conn: 4, change: RecordChange::MetadataDelete { key: "k".into() } },
            Envelope::Record { conn: 4, change: RecordChange::Subscribe { channel: "c".into() } },
            Envelope::Record { conn: 4, change: RecordChange::Unsubscribe { channel: "c".into() } },
            Envelope::ActivityQuery { req: 1, conns: vec![1 << 40 | 1, 1 << 40 | 2] },
            Envelope::ActivityQuery { req: u64::MAX, conns: vec![] },
            Envelope::Activity { req: 1, seen: vec![(1 << 40 | 1, 1_700_000_000_000)] },
            Envelope::Activity { req: 2, seen: vec![] },
            Envelope::Recorded {
                channel: "chat:room".into(),
                pos: Position { offset: u64::MAX, epoch: "0123456789abcdef".into() },
                msg: Message::Binary(vec![0, 1]),
            },
            Envelope::Recorded {
                channel: String::new(),
                pos: Position { offset: 1, epoch: "".into() },
                msg: Message::Text("é".into()),
            },
        ];
        for env in all {
            let frame = env.encode(12);
            assert_eq!(Envelope::decode(&frame), Ok((12, env.clone())));
            assert!(Envelope::decode(&frame[..frame.len() - 1]).is_err(), "truncated {env:?}");
            let mut longer = frame.clone();
            longer.push(0);
            assert_eq!(Envelope::decode(&longer), Err(Malformed("trailing bytes")));
        }
    }

    #[test]
    fn a_count_larger_than_the_frame_is_refused_before_allocating() {
        let mut frame = Envelope::ActivityQuery { req: 1, conns: vec![] }.encode(3);
        let n = frame.len();
        frame[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Envelope::decode(&frame), Err(Malformed("truncated")));
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            ".{0,40}".prop_map(Message::Text),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Message::Binary)
        ]
    }

    fn effect() -> impl Strategy<Value = Effect> {
        prop_oneof![
            (".{0,20}", message()).prop_map(|(channel, msg)| Effect::Publish { channel, msg }),
            (".{0,20}", message(), any::<Option<u64>>()).prop_map(|(route, msg, except)| Effect::Broadcast {
                route: route.into(),
                msg,
                except
            }),
            (any::<u64>(), message()).prop_map(|(to, msg)| Effect::Emit { to, msg }),
            (any::<u64>(), any::<u16>(), ".{0,20}").prop_map(|(conn, code, reason)| Effect::Close {
                conn,
                code,
                reason
            }),
            (any::<u64>(), ".{0,20}").prop_map(|(conn, channel)| Effect::Subscribe { conn, channel }),
            (any::<u64>(), ".{0,20}").prop_map(|(conn, channel)| Effect::Unsubscribe { conn, channel }),
        ]
    }

    proptest! {
        /// Every effect crosses to another host as itself: what the
        /// receiving host applies is what the sending host applied.
        #[test]
        fn every_effect_round_trips(effect in effect(), origin in any::<u32>()) {
            let frame = encode_effect(&effect, origin);
            prop_assert_eq!(&frame, &Envelope::Effect(effect.clone()).encode(origin));
            prop_assert_eq!(Envelope::decode(&frame), Ok((origin, Envelope::Effect(effect))));
        }

        #[test]
        fn random_frames_are_refused_without_panicking(frame in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Envelope::decode(&frame);
        }
    }
}
