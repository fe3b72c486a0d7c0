//! The command line: `wharf serve`. Flags are named after config keys and
//! fall back to `WHARF_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;

/// Wharf: a WebSocket host for sandboxed WebAssembly handlers.
#[derive(Debug, Parser)]
#[command(name = "wharf", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the routes of a config file until Ctrl-C or SIGTERM.
    Serve {
        /// The config file.
        #[arg(long, env = "WHARF_CONFIG", default_value = "wharf.toml")]
        config: PathBuf,
        /// Listen address; overrides `listen` in the config.
        #[arg(long, env = "WHARF_LISTEN")]
        listen: Option<SocketAddr>,
    },
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen } => {
            let mut config = Config::load(&config)?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let running = crate::app::start(config).await?;
            let token = running.shutdown_token();
            tokio::spawn(async move {
                wait_for_signal().await;
                token.cancel();
                tracing::info!("shutting down: closing every connection with 1001 (again to exit at once)");
                wait_for_signal().await;
                tracing::warn!("second signal: exiting without waiting for connections");
                std::process::exit(1);
            });
            running.wait().await.context("wharf serve")
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
