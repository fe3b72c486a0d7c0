//! The body GRIP publishers (`gripcontrol`, `pubcontrol`, `@fanoutio/grip`,
//! `pushpin-publish`) POST to a gateway's `/publish/`:
//!
//! ```json
//! {"items": [{"channel": "room", "id": "1", "prev-id": "0",
//!             "formats": {"ws-message": {"content": "hi"}}}]}
//! ```
//!
//! The formats may also be keys of the item itself, as `pubcontrol` sends
//! them (`{"channel": "room", "ws-message": {...}}`). An item's
//! `ws-message` is text (`content`), binary (`content-bin`,
//! base64) or an action (`{"action": "close", "code": 1000, "reason": ""}`).
//! Items without a `ws-message` format (HTTP streaming formats) reach no
//! WebSocket and are counted as skipped.

use base64::Engine;
use serde::Deserialize;

use crate::handler::Message;

/// What one item asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this message to the channel's members.
    Send(Message),
    /// Close the channel's members' connections.
    Close {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

/// One publish to one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The channel, as the publisher names it.
    pub channel: String,
    /// What to do.
    pub action: Action,
}

/// The items of a publish body that reach WebSockets, and how many did not.
#[derive(Debug, PartialEq, Eq)]
pub struct Publish {
    /// The WebSocket items, in order.
    pub items: Vec<Item>,
    /// Items with no `ws-message` format.
    pub skipped: usize,
}

#[derive(Deserialize)]
struct Body {
    items: Vec<RawItem>,
}

#[derive(Deserialize)]
struct RawItem {
    channel: String,
    #[serde(default)]
    formats: serde_json::Map<String, serde_json::Value>,
    /// The formats as keys of the item, and `id`, `prev-id`, `meta`.
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WsMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default, rename = "content-bin")]
    content_bin: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

/// Reads a publish body; the error names the item and what is wrong.
pub fn parse(body: &[u8]) -> Result<Publish, String> {
    let body: Body = serde_json::from_slice(body).map_err(|e| format!("not a GRIP publish body: {e}"))?;
    let mut out = Publish { items: Vec::with_capacity(body.items.len()), skipped: 0 };
    for (i, item) in body.items.into_iter().enumerate() {
        let Some(ws) = item.formats.get("ws-message").or_else(|| item.rest.get("ws-message")) else {
            out.skipped += 1;
            continue;
        };
        let ws: WsMessage =
            serde_json::from_value(ws.clone()).map_err(|e| format!("items[{i}].formats.ws-message: {e}"))?;
        let at = |what: &str| format!("items[{i}].formats.ws-message: {what}");
        let action = match (ws.action.as_deref(), ws.content, ws.content_bin) {
            (None | Some("send"), Some(text), None) => Action::Send(Message::Text(text)),
            (None | Some("send"), None, Some(b64)) => Action::Send(Message::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| at(&format!("content-bin: {e}")))?,
            )),
            (None | Some("send"), Some(_), Some(_)) => return Err(at("both content and content-bin")),
            (None | Some("send"), None, None) => return Err(at("no content or content-bin")),
            (Some("close"), None, None) => {
                Action::Close { code: ws.code.unwrap_or(crate::close::NORMAL), reason: ws.reason.unwrap_or_default() }
            }
            (Some("close"), _, _) => return Err(at("a close carries no content")),
            (Some(other), _, _) => return Err(at(&format!("unknown action `{other}` (send, close)"))),
        };
        if item.channel.is_empty() {
            return Err(format!("items[{i}].channel: empty"));
        }
        out.items.push(Item { channel: item.channel, action });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_gripcontrol_publishes() {
        let body = br#"{"items": [
            {"channel": "room", "id": "2", "prev-id": "1", "formats": {"ws-message": {"content": "hi"}}},
            {"channel": "room", "formats": {"ws-message": {"content-bin": "AAH/"}}},
            {"channel": "room", "formats": {"http-stream": {"content": "x"}}},
            {"channel": "room", "ws-message": {"content": "as pubcontrol sends it"}},
            {"channel": "room", "formats": {"ws-message": {"action": "close", "code": 4000, "reason": "bye"}}}
        ]}"#;
        let p = parse(body).unwrap();
        assert_eq!(p.skipped, 1);
        assert_eq!(
            p.items,
            vec![
                Item { channel: "room".into(), action: Action::Send(Message::Text("hi".into())) },
                Item { channel: "room".into(), action: Action::Send(Message::Binary(vec![0, 1, 255])) },
                Item { channel: "room".into(), action: Action::Send(Message::Text("as pubcontrol sends it".into())) },
                Item { channel: "room".into(), action: Action::Close { code: 4000, reason: "bye".into() } },
            ]
        );
    }

    #[test]
    fn names_the_item_that_is_wrong() {
        let cases: [(&[u8], &str); 5] = [
            (b"{}", "not a GRIP publish body"),
            (
                br#"{"items": [{"channel": "a", "formats": {"ws-message": {}}}]}"#,
                "items[0].formats.ws-message: no content",
            ),
            (br#"{"items": [{"channel": "a", "formats": {"ws-message": {"content-bin": "!!"}}}]}"#, "content-bin"),
            (
                br#"{"items": [{"channel": "a", "formats": {"ws-message": {"action": "hold"}}}]}"#,
                "unknown action `hold`",
            ),
            (br#"{"items": [{"channel": "", "formats": {"ws-message": {"content": "x"}}}]}"#, "items[0].channel"),
        ];
        for (body, want) in cases {
            let err = parse(body).unwrap_err();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }
}
