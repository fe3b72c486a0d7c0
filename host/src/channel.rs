//! Channel names within namespaces.
//!
//! A plugin names its channels as it likes (`room`); the host keeps each one
//! in the plugin's channel namespace, so two plugins' `room` are two
//! channels unless both plugins name the same `channel_namespace`. Inside
//! the host (hub, registry, store, bus) a channel is its qualified name
//! `namespace:name`: a namespace uses only letters, digits, `-` and `_`, so
//! the first `:` ends it whatever the name holds.

/// The host's name for channel `name` of namespace `namespace`.
pub fn qualified(namespace: &str, name: &str) -> String {
    let mut q = String::with_capacity(namespace.len() + 1 + name.len());
    q.push_str(namespace);
    q.push(':');
    q.push_str(name);
    q
}

/// The namespace and the name of a qualified channel; a name without a
/// namespace has the empty one.
pub fn split(qualified: &str) -> (&str, &str) {
    qualified.split_once(':').unwrap_or(("", qualified))
}

/// The name a plugin knows a qualified channel by.
pub fn name(qualified: &str) -> &str {
    split(qualified).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_colon_ends_the_namespace() {
        assert_eq!(qualified("chat", "room"), "chat:room");
        assert_eq!(split(&qualified("chat", "room:1:a")), ("chat", "room:1:a"));
        assert_eq!(name(&qualified("a-b_c", ":")), ":");
        assert_eq!(split("bare"), ("", "bare"));
    }
}
