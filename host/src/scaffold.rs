//! `wharf new NAME`: a handler crate that builds for `wasm32-wasip2` and
//! passes `wharf test` as created.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Creates the crate in directory `dir` (its last component is the crate
/// name), using the SDK at `sdk`. Refuses an existing directory.
pub fn create(dir: &Path, sdk: &Path) -> anyhow::Result<PathBuf> {
    let name = dir.file_name().and_then(|n| n.to_str()).context("the crate needs a name")?.to_string();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    anyhow::ensure!(
        valid,
        "`{name}` is not a crate name: use lower-case letters, digits, `-` and `_`, starting with a letter"
    );
    anyhow::ensure!(!dir.exists(), "{} already exists; choose another name", dir.display());
    let sdk = std::fs::canonicalize(sdk)
        .with_context(|| format!("the wharf-guest SDK is not at {} (pass --sdk PATH)", sdk.display()))?;
    let wasm = name.replace('-', "_");
    let files: [(&str, String); 5] = [
        ("Cargo.toml", CARGO_TOML.replace("{name}", &name).replace("{sdk}", &sdk.display().to_string())),
        ("src/lib.rs", LIB_RS.replace("{name}", &name)),
        ("tests/basic.toml", SCENARIO.replace("{name}", &name)),
        ("README.md", README.replace("{name}", &name).replace("{wasm}", &wasm)),
        (".gitignore", "target/\n".to_string()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("files are inside the crate"))
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir.to_path_buf())
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
wharf-guest = { path = "{sdk}" }

[profile.release]
opt-level = "s"
lto = true
strip = true

# A crate of its own, not part of an enclosing workspace.
[workspace]
"#;

const LIB_RS: &str = r#"//! `{name}`: a Wharf handler. It greets each connection, answers every text
//! message with `{name}: <message>`, and counts messages in key/value.
//!
//! Build: `cargo build --release --target wasm32-wasip2`
//! Test:  `wharf test target/wasm32-wasip2/release/<crate>.wasm tests/*.toml`

use wharf_guest::{Accept, Connection, Handler, Message, Reject, Request, export_handler, kv};

struct App;

impl Handler for App {
    fn on_open(conn: Connection, _req: Request) -> Result<Accept, Reject> {
        conn.send("welcome").map_err(|e| Reject::new(503, e.to_string()))?;
        Ok(Accept::default())
    }

    fn on_message(_conn: Connection, msg: Message) -> Option<Message> {
        let count = kv::increment("messages", 1).unwrap_or(-1);
        match msg {
            Message::Text(text) => Some(Message::text(format!("{name}: {text} (#{count})"))),
            Message::Binary(bytes) => Some(Message::Binary(bytes)),
        }
    }
}

export_handler!(App);
"#;

const SCENARIO: &str = r#"name = "greets, answers and counts"

[[step]]
client = "ada"
open = "/"

[[step]]
client = "ada"
expect = "welcome"

[[step]]
client = "ada"
send = "hello"

[[step]]
client = "ada"
expect = "{name}: hello (#1)"

[[step]]
client = "ada"
send_binary = "00ff"

[[step]]
client = "ada"
expect_binary = "00ff"

[[step]]
kv = "messages"
equals = "2"
"#;

const README: &str = r#"# {name}

A Wharf WebSocket handler.

```sh
cargo build --release --target wasm32-wasip2
wharf test target/wasm32-wasip2/release/{wasm}.wasm tests/*.toml
```

To serve it, add to a Wharf config:

```toml
[plugins.{wasm}]
component = "path/to/target/wasm32-wasip2/release/{wasm}.wasm"

[[routes]]
path = "/{name}"
plugin = "{wasm}"
```

`wharf serve` swaps in each rebuilt `.wasm` without dropping connections.
"#;
