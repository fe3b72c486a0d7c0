//! The command line: `wharf serve`. Flags are named after config keys and
//! fall back to `WHARF_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, StoreChoice};

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
        /// Store back end (`embedded`, `memory` or `redis://HOST:PORT/DB`);
        /// overrides the config's store back end.
        #[arg(long, env = "WHARF_STORE")]
        store: Option<StoreChoice>,
        /// Data directory; overrides `data_dir`.
        #[arg(long, env = "WHARF_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Admin API listen address; overrides `admin.listen`.
        #[arg(long, env = "WHARF_ADMIN_LISTEN")]
        admin_listen: Option<SocketAddr>,
    },
    /// Test a handler component headlessly: world check, lifecycle smoke
    /// test, then each scenario file. Exits non-zero when a check fails.
    Test {
        /// The component (`.wasm`), then scenario files (TOML); without a
        /// component, the scenarios run against `--config`'s routes.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// A config whose limits apply (default: the built-in limits); with
        /// no component, whose plugins and routes are tested as served.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also write a report: `--format junit FILE`.
        #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"])]
        format: Vec<String>,
    },
    /// Create a handler project that builds with `wharf build` and passes
    /// `wharf test` as created.
    New {
        /// The project's name (and directory).
        name: String,
        /// Its language: rust, js, ts or python.
        #[arg(long, default_value = "rust")]
        lang: String,
        /// Where the SDKs live (default: `WHARF_SDK`, else this build's copy).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Mint an HS256 connection token for a route's `[routes.auth]`, for
    /// trying a route out and for tests; print it.
    Token {
        /// The file holding the shared secret (the route's
        /// `hs256_secret_file`); else `--secret-env`.
        #[arg(long, conflicts_with = "secret_env", required_unless_present = "secret_env")]
        secret_file: Option<PathBuf>,
        /// The environment variable holding the secret (the route's
        /// `hs256_secret_env`).
        #[arg(long)]
        secret_env: Option<String>,
        /// The `sub` claim (the handler's `auth.sub`).
        #[arg(long)]
        sub: Option<String>,
        /// The `aud` claim.
        #[arg(long)]
        aud: Option<String>,
        /// The `iss` claim.
        #[arg(long)]
        iss: Option<String>,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Build the handler project in DIR (Rust, JavaScript, TypeScript or
    /// Python) into a component; the last line printed is its path.
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the component (default: DIR/target/NAME.wasm; for
        /// Rust, cargo's output).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Where the SDKs and their toolchains live (default: `WHARF_SDK`,
        /// else this build's copy).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen, store, data_dir, admin_listen } => {
            let mut config = Config::load(&config)?;
            config.listen = listen.unwrap_or(config.listen);
            if let Some(store) = store {
                config.store.backend = store;
            }
            config.data_dir = data_dir.unwrap_or(config.data_dir);
            config.admin.listen = admin_listen.unwrap_or(config.admin.listen);
            if let Ok(token) = std::env::var("WHARF_ADMIN_TOKEN") {
                config.admin.token = Some(token);
            }
            let file = config.source.clone();
            config.validate(&file)?;
            // Install the handlers before the host announces that it is
            // listening, so that a signal is never met by the default action.
            let mut signals = Signals::install()?;
            let running = crate::app::start(config).await?;
            let token = running.shutdown_token();
            let app = running.app();
            tokio::spawn(async move {
                signals.stop(app).await;
                token.cancel();
                tracing::info!("shutting down: closing every connection with 1001 (again to exit at once)");
                signals.stop_only().await;
                tracing::warn!("second signal: exiting without waiting for connections");
                std::process::exit(1);
            });
            running.wait().await.context("wharf serve")
        }
        Command::Test { paths, config, format } => {
            let junit = match format.as_slice() {
                [] => None,
                [kind, file] if kind == "junit" => Some(PathBuf::from(file)),
                [kind, _] => anyhow::bail!("--format: unknown format `{kind}` (supported: junit)"),
                _ => unreachable!("clap takes two values"),
            };
            let base = match &config {
                Some(path) => Config::load(path)?,
                None => Config::parse("", "(defaults)")?,
            };
            let is_component = paths[0].extension().is_some_and(|e| e == "wasm");
            let (report, suite) = match (is_component, &config) {
                (true, _) => {
                    let report = crate::testkit::run(&paths[0], &paths[1..], &base).await?;
                    (report, paths[0].display().to_string())
                }
                (false, Some(file)) => (crate::testkit::run_config(&paths, &base).await?, file.display().to_string()),
                (false, None) => anyhow::bail!(
                    "`{}` is not a component (.wasm): give the component first, or --config FILE to test that config's routes",
                    paths[0].display()
                ),
            };
            print!("{}", report.text());
            if let Some(file) = junit {
                std::fs::write(&file, report.junit(&suite))
                    .with_context(|| format!("writing the JUnit report {}", file.display()))?;
            }
            let (_, failed) = report.counts();
            anyhow::ensure!(failed == 0, "{failed} check(s) failed");
            Ok(())
        }
        Command::New { name, lang, sdk } => {
            let lang = crate::build::Language::parse(&lang)?;
            let sdk = crate::build::Sdk::locate(sdk)?;
            let dir = crate::scaffold::create(std::path::Path::new(&name), lang, &sdk)?;
            println!("created {}", dir.display());
            println!("build it:  cd {} && wharf build", dir.display());
            println!("test it:   wharf test $(wharf build | tail -n 1) tests/*.toml");
            Ok(())
        }
        Command::Token { secret_file, secret_env, sub, aud, iss, ttl } => {
            let secret = match (&secret_file, &secret_env) {
                (Some(file), _) => {
                    let s = std::fs::read(file)
                        .with_context(|| format!("--secret-file: cannot read {}", file.display()))?;
                    s.strip_suffix(b"\n").unwrap_or(&s).to_vec()
                }
                (None, Some(var)) => {
                    std::env::var(var).with_context(|| format!("--secret-env: `{var}` is not set"))?.into_bytes()
                }
                (None, None) => unreachable!("clap requires one"),
            };
            anyhow::ensure!(!secret.is_empty(), "the secret is empty");
            let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + ttl;
            let mut claims = serde_json::json!({ "exp": exp });
            for (k, v) in [("sub", sub), ("aud", aud), ("iss", iss)] {
                if let Some(v) = v {
                    claims[k] = v.into();
                }
            }
            let key = jsonwebtoken::EncodingKey::from_secret(&secret)?;
            println!("{}", jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?);
            Ok(())
        }
        Command::Build { dir, out, sdk } => {
            let sdk = crate::build::Sdk::locate(sdk)?;
            let started = std::time::Instant::now();
            let wasm = crate::build::build(&dir, out.as_deref(), &sdk)?;
            let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
            eprintln!("built {:.1} MB in {:.1} s", size as f64 / 1e6, started.elapsed().as_secs_f64());
            println!("{}", wasm.display());
            Ok(())
        }
    }
}

/// The signals `wharf serve` answers: SIGINT and SIGTERM stop it (a second
/// one exits at once), SIGHUP re-reads the config.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
                hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for SIGINT or SIGTERM, reloading the config on each SIGHUP.
    async fn stop(&mut self, app: std::sync::Arc<crate::app::App>) {
        #[cfg(unix)]
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => reload(&app).await,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = app;
            let _ = tokio::signal::ctrl_c().await;
        }
    }

    /// Waits for SIGINT or SIGTERM.
    async fn stop_only(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn reload(app: &std::sync::Arc<crate::app::App>) {
    match app.reload_config().await {
        Ok(s) => tracing::info!(
            added_routes = ?s.added_routes,
            removed_routes = ?s.removed_routes,
            added_plugins = ?s.added_plugins,
            swapped_plugins = ?s.swapped_plugins,
            "config reloaded"
        ),
        Err(e) => tracing::warn!(reason = format!("{e:#}"), "config reload refused; still serving the previous config"),
    }
    if let Err(e) = app.reload_tls() {
        tracing::warn!(reason = format!("{e:#}"), "TLS files refused; the previous certificate stays");
    }
}
