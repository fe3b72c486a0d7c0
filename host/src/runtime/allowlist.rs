//! Which imports a plugin may have. A component is refused at load time if
//! it imports anything else, with each refused import named.
//!
//! What is allowed is decided by what an import can reach:
//! - the Wharf world (`wharf:handler/*@0.2.0`, and the frozen `@0.1.0`);
//! - the WASI 0.2 interfaces the guest toolchains' runtimes link (Rust's
//!   standard library, componentize-js, componentize-py): streams, stdio
//!   (stdout and stderr go to the host log, stdin is empty), exit, clocks,
//!   random, and `wasi:cli/environment`, which is given an empty
//!   environment and no arguments;
//! - `wasi:filesystem/types` and `wasi:filesystem/preopens`, which the
//!   JavaScript and Python runtimes import for their standard libraries:
//!   the host preopens no directory, so `get-directories` is empty and no
//!   descriptor can ever be opened; these imports reach nothing.
//!
//! Sockets, HTTP and everything else are refused by name: a component that
//! imports them is not loaded (`wharf build` strips the socket imports that
//! componentize-py's runtime carries, see `build/no_network.rs`).

/// The versions of the Wharf world this host serves.
const WHARF_VERSIONS: &[&str] = &["0.2.0", "0.1.0"];

/// WASI 0.2 interfaces a plugin may import.
const WASI_ALLOWED: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// Why an import is refused, or `None` when the host provides it.
pub fn refusal(import: &str) -> Option<&'static str> {
    let (interface, version) = import.split_once('@').unwrap_or((import, ""));
    if interface.starts_with("wharf:handler/") {
        return (!WHARF_VERSIONS.contains(&version)).then_some("this host provides wharf:handler@0.2.0 and @0.1.0");
    }
    if WASI_ALLOWED.contains(&interface) {
        return (!version.starts_with("0.2.")).then_some("this host provides WASI 0.2");
    }
    Some(if interface.starts_with("wasi:filesystem/") {
        "handlers get no files"
    } else if interface.starts_with("wasi:sockets/") || interface.starts_with("wasi:http/") {
        "handlers get no network; use the Wharf imports"
    } else {
        "not part of the Wharf world"
    })
}

/// Checks every import; the error names each refused one and why.
pub fn check<'a>(imports: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let refused: Vec<String> =
        imports.into_iter().filter_map(|i| refusal(i).map(|why| format!("`{i}` ({why})"))).collect();
    if refused.is_empty() { Ok(()) } else { Err(format!("refused imports: {}", refused.join(", "))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wharf_world_and_std_wasi_are_allowed() {
        assert_eq!(refusal("wharf:handler/connections@0.1.0"), None);
        assert_eq!(refusal("wasi:cli/environment@0.2.6"), None);
        assert_eq!(refusal("wasi:io/streams@0.2.0"), None);
        // The JavaScript and Python runtimes' filesystem imports reach
        // nothing: no directory is preopened.
        assert_eq!(refusal("wasi:filesystem/types@0.2.12"), None);
        assert_eq!(refusal("wasi:filesystem/preopens@0.2.9"), None);
        assert_eq!(refusal("wharf:handler/channels@0.2.0"), None);
        assert!(refusal("wharf:handler/connections@0.3.0").is_some());
        assert!(refusal("wharf:handler/connections@0.1.1").is_some());
        assert!(refusal("wasi:io/streams@0.3.0").is_some());
    }

    #[test]
    fn files_sockets_and_strangers_are_refused_by_name() {
        let e = check([
            "wasi:io/poll@0.2.6",
            "wasi:filesystem/unstable@0.2.6",
            "wasi:sockets/tcp@0.2.6",
            "wasi:sockets/instance-network@0.2.9",
            "wasi:http/outgoing-handler@0.2.9",
            "acme:x/y",
        ])
        .unwrap_err();
        assert!(e.contains("`wasi:filesystem/unstable@0.2.6` (handlers get no files)"), "{e}");
        assert!(e.contains("`wasi:sockets/instance-network@0.2.9` (handlers get no network"), "{e}");
        assert!(e.contains("`wasi:http/outgoing-handler@0.2.9` (handlers get no network"), "{e}");
        assert!(e.contains("`wasi:sockets/tcp@0.2.6` (handlers get no network"), "{e}");
        assert!(e.contains("`acme:x/y` (not part of the Wharf world)"), "{e}");
        assert!(!e.contains("wasi:io/poll"), "{e}");
    }
}
