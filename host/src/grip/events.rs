//! The `application/websocket-events` body of WebSocket-over-HTTP: a
//! sequence of events, each a line `NAME` or `NAME HEXLEN` ending in CRLF,
//! the latter followed by that many bytes of content and a CRLF.
//!
//! ```text
//! TEXT 5\r\nhello\r\nCLOSE 2\r\n\x03\xe8\r\n
//! ```

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

/// The content type of request and response bodies.
pub const CONTENT_TYPE: &str = "application/websocket-events";

/// Longest event name line accepted (name, space, hex length).
const MAX_LINE: usize = 64;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The connection opens (request) or is accepted (response).
    Open,
    /// A text message (the content is UTF-8 when it comes from a client).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping, with its payload.
    Ping(Bytes),
    /// A pong, with its payload.
    Pong(Bytes),
    /// A close: the code (absent when the close frame had none) and reason.
    Close(Option<u16>, Bytes),
    /// The connection ended without a close (request), or is to be dropped
    /// (response).
    Disconnect,
}

/// Why a body is not a sequence of events.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An event line without its CRLF.
    #[error("event {index}: line without CRLF")]
    Unterminated {
        /// The event's position, from 0.
        index: usize,
    },
    /// A length that is not hexadecimal.
    #[error("event {index}: bad content length {length:?}")]
    BadLength {
        /// The event's position, from 0.
        index: usize,
        /// The length as written.
        length: String,
    },
    /// Content shorter than its length, or not followed by CRLF.
    #[error("event {index}: content of {length} bytes is cut short")]
    Truncated {
        /// The event's position, from 0.
        index: usize,
        /// The declared length.
        length: usize,
    },
    /// A name this protocol does not define.
    #[error("event {index}: unknown event {name:?}")]
    UnknownEvent {
        /// The event's position, from 0.
        index: usize,
        /// The name as written.
        name: String,
    },
    /// A close whose content is one byte (a code needs two).
    #[error("event {index}: CLOSE content of 1 byte")]
    BadClose {
        /// The event's position, from 0.
        index: usize,
    },
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Open => "OPEN",
            Event::Text(_) => "TEXT",
            Event::Binary(_) => "BINARY",
            Event::Ping(_) => "PING",
            Event::Pong(_) => "PONG",
            Event::Close(..) => "CLOSE",
            Event::Disconnect => "DISCONNECT",
        }
    }

    /// The bytes of its content, when it has any. Pings and pongs with an
    /// empty payload and a close without a code are written without content,
    /// as gateways and backends expect; text and binary always carry a
    /// length, even 0.
    fn content(&self) -> Option<Bytes> {
        match self {
            Event::Open | Event::Disconnect => None,
            Event::Text(b) | Event::Binary(b) => Some(b.clone()),
            Event::Ping(b) | Event::Pong(b) => (!b.is_empty()).then(|| b.clone()),
            Event::Close(None, _) => None,
            Event::Close(Some(code), reason) => {
                let mut c = BytesMut::with_capacity(2 + reason.len());
                c.put_u16(*code);
                c.put_slice(reason);
                Some(c.freeze())
            }
        }
    }

    /// How many bytes it takes encoded.
    pub fn encoded_len(&self) -> usize {
        let name = self.name().len() + 2;
        match self {
            Event::Text(b) | Event::Binary(b) => name + 1 + hex_len(b.len()) + b.len() + 2,
            _ => match self.content() {
                Some(c) => name + 1 + hex_len(c.len()) + c.len() + 2,
                None => name,
            },
        }
    }
}

fn hex_len(n: usize) -> usize {
    if n == 0 { 1 } else { (usize::BITS - n.leading_zeros()).div_ceil(4) as usize }
}

/// Appends `events`, encoded, to `out`.
pub fn encode_into(events: &[Event], out: &mut BytesMut) {
    out.reserve(events.iter().map(Event::encoded_len).sum());
    for e in events {
        out.put_slice(e.name().as_bytes());
        if let Some(content) = e.content() {
            // BytesMut's fmt::Write cannot fail: it grows as needed.
            let _ = write!(out, " {:X}\r\n", content.len());
            out.put_slice(&content);
        }
        out.put_slice(b"\r\n");
    }
}

/// `events`, encoded.
pub fn encode(events: &[Event]) -> Bytes {
    let mut out = BytesMut::new();
    encode_into(events, &mut out);
    out.freeze()
}

