//! The `wharf` binary: parses the command line and runs it.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = wharf::cli::Cli::parse();
    let quiet = !matches!(cli.command, wharf::cli::Command::Serve { .. });
    wharf::telemetry::init_with_default(if quiet { "warn" } else { "info" });
    // Every connection is a file descriptor: use all the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    match wharf::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
