//! Which handler of a route a message goes to, by one of its top-level JSON
//! fields, read without building the document: the other fields are
//! skipped, and the value is borrowed from the message when it has no
//! escapes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::handler::Message;

/// Which handler a message goes to, by one of its top-level JSON fields.
pub struct Select {
    /// The field, e.g. `action`.
    pub field: String,
    /// Its values and the handler (an index into the pipeline's handlers)
    /// each names.
    pub by_value: HashMap<String, usize>,
    /// Where everything else goes; `None`: an error reply.
    pub default: Option<usize>,
}

impl Select {
    /// The handler `msg` goes to, or the error reply when none does: a text
    /// message that is a JSON object whose field is a string naming one,
    /// else the default.
    pub fn pick(&self, msg: &Message) -> Result<usize, Message> {
        if let (true, Some(i)) = (self.by_value.is_empty(), self.default) {
            // Every message goes to the default (a rate limiter in front).
            return Ok(i);
        }
        let value = match msg {
            Message::Text(t) => field(t, &self.field),
            Message::Binary(_) => Field::Missing,
        };
        let named = match &value {
            Field::Text(v) => self.by_value.get(v.as_ref()),
            Field::Missing | Field::Other => None,
        };
        if let Some(i) = named.or(self.default.as_ref()) {
            return Ok(*i);
        }
        // The field's value as JSON, as the client sent it.
        let shown = match msg {
            Message::Text(t) => serde_json::from_str::<serde_json::Value>(t)
                .ok()
                .and_then(|v| v.get(&self.field).map(|v| v.to_string())),
            Message::Binary(_) => None,
        };
        let error = format!("no handler for {} {}", self.field, shown.as_deref().unwrap_or("none"));
        Err(Message::Text(serde_json::json!({ "type": "error", "error": error }).to_string()))
    }
}

/// What a message's selection field holds.
#[derive(Debug, PartialEq)]
enum Field<'a> {
    /// The message is no JSON object, or has no such field.
    Missing,
    /// A string.
    Text(Cow<'a, str>),
    /// Anything else (a number, an object, ...).
    Other,
}

/// Field `name` of JSON object `text`.
fn field<'a>(text: &'a str, name: &str) -> Field<'a> {
    // Most messages of a route without JSON are not even close to it.
    if !text.trim_start().starts_with('{') {
        return Field::Missing;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match de.deserialize_map(Object { name }) {
        Ok(found) if de.end().is_ok() => found,
        _ => Field::Missing,
    }
}

/// Visits an object for one field.
struct Object<'n> {
    name: &'n str,
}

impl<'de> Visitor<'de> for Object<'_> {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        let mut found = Field::Missing;
        while let Some(key) = map.next_key_seed(Value)? {
            match key {
                // The last of repeated keys counts, as when parsed whole.
                Field::Text(k) if k == self.name => found = map.next_value_seed(Value)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// A value: a string, borrowed when it can be, or any other, skipped.
struct Value;

impl<'de> DeserializeSeed<'de> for Value {
    type Value = Field<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(v)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_read_as_a_full_parse_would() {
        let text = |s: &str| Field::Text(Cow::Owned(s.to_string()));
        let cases = [
            (r#"{"action":"join","room":"a"}"#, text("join")),
            (r#"  {"room":{"action":"x"},"n":[1,{"a":2}],"action":"say"}"#, text("say")),
            (r#"{"action":"j\u006fin"}"#, text("join")),
            (r#"{"action":"a","action":"b"}"#, text("b")),
            (r#"{"action":5}"#, Field::Other),
            (r#"{"action":null}"#, Field::Other),
            (r#"{"action":{"deep":true}}"#, Field::Other),
            (r#"{"other":"join"}"#, Field::Missing),
            (r#"{"action":"join"} trailing"#, Field::Missing),
            (r#"{"action":"join""#, Field::Missing),
            (r#"["action","join"]"#, Field::Missing),
            ("action join", Field::Missing),
            ("", Field::Missing),
        ];
        for (message, expected) in cases {
            assert_eq!(field(message, "action"), expected, "{message}");
        }
        assert!(matches!(field(r#"{"action":"join"}"#, "action"), Field::Text(Cow::Borrowed("join"))));
    }

    #[test]
    fn a_value_without_a_handler_goes_to_the_default_or_is_answered() {
        let mut select =
            Select { field: "action".into(), by_value: HashMap::from([("join".to_string(), 1)]), default: Some(0) };
        assert_eq!(select.pick(&Message::Text(r#"{"action":"join"}"#.into())), Ok(1));
        assert_eq!(select.pick(&Message::Text(r#"{"action":"say"}"#.into())), Ok(0));
        assert_eq!(select.pick(&Message::Binary(b"{\"action\":\"join\"}".to_vec())), Ok(0));
        // A default alone takes every message, unread.
        let front = Select { field: String::new(), by_value: HashMap::new(), default: Some(2) };
        for m in [Message::Text(r#"{"action":"join"}"#.into()), Message::Text("hi".into()), Message::Binary(vec![1])] {
            assert_eq!(front.pick(&m), Ok(2));
        }
        select.default = None;
        let answer = |m: &str| match select.pick(&Message::Text(m.into())) {
            Err(Message::Text(t)) => serde_json::from_str::<serde_json::Value>(&t).unwrap()["error"].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(answer(r#"{"action":"say"}"#), r#"no handler for action "say""#);
        assert_eq!(answer(r#"{"action":[1, 2]}"#), "no handler for action [1,2]");
        assert_eq!(answer("hello"), "no handler for action none");
    }
}
