//! What a backend's answers come to: their events and control messages as
//! effects, their `Set-Meta-*` and `Keep-Alive-Interval` headers as the
//! session's state.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{Applied, Backend, ClientKeepAlive, MIN_KEEP_ALIVE, Session, State};
use crate::channel;
use crate::close;
use crate::grip::control::{self, Classified, Control};
use crate::grip::events::Event;
use crate::handler::{Effect, Message};

impl Backend {
    /// A mid-session answer's `Set-Meta-*` and `Keep-Alive-Interval`.
    pub(super) async fn apply_headers(&self, s: &Session, headers: &HeaderMap) {
        for (name, value) in headers {
            let Some(field) = name.as_str().strip_prefix("set-meta-") else { continue };
            if let (false, Ok(value)) = (field.is_empty(), value.to_str()) {
                self.set_meta(s, field, value).await;
            }
        }
        if headers.contains_key("keep-alive-interval") {
            s.lock().keep_alive = keep_alive_interval(headers);
        }
    }

    /// Turns an answer's events (after `OPEN`, at open) into effects, in
    /// order; control messages that touch the store (subscribe, metadata)
    /// are done first, as a plugin's imports are.
    pub(super) async fn apply_events(&self, s: &Session, evs: &[Event]) -> Applied {
        let mut out = Applied::default();
        for e in evs {
            match e {
                Event::Text(content) | Event::Binary(content) => {
                    let text = matches!(e, Event::Text(_));
                    let content: &[u8] = match &s.grip {
                        None => content,
                        Some(prefix) => match control::classify(content, text, prefix) {
                            Classified::Message(m) => m,
                            Classified::Control(json) => {
                                self.control(s, json, &mut out).await;
                                if out.ended {
                                    return out;
                                }
                                continue;
                            }
                            Classified::Unprefixed => {
                                tracing::debug!(conn = s.conn, route = %self.route, "dropped a message without the GRIP message prefix");
                                continue;
                            }
                        },
                    };
                    let msg = if text {
                        match String::from_utf8(content.to_vec()) {
                            Ok(t) => Message::Text(t),
                            Err(_) => {
                                tracing::warn!(conn = s.conn, route = %self.route, "the backend sent a TEXT that is not UTF-8; dropped");
                                continue;
                            }
                        }
                    } else {
                        Message::Binary(content.to_vec())
                    };
                    out.effects.push(Effect::Emit { to: s.conn, msg });
                }
                Event::Close(code, reason) => {
                    let code = code.filter(|&c| close::may_send(c)).unwrap_or(close::NORMAL);
                    out.effects.push(Effect::Close { conn: s.conn, code, reason: close_reason(reason) });
                    out.ended = true;
                    return out;
                }
                Event::Disconnect => {
                    out.effects.push(Effect::Close { conn: s.conn, code: close::ABNORMAL, reason: String::new() });
                    out.ended = true;
                    return out;
                }
                // Wharf answers the client's pings itself and pings the
                // client on its own schedule (the route's ping_interval).
                Event::Ping(_) | Event::Pong(_) | Event::Open => {
                    tracing::debug!(conn = s.conn, route = %self.route, event = ?e, "ignored an event from the backend");
                }
            }
        }
        out
    }

