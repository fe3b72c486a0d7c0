//! Scenario files: named clients and the steps they take, in TOML.
//!
//! ```toml
//! name = "two clients chat"
//!
//! [[step]]
//! client = "ada"
//! open = "/chat?room=1"           # path and query; `headers = { origin = "..." }`
//!
//! [[step]]
//! client = "ada"
//! send = "hello"                  # or send_binary = "00ff" (hex)
//!
//! [[step]]
//! client = "bob"
//! expect = "anonymous: hello"     # or expect_regex, expect_json (a subset), expect_binary
//!
//! [[step]]
//! client = "bob"
//! expect_none_ms = 100            # nothing arrives within 100 ms
//!
//! [[step]]
//! kv = "hits"                     # the plugin's key/value store...
//! equals = "3"                    # ...holds this (omit `equals` for "absent");
//!                                 # or `set = "3"` writes it; `plugin = "auth"`
//!                                 # names whose namespace, testing a config
//!
//! [[step]]
//! client = "ada"
//! metadata = "nick"               # a metadata value of ada's connection
//! equals = "ada"
//!
//! [[step]]
//! client = "ada"
//! close = 1000
//! ```
//!
//! An `open` step may offer `subprotocols = ["a", "b"]` and may say
//! `expect_reject = 403` instead of accepting. `expect_close = 4000` expects
//! the host to close the client's connection with that code.
//!
//! Timers are due by a simulated clock that stands still between steps:
//! `advance_ms = 5000` (no `client`) moves it 5 s forward, one due time
//! after another, running every timer due on the way at its time, so a
//! scenario fires a timer without waiting for it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// A parsed scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name (the file name when not given).
    pub name: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A client opens a connection.
    Open {
        /// The client's name.
        client: String,
        /// Path, e.g. `/chat`.
        path: String,
        /// Query, without `?`.
        query: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
        /// Offered subprotocols.
        subprotocols: Vec<String>,
        /// `Some(status)`: expect the handler to reject with this status.
        expect_reject: Option<u16>,
    },
    /// A client sends a message.
    Send {
        /// The client.
        client: String,
        /// What it sends.
        msg: crate::handler::Message,
    },
    /// A client's next message must match.
    Expect {
        /// The client.
        client: String,
        /// The expectation.
        matcher: Matcher,
    },
    /// Nothing may arrive at a client within this many milliseconds.
    ExpectNone {
        /// The client.
        client: String,
        /// How long to wait.
        ms: u64,
    },
    /// A client closes its connection with a code.
    Close {
        /// The client.
        client: String,
        /// The close code.
        code: u16,
    },
    /// A key of the plugin's namespace holds a value (`None`: absent), or,
    /// with `set`, is given one.
    Kv {
        /// The key.
        key: String,
        /// The expected value as text.
        equals: Option<String>,
        /// The value to write instead of checking one.
        set: Option<String>,
        /// Whose namespace (a plugin of the config); `None`: the component's.
        plugin: Option<String>,
    },
    /// The simulated clock moves forward, firing the timers due on the way.
    Advance {
        /// Milliseconds.
        ms: u64,
    },
    /// A metadata value of a client's connection (`None`: absent).
    Metadata {
        /// The client.
        client: String,
        /// The key.
        key: String,
        /// The expected value.
        equals: Option<String>,
    },
}

/// How a received message is checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Matcher {
    /// Exactly this text.
    Text(String),
    /// Text matching this regular expression.
    Regex(String),
    /// Text that is JSON containing this JSON (objects may have more keys).
    JsonSubset(serde_json::Value),
    /// Exactly these bytes, as a binary message.
    Binary(Vec<u8>),
    /// The host closed the connection with this code.
    Close(u16),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    #[serde(default)]
    step: Vec<RawStep>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStep {
    client: Option<String>,
    open: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    subprotocols: Option<Vec<String>>,
    expect_reject: Option<u16>,
    send: Option<String>,
    send_binary: Option<String>,
    expect: Option<String>,
    expect_regex: Option<String>,
    expect_json: Option<toml::Value>,
    expect_binary: Option<String>,
    expect_none_ms: Option<u64>,
    expect_close: Option<u16>,
    close: Option<u16>,
    kv: Option<String>,
    metadata: Option<String>,
    equals: Option<String>,
    set: Option<String>,
    plugin: Option<String>,
    advance_ms: Option<u64>,
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("hex needs an even number of digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| match (pair[0].to_digit(16), pair[1].to_digit(16)) {
            (Some(hi), Some(lo)) => Ok((hi * 16 + lo) as u8),
            _ => Err(format!("`{}{}` is not a hex byte", pair[0], pair[1])),
        })
        .collect()
}

