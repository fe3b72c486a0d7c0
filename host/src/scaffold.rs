//! `wharf new NAME --lang rust|js|ts|python`: a handler project that builds
//! with `wharf build` and passes `wharf test` as created. Every language's
//! template behaves the same, so one scenario file tests them all.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::build::{Language, Sdk};

/// Creates the project in directory `dir` (its last component is the
/// project's name) in `lang`, using the SDKs in `sdk`. Refuses an existing
/// directory.
pub fn create(dir: &Path, lang: Language, sdk: &Sdk) -> anyhow::Result<PathBuf> {
    let name = dir.file_name().and_then(|n| n.to_str()).context("the project needs a name")?.to_string();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    anyhow::ensure!(
        valid,
        "`{name}` is not a project name: use lower-case letters, digits, `-` and `_`, starting with a letter"
    );
    anyhow::ensure!(!dir.exists(), "{} already exists; choose another name", dir.display());
    let fill = |t: &str| {
        t.replace("{name}", &name)
            .replace("{wasm}", &name.replace('-', "_"))
            .replace("{sdk}", &sdk.root.display().to_string())
            .replace("{js_sdk}", &sdk.js().display().to_string())
    };
    let mut files: Vec<(&str, String)> = vec![("tests/basic.toml", fill(SCENARIO))];
    match lang {
        Language::Rust => files.extend([
            ("Cargo.toml", fill(CARGO_TOML)),
            ("src/lib.rs", fill(LIB_RS)),
            ("README.md", fill(&README.replace("{build}", README_RUST))),
            (".gitignore", "target/\n".to_string()),
        ]),
        Language::JavaScript => files.extend([
            ("package.json", fill(PACKAGE_JSON)),
            ("src/index.js", fill(INDEX_JS)),
            ("README.md", fill(&README.replace("{build}", README_OTHER))),
            (".gitignore", "target/\nnode_modules/\n".to_string()),
        ]),
        Language::TypeScript => files.extend([
            ("package.json", fill(PACKAGE_JSON)),
            ("tsconfig.json", fill(TSCONFIG_JSON)),
            ("src/index.ts", fill(INDEX_TS)),
            ("README.md", fill(&README.replace("{build}", README_OTHER))),
            (".gitignore", "target/\nnode_modules/\n".to_string()),
        ]),
        Language::Python => files.extend([
            ("app.py", fill(APP_PY)),
            ("README.md", fill(&README.replace("{build}", README_OTHER))),
            (".gitignore", "target/\n__pycache__/\n".to_string()),
        ]),
    }
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("files are inside the project"))
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
//! Build: `wharf build` (or `cargo build --release --target wasm32-wasip2`)
//! Test:  `wharf test $(wharf build | tail -n 1) tests/*.toml`

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
wharf build                                   # the last line is the component's path
wharf test $(wharf build | tail -n 1) tests/*.toml
```

To serve it, add to a Wharf config:

```toml
[plugins.{wasm}]
component = "path/to/{build}"

[[routes]]
path = "/{name}"
plugin = "{wasm}"
```

`wharf serve` swaps in each rebuilt `.wasm` without dropping connections.
"#;

const README_RUST: &str = "target/wasm32-wasip2/release/{wasm}.wasm";
const README_OTHER: &str = "target/{name}.wasm";

const PACKAGE_JSON: &str = r#"{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "description": "A Wharf WebSocket handler: `wharf build` bundles src/index and the npm packages it imports into a component"
}
"#;

const TSCONFIG_JSON: &str = r#"{
  "compilerOptions": {
    "strict": true,
    "noEmit": true,
    "target": "es2022",
    "lib": ["es2022"],
    "module": "esnext",
    "moduleResolution": "bundler",
    "types": [],
    "paths": { "wharf": ["{js_sdk}/src/index.d.ts"] }
  },
  "include": ["src"]
}
"#;

const INDEX_JS: &str = r#"// `{name}`: a Wharf handler. It greets each connection, answers every text
// message with `{name}: <message> (#count)`, echoes binary messages, and
// counts messages in key/value.
import { kv, Reject } from "wharf";

export default {
  onOpen(conn, req) {
    try {
      conn.send("welcome");
    } catch (e) {
      throw new Reject(503, String(e));
    }
  },

  onMessage(conn, msg) {
    let count;
    try {
      count = kv.increment("messages", 1);
    } catch {
      count = -1;
    }
    return typeof msg === "string" ? `{name}: ${msg} (#${count})` : msg;
  },
};
"#;

const INDEX_TS: &str = r#"// `{name}`: a Wharf handler. It greets each connection, answers every text
// message with `{name}: <message> (#count)`, echoes binary messages, and
// counts messages in key/value.
import { kv, Reject, type Connection, type Handler, type Message, type Request } from "wharf";

const handler: Handler = {
  onOpen(conn: Connection, _req: Request) {
    try {
      conn.send("welcome");
    } catch (e) {
      throw new Reject(503, String(e));
    }
  },

  onMessage(_conn: Connection, msg: Message) {
    let count: number;
    try {
      count = kv.increment("messages", 1);
    } catch {
      count = -1;
    }
    return typeof msg === "string" ? `{name}: ${msg} (#${count})` : msg;
  },
};

export default handler;
"#;

const APP_PY: &str = r#""""`{name}`: a Wharf handler. It greets each connection, answers every text
message with `{name}: <message> (#count)`, echoes binary messages, and counts
messages in key/value."""

from wharf import Handler, Reject, WharfError, kv


class App(Handler):
    def on_open(self, conn, req):
        try:
            conn.send("welcome")
        except WharfError as e:
            raise Reject(503, str(e))

    def on_message(self, conn, msg):
        try:
            count = kv.increment("messages", 1)
        except WharfError:
            count = -1
        if isinstance(msg, str):
            return f"{name}: {msg} (#{count})"
        return msg
"#;
