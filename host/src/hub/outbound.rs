//! A message on its way to clients, as a mailbox holds it: already framed
//! as the WebSocket transport writes it (a server's frames are unmasked),
//! the frame header beside a reference-counted payload. One publish or
//! broadcast is therefore encoded once: every recipient's socket is written
//! the same header and the same payload bytes, with no copy per recipient.
//! Other transports read the payload.

use bytes::Bytes;

use crate::handler::Message;

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
/// The FIN bit: every message is one frame.
const FIN: u8 = 0x80;
/// The RSV1 bit: the payload is compressed (permessage-deflate).
const RSV1: u8 = 0x40;

/// One outgoing data message. A text payload is valid UTF-8 by
/// construction (it can only be made from a `String` or `&str`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// The frame's header, in its first `header_len` bytes.
    header: [u8; 10],
    header_len: u8,
    payload: Bytes,
}

impl Outbound {
    /// A text message.
    pub fn text(s: impl Into<String>) -> Self {
        Outbound::framed(FIN | OP_TEXT, Bytes::from(s.into()))
    }

    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Outbound::framed(FIN | OP_BINARY, b.into())
    }

    /// The same message with its payload compressed: a frame with RSV1
    /// set, whose payload is `packed`. Only the transport makes these,
    /// right before it writes them to a connection that agreed to
    /// permessage-deflate.
    pub fn deflated(&self, packed: Vec<u8>) -> Self {
        Outbound::framed(self.header[0] | RSV1, Bytes::from(packed))
    }

    /// `payload` as one frame whose first byte is `b0`.
    fn framed(b0: u8, payload: Bytes) -> Self {
        let len = payload.len();
        let mut header = [0; 10];
        header[0] = b0;
        let header_len = match len {
            0..=125 => {
                header[1] = len as u8;
                2
            }
            126..=0xffff => {
                header[1] = 126;
                header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            _ => {
                header[1] = 127;
                header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            }
        };
        Outbound { header, header_len, payload }
    }

    /// Whether it is a text message (its payload is UTF-8).
    pub fn is_text(&self) -> bool {
        self.header[0] & 0x0f == OP_TEXT
    }

    /// The payload, shared (cloning it copies no bytes).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The frame's header as it goes on the wire, before the payload.
    pub fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// A copy as a handler message.
    pub fn to_message(&self) -> Message {
        if self.is_text() {
            Message::Text(String::from_utf8_lossy(&self.payload).into_owned())
        } else {
            Message::Binary(self.payload.to_vec())
        }
    }
}

impl From<Message> for Outbound {
    /// Takes the message's buffer without copying it.
    fn from(m: Message) -> Self {
        match m {
            Message::Text(t) => Outbound::text(t),
            Message::Binary(b) => Outbound::binary(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_shares_its_payload() {
        let m = Outbound::from(Message::Text("héllo".into()));
        assert!(m.is_text());
        assert_eq!(m.to_message(), Message::Text("héllo".into()));
        let copy = m.clone();
        assert_eq!(copy.payload().as_ptr(), m.payload().as_ptr(), "a clone shares the bytes");
        let b = Outbound::from(Message::Binary(vec![0, 255]));
        assert!(!b.is_text());
        assert_eq!(b.to_message(), Message::Binary(vec![0, 255]));
        assert_eq!(b.len(), 2);
        assert!(Outbound::text("").is_empty());
    }

    /// Each frame parses back, with tungstenite's own reader, to the
    /// message it was made from, at every length encoding's edges.
    #[test]
    fn frames_are_what_tungstenite_reads() {
        use std::io::Cursor;
        use tokio_tungstenite::tungstenite::protocol::frame::FrameSocket;
        for len in [0, 1, 125, 126, 127, 0xffff, 0x10000, 200_000] {
            for text in [true, false] {
                let m = if text { Outbound::text("a".repeat(len)) } else { Outbound::binary(vec![7u8; len]) };
                let mut socket = FrameSocket::new(Cursor::new([m.header(), m.payload()].concat()));
                let frame = socket.read(None).expect("a frame").expect("not the end");
                let h = frame.header();
                assert!(h.is_final && !h.rsv1 && !h.rsv2 && !h.rsv3 && h.mask.is_none(), "len {len}");
                let op = if text { OP_TEXT } else { OP_BINARY };
                assert_eq!(u8::from(h.opcode), op, "len {len}");
                assert_eq!(frame.payload(), &m.payload()[..], "len {len}");
                assert_eq!(m.len(), len);
                assert!(socket.read(None).unwrap().is_none(), "nothing after the frame (len {len})");
            }
        }
        let packed = Outbound::text("abc").deflated(b"xy".to_vec());
        let mut socket = FrameSocket::new(Cursor::new([packed.header(), packed.payload()].concat()));
        let frame = socket.read(None).unwrap().unwrap();
        assert!(frame.header().rsv1 && frame.header().is_final);
        assert_eq!(u8::from(frame.header().opcode), OP_TEXT);
        assert_eq!(frame.payload(), b"xy");
    }
}