impl Scenario {
    /// Reads and checks a scenario file; errors name the file and the step.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("scenario {}: cannot read: {e}", path.display()))?;
        let fallback = path.file_stem().map_or("scenario".into(), |s| s.to_string_lossy().into_owned());
        Scenario::parse(&text, &fallback).map_err(|e| anyhow::anyhow!("scenario {}: {e}", path.display()))
    }

    /// Parses scenario text.
    pub fn parse(text: &str, fallback_name: &str) -> Result<Scenario, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))?;
        let steps = file
            .step
            .into_iter()
            .enumerate()
            .map(|(i, raw)| step(raw).map_err(|e| format!("step[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if steps.is_empty() {
            return Err("no [[step]] tables".into());
        }
        Ok(Scenario { name: file.name.unwrap_or_else(|| fallback_name.to_string()), steps })
    }
}

fn step(raw: RawStep) -> Result<Step, String> {
    let actions = [
        raw.open.is_some(),
        raw.send.is_some(),
        raw.send_binary.is_some(),
        raw.expect.is_some(),
        raw.expect_regex.is_some(),
        raw.expect_json.is_some(),
        raw.expect_binary.is_some(),
        raw.expect_none_ms.is_some(),
        raw.expect_close.is_some(),
        raw.close.is_some(),
        raw.kv.is_some(),
        raw.metadata.is_some(),
        raw.advance_ms.is_some(),
    ]
    .iter()
    .filter(|a| **a)
    .count();
    if actions != 1 {
        return Err("a step has exactly one of open, send, send_binary, expect, expect_regex, expect_json, \
                    expect_binary, expect_none_ms, expect_close, close, kv, metadata, advance_ms"
            .into());
    }
    let client = || raw.client.clone().ok_or_else(|| "this step needs `client`".to_string());
    if (raw.headers.is_some() || raw.subprotocols.is_some() || raw.expect_reject.is_some()) && raw.open.is_none() {
        return Err("`headers`, `subprotocols` and `expect_reject` go with `open`".into());
    }
    if raw.equals.is_some() && raw.kv.is_none() && raw.metadata.is_none() {
        return Err("`equals` goes with `kv` or `metadata`".into());
    }
    if (raw.set.is_some() || raw.plugin.is_some()) && raw.kv.is_none() {
        return Err("`set` and `plugin` go with `kv`".into());
    }
    if raw.set.is_some() && raw.equals.is_some() {
        return Err("a `kv` step writes (`set`) or checks (`equals`), not both".into());
    }
    Ok(if let Some(target) = &raw.open {
        if !target.starts_with('/') {
            return Err(format!("`open` takes a path starting with `/`, not `{target}`"));
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers =
            raw.headers.clone().unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        Step::Open {
            client: client()?,
            path: path.into(),
            query: query.into(),
            headers,
            subprotocols: raw.subprotocols.clone().unwrap_or_default(),
            expect_reject: raw.expect_reject,
        }
    } else if let Some(text) = raw.send.clone() {
        Step::Send { client: client()?, msg: crate::handler::Message::Text(text) }
    } else if let Some(h) = &raw.send_binary {
        Step::Send { client: client()?, msg: crate::handler::Message::Binary(hex(h)?) }
    } else if let Some(t) = raw.expect.clone() {
        Step::Expect { client: client()?, matcher: Matcher::Text(t) }
    } else if let Some(r) = raw.expect_regex.clone() {
        regex_lite::Regex::new(&r).map_err(|e| format!("bad expect_regex: {e}"))?;
        Step::Expect { client: client()?, matcher: Matcher::Regex(r) }
    } else if let Some(j) = raw.expect_json.clone() {
        let json = serde_json::to_value(j).map_err(|e| e.to_string())?;
        Step::Expect { client: client()?, matcher: Matcher::JsonSubset(json) }
    } else if let Some(h) = &raw.expect_binary {
        Step::Expect { client: client()?, matcher: Matcher::Binary(hex(h)?) }
    } else if let Some(code) = raw.expect_close {
        Step::Expect { client: client()?, matcher: Matcher::Close(code) }
    } else if let Some(ms) = raw.expect_none_ms {
        Step::ExpectNone { client: client()?, ms: ms.min(60_000) }
    } else if let Some(code) = raw.close {
        if !crate::close::may_request(code) {
            return Err(format!("`close` takes {}, not {code}", crate::close::REQUESTABLE));
        }
        Step::Close { client: client()?, code }
    } else if let Some(key) = raw.kv.clone() {
        Step::Kv { key, equals: raw.equals.clone(), set: raw.set.clone(), plugin: raw.plugin.clone() }
    } else if let Some(ms) = raw.advance_ms {
        if raw.client.is_some() {
            return Err("`advance_ms` moves everyone's clock: it takes no `client`".into());
        }
        Step::Advance { ms }
    } else {
        Step::Metadata { client: client()?, key: raw.metadata.clone().unwrap_or_default(), equals: raw.equals.clone() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_takes_milliseconds_and_no_client() {
        let s = Scenario::parse("[[step]]\nadvance_ms = 1500\n", "t").unwrap();
        assert_eq!(s.steps, [Step::Advance { ms: 1500 }]);
        let e = Scenario::parse("[[step]]\nclient = \"a\"\nadvance_ms = 1\n", "t").unwrap_err();
        assert!(e.contains("takes no `client`"), "{e}");
    }

    #[test]
    fn hex_bytes() {
        assert_eq!(hex("00 ff\n7A"), Ok(vec![0, 255, 0x7a]));
        assert_eq!(hex("abc"), Err("hex needs an even number of digits".into()));
        assert_eq!(hex("zz"), Err("`zz` is not a hex byte".into()));
        // Found by the fuzz test: a multi-byte character used to be sliced
        // in the middle (a panic).
        assert_eq!(hex("é1"), Err("`é1` is not a hex byte".into()));
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{edits, mutate, tomlish};
        use proptest::prelude::*;

        const KEYS: &[&str] = &[
            "[[step]]",
            "client",
            "open",
            "send",
            "send_binary",
            "expect",
            "expect_regex",
            "expect_json",
            "expect_binary",
            "expect_close",
            "expect_reject",
            "expect_none_ms",
            "close",
            "kv",
            "metadata",
            "equals",
            "set",
            "plugin",
            "advance_ms",
            "headers",
            "subprotocols",
            "name",
            "\"a\"",
            "\"/\"",
            "\"(\"",
            "\"zz\"",
            "{",
            "}",
        ];

        /// Parsing never panics and a refusal says something.
        fn check(text: &str) {
            if let Err(e) = Scenario::parse(text, "fuzz") {
                assert!(!e.trim().is_empty());
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn edited_example_scenarios(edits in edits(6), which in 0usize..4) {
                let text = [
                    include_str!("../../../examples/echo/tests/echo.toml"),
                    include_str!("../../../examples/chat/tests/chat.toml"),
                    include_str!("../../../examples/broadcast/tests/broadcast.toml"),
                    include_str!("../../../examples/counter/tests/counter.toml"),
                ][which];
                check(&mutate(text, &edits));
            }

            #[test]
            fn token_soup(text in tomlish(KEYS)) {
                check(&text);
            }
        }
    }

    #[test]
    fn a_full_scenario_parses() {
        let s = Scenario::parse(
            r#"
            name = "demo"
            [[step]]
            client = "a"
            open = "/chat?x=1"
            headers = { Origin = "http://x" }
            [[step]]
            client = "a"
            send_binary = "00 ff"
            [[step]]
            client = "a"
            expect_json = { connected = true }
            [[step]]
            kv = "hits"
            equals = "1"
            "#,
            "f",
        )
        .unwrap();
        assert_eq!(s.name, "demo");
        assert_eq!(
            s.steps[0],
            Step::Open {
                client: "a".into(),
                path: "/chat".into(),
                query: "x=1".into(),
                headers: vec![("origin".into(), "http://x".into())],
                subprotocols: vec![],
                expect_reject: None
            }
        );
        assert_eq!(s.steps[1], Step::Send { client: "a".into(), msg: crate::handler::Message::Binary(vec![0, 255]) });
        assert_eq!(s.steps[3], Step::Kv { key: "hits".into(), equals: Some("1".into()), set: None, plugin: None });
    }

    #[test]
    fn broken_scenarios_name_the_step() {
        let e = Scenario::parse("[[step]]\nclient = \"a\"\nsend = \"x\"\nclose = 1000\n", "f").unwrap_err();
        assert!(e.starts_with("step[0]: a step has exactly one"), "{e}");
        let e = Scenario::parse("[[step]]\nsend = \"x\"\n", "f").unwrap_err();
        assert!(e.contains("step[0]: this step needs `client`"), "{e}");
        let e = Scenario::parse("[[step]]\nclient = \"a\"\nexpect_regex = \"(\"\n", "f").unwrap_err();
        assert!(e.contains("bad expect_regex"), "{e}");
        let e = Scenario::parse("[[step]]\nclient = \"a\"\nsned = \"x\"\n", "f").unwrap_err();
        assert!(e.contains("sned"), "{e}");
        assert!(Scenario::parse("name = \"x\"\n", "f").unwrap_err().contains("no [[step]]"));
    }
}
