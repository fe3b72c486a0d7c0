//! Test support: random edits of valid inputs, for the property tests that
//! feed every decoder of outside text malformed input.

use proptest::prelude::*;
use proptest::sample::Index;

/// One edit: where, what, and which byte.
pub type Edit = (Index, u8, u8);

/// Up to `max` random edits.
pub fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec((any::<Index>(), 0u8..4, any::<u8>()), 1..=max)
}

/// Applies edits to `text`: delete, insert, replace a byte, or cut the rest.
/// The result is read as UTF-8 lossily, as a file would be by a parser that
/// takes `&str`.
pub fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for (at, op, byte) in edits {
        if bytes.is_empty() {
            bytes.push(*byte);
            continue;
        }
        let i = at.index(bytes.len());
        match op {
            0 => {
                bytes.remove(i);
            }
            1 => bytes.insert(i, *byte),
            2 => bytes[i] = *byte,
            _ => bytes.truncate(i),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Short runs of TOML-ish tokens, more likely than random bytes to get past
/// the syntax check and reach the typed layer.
pub fn tomlish(vocabulary: &'static [&'static str]) -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(vocabulary).prop_map(str::to_string),
        prop::sample::select(&["=", "\n", "[", "]", "[[", "]]", "\"", ".", ",", " "][..]).prop_map(str::to_string),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z_/:.0-9]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}
