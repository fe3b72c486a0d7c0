//! A message on its way to clients, as a mailbox holds it: the payload is
//! reference-counted, so one publish or broadcast is encoded once and shared
//! by every recipient's mailbox.

use bytes::Bytes;

use crate::handler::Message;

/// One outgoing data message. A text payload is valid UTF-8 by
/// construction (it can only be made from a `String` or `&str`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    text: bool,
    payload: Bytes,
}

impl Outbound {
    /// A text message.
    pub fn text(s: impl Into<String>) -> Self {
        Outbound { text: true, payload: Bytes::from(s.into()) }
    }

    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Outbound { text: false, payload: b.into() }
    }

    /// Whether it is a text message (its payload is UTF-8).
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The payload, shared (cloning it copies no bytes).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// A copy as a handler message.
    pub fn to_message(&self) -> Message {
        if self.text {
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
    }
}
