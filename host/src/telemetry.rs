//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info` for
//! `wharf serve`, `warn` for the other commands).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber at `info` unless `RUST_LOG` says
/// otherwise; a second call is a no-op.
pub fn init() {
    init_with_default("info");
}

/// Like [`init`], with another default level (e.g. `warn` for `wharf test`,
/// whose report goes to stdout).
pub fn init_with_default(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr must not take the host down (the default reports
        // write errors with `eprintln!`, which panics on a broken pipe).
        .log_internal_errors(false)
        .try_init();
}