/// The events of `body`, in order; the content of each shares `body`'s
/// buffer.
pub fn decode(body: &Bytes) -> Result<Vec<Event>, DecodeError> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let index = events.len();
        let rest = &body[at..];
        let window = &rest[..rest.len().min(MAX_LINE + 2)];
        let Some(eol) = window.windows(2).position(|w| w == b"\r\n") else {
            return Err(DecodeError::Unterminated { index });
        };
        let line = &rest[..eol];
        at += eol + 2;
        let (name, content) = match line.iter().position(|&b| b == b' ') {
            None => (line, None),
            Some(sp) => {
                let hex = &line[sp + 1..];
                let length = std::str::from_utf8(hex)
                    .ok()
                    .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| usize::from_str_radix(h, 16).ok())
                    .ok_or_else(|| DecodeError::BadLength { index, length: String::from_utf8_lossy(hex).into() })?;
                let end = at.checked_add(length).filter(|&end| end.checked_add(2).is_some_and(|e| e <= body.len()));
                let Some(end) = end.filter(|&end| &body[end..end + 2] == b"\r\n") else {
                    return Err(DecodeError::Truncated { index, length });
                };
                let content = body.slice(at..end);
                at = end + 2;
                (&line[..sp], Some(content))
            }
        };
        let content_or_empty = || content.clone().unwrap_or_default();
        let event = match name {
            b"OPEN" => Event::Open,
            b"TEXT" => Event::Text(content_or_empty()),
            b"BINARY" => Event::Binary(content_or_empty()),
            b"PING" => Event::Ping(content_or_empty()),
            b"PONG" => Event::Pong(content_or_empty()),
            b"DISCONNECT" => Event::Disconnect,
            b"CLOSE" => match content.as_deref() {
                None | Some([]) => Event::Close(None, Bytes::new()),
                Some([_]) => return Err(DecodeError::BadClose { index }),
                Some([hi, lo, ..]) => {
                    let reason = content.as_ref().map(|c| c.slice(2..)).unwrap_or_default();
                    Event::Close(Some(u16::from_be_bytes([*hi, *lo])), reason)
                }
            },
            other => return Err(DecodeError::UnknownEvent { index, name: String::from_utf8_lossy(other).into() }),
        };
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn encodes_as_the_protocol_shows() {
        let body = encode(&[
            Event::Open,
            Event::Text(b(b"hello")),
            Event::Text(b(b"")),
            Event::Ping(b(b"")),
            Event::Close(Some(1000), b(b"")),
            Event::Disconnect,
        ]);
        assert_eq!(
            &body[..],
            b"OPEN\r\nTEXT 5\r\nhello\r\nTEXT 0\r\n\r\nPING\r\nCLOSE 2\r\n\x03\xe8\r\nDISCONNECT\r\n"
        );
    }

    #[test]
    fn decodes_what_gripcontrol_writes() {
        // gripcontrol's encode_websocket_events writes lower-case hex.
        let body = b(b"OPEN\r\nTEXT 1c\r\nhere is another nice message\r\nTEXT 2\r\nc:\r\nCLOSE 4\r\n\x0f\xa1ok\r\n");
        assert_eq!(
            decode(&body).unwrap(),
            vec![
                Event::Open,
                Event::Text(b(b"here is another nice message")),
                Event::Text(b(b"c:")),
                Event::Close(Some(4001), b(b"ok")),
            ]
        );
        assert_eq!(decode(&b(b"")).unwrap(), vec![]);
        assert_eq!(decode(&b(b"CLOSE\r\n")).unwrap(), vec![Event::Close(None, Bytes::new())]);
    }

    #[test]
    fn refuses_garbage_with_the_reason() {
        let cases: [(&[u8], DecodeError); 6] = [
            (b"OPEN", DecodeError::Unterminated { index: 0 }),
            (b"OPEN\r\nTEXT zz\r\nab\r\n", DecodeError::BadLength { index: 1, length: "zz".into() }),
            (b"TEXT 5\r\nabc\r\n", DecodeError::Truncated { index: 0, length: 5 }),
            (b"TEXT 2\r\nabcd\r\n", DecodeError::Truncated { index: 0, length: 2 }),
            (b"HELLO\r\n", DecodeError::UnknownEvent { index: 0, name: "HELLO".into() }),
            (b"CLOSE 1\r\nx\r\n", DecodeError::BadClose { index: 0 }),
        ];
        for (body, want) in cases {
            assert_eq!(decode(&b(body)), Err(want), "{:?}", String::from_utf8_lossy(body));
        }
        let huge = b(b"TEXT FFFFFFFFFFFFFFFF\r\n");
        assert!(matches!(decode(&huge), Err(DecodeError::Truncated { .. })));
        let long_line = Bytes::from(vec![b'A'; 10_000]);
        assert_eq!(decode(&long_line), Err(DecodeError::Unterminated { index: 0 }));
    }

    fn event() -> impl Strategy<Value = Event> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
        prop_oneof![
            Just(Event::Open),
            Just(Event::Disconnect),
            bytes().prop_map(Event::Text),
            bytes().prop_map(Event::Binary),
            bytes().prop_map(Event::Ping),
            bytes().prop_map(Event::Pong),
            (any::<u16>(), bytes()).prop_map(|(c, r)| Event::Close(Some(c), r)),
            Just(Event::Close(None, Bytes::new())),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(events in proptest::collection::vec(event(), 0..8)) {
            let body = encode(&events);
            prop_assert_eq!(body.len(), events.iter().map(Event::encoded_len).sum::<usize>());
            prop_assert_eq!(decode(&body).unwrap(), events);
        }

        #[test]
        fn never_panics_on_any_body(body in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&Bytes::from(body));
        }
    }
}
