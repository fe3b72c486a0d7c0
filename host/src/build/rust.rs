//! Rust: `cargo build --release --target wasm32-wasip2`; the component is
//! the crate's `cdylib`, found in cargo's own report of what it built.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

/// Builds the crate in `dir`; returns the component's path (copied to `out`
/// when given).
pub(super) fn build(dir: &Path, out: Option<&Path>) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics"])
        .current_dir(dir)
        .stderr(Stdio::inherit())
        .output()
        .context(
            "running cargo: install Rust with rustup (https://rustup.rs), then `rustup target add wasm32-wasip2`",
        )?;
    anyhow::ensure!(output.status.success(), "cargo build failed ({}); its messages are above", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let wasm = cdylib(&stdout).context("cargo built no cdylib: a handler crate has `crate-type = [\"cdylib\"]`")?;
    match out {
        None => Ok(wasm),
        Some(out) => {
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::copy(&wasm, out).with_context(|| format!("copying {} to {}", wasm.display(), out.display()))?;
            Ok(out.to_path_buf())
        }
    }
}

/// The last `.wasm` cdylib in cargo's JSON messages.
fn cdylib(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib")))
        .filter_map(|m| {
            m["filenames"]
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
        })
        .next()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_component_is_the_cdylib_cargo_reports() {
        let messages = r#"{"reason":"compiler-artifact","target":{"kind":["lib"]},"filenames":["/t/libdep.rlib"]}
{"reason":"compiler-artifact","target":{"kind":["cdylib"]},"filenames":["/t/wasm32-wasip2/release/hello.wasm"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(super::cdylib(messages).unwrap(), std::path::PathBuf::from("/t/wasm32-wasip2/release/hello.wasm"));
        assert_eq!(super::cdylib(r#"{"reason":"build-finished"}"#), None);
    }
}
