//! JavaScript and TypeScript: type check (TypeScript), bundle the handler
//! and the npm packages it imports into one ES module with esbuild, then
//! componentize it with componentize-js against the Wharf world (with two
//! speed-ups to the bindings it generates: `guest-sdk/js/build/`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Language, Sdk, Tool, default_out, work_dir};

/// Builds `dir/src/index.{js,ts}`; returns the component's path.
pub(super) fn build(dir: &Path, language: Language, out: Option<&Path>, sdk: &Sdk) -> anyhow::Result<PathBuf> {
    let js = sdk.js();
    let install = format!("npm ci --prefix {}", js.display());
    let bin = js.join("node_modules/.bin");
    let tool = |name: &'static str, file: &str| Tool { name, program: bin.join(file), install: install.clone() };
    let node = Tool { name: "Node.js", program: "node".into(), install: "apt-get install nodejs npm".into() };
    node.check().context("Node.js runs the JavaScript toolchain")?;

    let work = work_dir(dir)?;
    let source = dir.join(if language == Language::TypeScript { "src/index.ts" } else { "src/index.js" });
    if language == Language::TypeScript {
        let tsconfig = work.join("tsconfig.json");
        std::fs::write(&tsconfig, tsconfig_json(dir, &source, &js)?)
            .with_context(|| format!("writing {}", tsconfig.display()))?;
        tool("TypeScript (tsc)", "tsc")
            .run(dir, &[OsStr::new("--pretty"), OsStr::new("false"), OsStr::new("-p"), tsconfig.as_os_str()])?;
    }

    let entry = work.join("entry.js");
    std::fs::write(&entry, entry_js(&source, &js)).with_context(|| format!("writing {}", entry.display()))?;
    let bundle = work.join("bundle.js");
    let alias = format!("--alias:wharf={}", js.join("src/index.js").display());
    let outfile = format!("--outfile={}", bundle.display());
    tool("esbuild", "esbuild").run(
        dir,
        &[
            entry.as_os_str(),
            OsStr::new("--bundle"),
            OsStr::new("--format=esm"),
            OsStr::new("--platform=neutral"),
            OsStr::new("--main-fields=module,main"),
            OsStr::new("--external:wharf:*"),
            OsStr::new(&alias),
            OsStr::new(&outfile),
            OsStr::new("--log-level=warning"),
        ],
    )?;

    let out = out.map(Path::to_path_buf).unwrap_or_else(|| default_out(dir));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let wit = sdk.wit();
    tool("componentize-js", "componentize-js").run_with(
        dir,
        &[
            bundle.as_os_str(),
            OsStr::new("--wit"),
            wit.as_os_str(),
            OsStr::new("--world-name"),
            OsStr::new("wharf"),
            // The Wharf world has no HTTP: leave out wasi:http and the
            // fetch event StarlingMonkey adds by default.
            OsStr::new("--disable"),
            OsStr::new("http"),
            OsStr::new("fetch-event"),
            OsStr::new("--out"),
            out.as_os_str(),
        ],
        &[("NODE_OPTIONS", node_options(&js.join("build/hook.mjs")))],
    )?;
    Ok(out)
}

/// The user's `NODE_OPTIONS` and the hook that hands componentize-js's
/// generated bindings to `guest-sdk/js/build/bindings.mjs` (faster string
/// lowering, no debug logging calls) before they are snapshotted.
fn node_options(hook: &Path) -> std::ffi::OsString {
    let mut options = std::env::var_os("NODE_OPTIONS").unwrap_or_default();
    if !options.is_empty() {
        options.push(" ");
    }
    let hook = std::path::absolute(hook).unwrap_or_else(|_| hook.to_path_buf());
    options.push(format!("--import=\"file://{}\"", hook.display()));
    options
}

/// The module componentize-js wraps: the handler, behind the SDK's glue.
fn entry_js(source: &Path, js: &Path) -> String {
    format!(
        "// Written by `wharf build`: the handler behind the WIT exports.\n\
         import app from {};\n\
         import {{ exportHandlers }} from {};\n\
         export const {{ handler, timerHandler }} = exportHandlers(app);\n",
        json_str(&source.display().to_string()),
        json_str(&js.join("src/export.js").display().to_string()),
    )
}

/// A tsconfig that checks the handler strictly against the SDK's types,
/// extending the project's own `tsconfig.json` when there is one.
fn tsconfig_json(dir: &Path, source: &Path, js: &Path) -> anyhow::Result<String> {
    let mut config = serde_json::json!({
        "compilerOptions": {
            "noEmit": true,
            "strict": true,
            "target": "es2022",
            "lib": ["es2022"],
            "module": "esnext",
            "moduleResolution": "bundler",
            "skipLibCheck": true,
            "types": [],
            "paths": { "wharf": [js.join("src/index.d.ts").display().to_string()] }
        },
        "files": [source.display().to_string()]
    });
    let own = dir.join("tsconfig.json");
    if own.is_file() {
        config["extends"] = serde_json::Value::String(own.display().to_string());
    }
    serde_json::to_string_pretty(&config).context("writing the tsconfig")
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