    pub(super) async fn control(&self, s: &Session, json: &[u8], out: &mut Applied) {
        let c = match control::parse(json) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(conn = s.conn, route = %self.route, why, "ignored a control message");
                return;
            }
        };
        let qualified = |name: &str| channel::qualified(&self.opts.channel_namespace, name);
        match c {
            Control::Subscribe { channel } => {
                let ch = qualified(&channel);
                match self.connections.subscribe(s.conn, &ch).await {
                    Ok(()) => out.effects.push(Effect::Subscribe { conn: s.conn, channel: ch }),
                    Err(e) => {
                        tracing::warn!(conn = s.conn, route = %self.route, channel, error = %e, "could not subscribe")
                    }
                }
            }
            Control::Unsubscribe { channel } => {
                let ch = qualified(&channel);
                if let Err(e) = self.connections.unsubscribe(s.conn, &ch).await {
                    tracing::warn!(conn = s.conn, route = %self.route, channel, error = %e, "could not unsubscribe");
                }
                out.effects.push(Effect::Unsubscribe { conn: s.conn, channel: ch });
            }
            Control::Detach => {
                let mut st = s.lock();
                st.detached = true;
                st.queued_bytes = 0;
                st.queue.clear();
            }
            Control::SetMeta { name, value } => self.set_meta(s, &name, &value).await,
            Control::KeepAlive { content, content_bin, message_type, timeout, mode } => {
                let msg = match (content, content_bin) {
                    (Some(text), _) if message_type.as_deref() != Some("binary") => Some(Message::Text(text)),
                    (Some(text), _) => Some(Message::Binary(text.into_bytes())),
                    (None, Some(b64)) => {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.decode(b64).ok().map(Message::Binary)
                    }
                    (None, None) => None,
                };
                let every = Duration::from_secs(timeout.unwrap_or(0));
                s.lock().client_keep_alive = msg.filter(|_| !every.is_zero()).map(|msg| ClientKeepAlive {
                    msg,
                    every,
                    interval: mode.as_deref() == Some("interval"),
                });
                s.wake.notify_one();
            }
            Control::Close { code, reason } => {
                let code = code.filter(|&c| close::may_send(c)).unwrap_or(close::NORMAL);
                let reason = close_reason(reason.unwrap_or_default().as_bytes());
                out.effects.push(Effect::Close { conn: s.conn, code, reason });
                out.ended = true;
            }
            Control::Session { .. } => {}
        }
    }

    /// Sets (or, with an empty value, removes) one metadata field, in the
    /// session and in the store.
    pub(super) async fn set_meta(&self, s: &Session, name: &str, value: &str) {
        if HeaderName::from_bytes(format!("meta-{name}").as_bytes()).is_err() || HeaderValue::from_str(value).is_err() {
            tracing::warn!(conn = s.conn, route = %self.route, name, "ignored metadata that cannot be a header");
            return;
        }
        let name = name.to_ascii_lowercase();
        let stored = if value.is_empty() {
            s.lock().meta.remove(&name);
            self.connections.metadata_delete(s.conn, &name).await
        } else {
            s.lock().meta.insert(name.clone(), value.to_string());
            self.connections.metadata_set(s.conn, &name, value).await
        };
        if let Err(e) = stored {
            tracing::warn!(conn = s.conn, route = %self.route, name, error = %e, "could not store metadata");
        }
    }
}

/// The `Set-Meta-NAME` headers of an answer, applied to `st`; the fields set
/// (not removed), for the accept.
pub(super) fn read_set_meta(headers: &HeaderMap, st: &mut State) -> Vec<(String, String)> {
    let mut set = Vec::new();
    for (name, value) in headers {
        let Some(field) = name.as_str().strip_prefix("set-meta-") else { continue };
        let Ok(value) = value.to_str() else { continue };
        if field.is_empty() {
            continue;
        }
        if value.is_empty() {
            st.meta.remove(field);
        } else {
            st.meta.insert(field.to_string(), value.to_string());
            set.push((field.to_string(), value.to_string()));
        }
    }
    set
}

pub(super) fn keep_alive_interval(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get("keep-alive-interval")?.to_str().ok()?.trim().parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs).max(MIN_KEEP_ALIVE))
}

/// A close reason cut to what a close frame holds, at a character boundary.
fn close_reason(reason: &[u8]) -> String {
    let text = String::from_utf8_lossy(reason);
    let mut end = text.len().min(close::MAX_REASON_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_set_meta_and_keep_alive_headers() {
        let mut h = HeaderMap::new();
        h.insert("set-meta-nick", HeaderValue::from_static("ann"));
        h.insert("set-meta-old", HeaderValue::from_static(""));
        h.insert("keep-alive-interval", HeaderValue::from_static("20"));
        let mut st = State::default();
        st.meta.insert("old".into(), "x".into());
        assert_eq!(read_set_meta(&h, &mut st), vec![("nick".to_string(), "ann".to_string())]);
        assert_eq!(st.meta.into_iter().collect::<Vec<_>>(), vec![("nick".to_string(), "ann".to_string())]);
        assert_eq!(keep_alive_interval(&h), Some(Duration::from_secs(20)));
    }

    #[test]
    fn keeps_close_codes_a_server_may_send() {
        assert!(close::may_send(1000) && close::may_send(1011) && close::may_send(4001));
        assert!(!close::may_send(1005) && !close::may_send(1006) && !close::may_send(999) && !close::may_send(5000));
        assert_eq!(close_reason("é".repeat(100).as_bytes()).len(), 122);
    }
}
