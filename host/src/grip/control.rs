//! GRIP control messages: with the `grip` extension accepted, a text message
//! from the backend that starts with `c:` is an instruction to the gateway,
//! a JSON object with a `type`; any other message must start with the
//! message prefix (`m:` unless the backend chose another), which is removed.

use serde::Deserialize;

/// The prefix of a control message.
pub const CONTROL_PREFIX: &[u8] = b"c:";
/// The message prefix when the backend names none.
pub const DEFAULT_MESSAGE_PREFIX: &str = "m:";

/// What a backend's message from a GRIP-mode connection is.
#[derive(Debug, PartialEq, Eq)]
pub enum Classified<'a> {
    /// A control message's JSON.
    Control(&'a [u8]),
    /// A message for the client, prefix removed.
    Message(&'a [u8]),
    /// Neither prefix: GRIP gateways drop it.
    Unprefixed,
}

/// Sorts one message's content (`text` tells whether it is a text message:
/// only those can be control messages).
pub fn classify<'a>(content: &'a [u8], text: bool, message_prefix: &str) -> Classified<'a> {
    if text && let Some(json) = content.strip_prefix(CONTROL_PREFIX) {
        return Classified::Control(json);
    }
    match content.strip_prefix(message_prefix.as_bytes()) {
        Some(rest) => Classified::Message(rest),
        None => Classified::Unprefixed,
    }
}

/// The `message-prefix` parameter of a `Sec-WebSocket-Extensions` value
/// that names `grip`; `None` when it does not name `grip`.
pub fn grip_extension(value: &str) -> Option<String> {
    value.split(',').find_map(|ext| {
        let mut params = ext.split(';').map(str::trim);
        if params.next()? != "grip" {
            return None;
        }
        let prefix = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim() == "message-prefix")
            .map(|(_, v)| v.trim().trim_matches('"').to_string());
        Some(prefix.unwrap_or_else(|| DEFAULT_MESSAGE_PREFIX.to_string()))
    })
}

/// One control message.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Control {
    /// Add the connection to a channel.
    Subscribe {
        /// The channel.
        channel: String,
    },
    /// Remove the connection from a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Stop sending the client's messages to the backend; channels keep
    /// reaching the client.
    Detach,
    /// Set (or, with an empty value, remove) one metadata field.
    SetMeta {
        /// The field.
        name: String,
        /// Its value.
        #[serde(default)]
        value: String,
    },
    /// Send the client a message whenever it has been sent nothing for
    /// `timeout` seconds (`mode = "idle"`, the default) or every `timeout`
    /// seconds (`"interval"`); no `content` and no `content-bin` turns it
    /// off.
    KeepAlive {
        /// Text content.
        #[serde(default)]
        content: Option<String>,
        /// Binary content, base64.
        #[serde(default, rename = "content-bin")]
        content_bin: Option<String>,
        /// `text` (default), `binary`, `ping` or `pong`.
        #[serde(default, rename = "message-type")]
        message_type: Option<String>,
        /// Seconds.
        #[serde(default)]
        timeout: Option<u64>,
        /// `idle` (default) or `interval`.
        #[serde(default)]
        mode: Option<String>,
    },
    /// Close the client's connection.
    Close {
        /// The close code (default 1000).
        #[serde(default)]
        code: Option<u16>,
        /// The close reason.
        #[serde(default)]
        reason: Option<String>,
    },
    /// A session id for the connection (accepted, not used).
    Session {
        /// The id.
        #[serde(default)]
        id: Option<String>,
    },
}

/// A control message's JSON, or why it is not one this gateway knows.
pub fn parse(json: &[u8]) -> Result<Control, String> {
    serde_json::from_slice(json).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_control_messages_and_prefixed_messages() {
        assert_eq!(classify(b"c:{\"type\":\"detach\"}", true, "m:"), Classified::Control(b"{\"type\":\"detach\"}"));
        assert_eq!(classify(b"m:hello", true, "m:"), Classified::Message(b"hello"));
        assert_eq!(classify(b"m:\x00\x01", false, "m:"), Classified::Message(b"\x00\x01"));
        assert_eq!(classify(b"c:binary is never control", false, "m:"), Classified::Unprefixed);
        assert_eq!(classify(b"hello", true, "m:"), Classified::Unprefixed);
        assert_eq!(classify(b"hello", true, ""), Classified::Message(b"hello"));
    }

    #[test]
    fn reads_the_grip_extension_and_its_prefix() {
        assert_eq!(grip_extension("grip").as_deref(), Some("m:"));
        assert_eq!(grip_extension("permessage-deflate, grip; message-prefix=\"\"").as_deref(), Some(""));
        assert_eq!(grip_extension("grip; message-prefix=x:").as_deref(), Some("x:"));
        assert_eq!(grip_extension("permessage-deflate"), None);
        assert_eq!(grip_extension("gripper"), None);
    }

    #[test]
    fn parses_what_gripcontrol_sends() {
        assert_eq!(
            parse(br#"{"channel": "room", "type": "subscribe"}"#),
            Ok(Control::Subscribe { channel: "room".into() })
        );
        assert_eq!(parse(br#"{"type": "detach"}"#), Ok(Control::Detach));
        assert_eq!(
            parse(br#"{"type": "set-meta", "name": "nick", "value": "ann"}"#),
            Ok(Control::SetMeta { name: "nick".into(), value: "ann".into() })
        );
        assert!(matches!(
            parse(br#"{"type": "keep-alive", "content": "{}", "timeout": 30}"#),
            Ok(Control::KeepAlive { timeout: Some(30), .. })
        ));
        assert!(parse(br#"{"type": "teleport"}"#).unwrap_err().contains("teleport"));
        assert!(parse(b"not json").is_err());
    }
}
