//! The `wharf` binary: parses the command line and runs it.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = wharf::cli::Cli::parse();
    let quiet = !matches!(cli.command, wharf::cli::Command::Serve { .. });
    wharf::telemetry::init_with_default(if quiet { "warn" } else { "info" });
    match wharf::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
