//! `wharf build [DIR]`: one command that turns a handler project in any of
//! the guest languages into a component, like `spin build`.
//!
//! The language is read off the project: `Cargo.toml` (Rust: cargo),
//! `package.json` with `src/index.ts` or `src/index.js` (TypeScript or
//! JavaScript: type check, bundle, componentize-js), `app.py` (Python:
//! componentize-py). Each toolchain lives beside its SDK under `guest-sdk/`
//! (`make tools` installs them); a missing tool is an error that names it and
//! the command that installs it. The last line printed is the component's
//! path.

mod js;
mod no_network;
mod python;
mod rust;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// A handler project's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    /// A `cdylib` crate for `wasm32-wasip2`.
    Rust,
    /// `src/index.js`.
    JavaScript,
    /// `src/index.ts`.
    TypeScript,
    /// `app.py`.
    Python,
}

impl Language {
    /// Parses `rust`, `js`, `ts` or `python` (and the long names).
    pub fn parse(s: &str) -> anyhow::Result<Language> {
        Ok(match s {
            "rust" | "rs" => Language::Rust,
            "js" | "javascript" => Language::JavaScript,
            "ts" | "typescript" => Language::TypeScript,
            "python" | "py" => Language::Python,
            other => anyhow::bail!("unknown language `{other}`: use rust, js, ts or python"),
        })
    }

    /// Which language the project in `dir` is written in.
    pub fn detect(dir: &Path) -> anyhow::Result<Language> {
        if dir.join("Cargo.toml").is_file() {
            Ok(Language::Rust)
        } else if dir.join("src/index.ts").is_file() {
            Ok(Language::TypeScript)
        } else if dir.join("src/index.js").is_file() {
            Ok(Language::JavaScript)
        } else if dir.join("app.py").is_file() {
            Ok(Language::Python)
        } else {
            anyhow::bail!(
                "{} is not a handler project: expected Cargo.toml (Rust), src/index.ts or src/index.js \
                 (TypeScript, JavaScript) or app.py (Python); `wharf new NAME --lang LANG` makes one",
                dir.display()
            )
        }
    }
}

/// Where the SDKs, their toolchains and the WIT live.
#[derive(Clone, Debug)]
pub struct Sdk {
    /// The `guest-sdk` directory.
    pub root: PathBuf,
}

impl Sdk {
    /// The SDK at `root` (`None`: this build's copy, or `WHARF_SDK`).
    pub fn locate(root: Option<PathBuf>) -> anyhow::Result<Sdk> {
        let root = root
            .or_else(|| std::env::var_os("WHARF_SDK").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"));
        let root = std::fs::canonicalize(&root).with_context(|| {
            format!("the Wharf SDK is not at {} (pass --sdk PATH or set WHARF_SDK)", root.display())
        })?;
        Ok(Sdk { root })
    }

    /// The WIT the JavaScript and Python SDKs are generated from: the
    /// current `wharf:handler` world, as one file (its directory also holds
    /// the frozen versions in `deps/`, which the generators would take for
    /// dependencies).
    pub fn wit(&self) -> PathBuf {
        self.root.join("../wit/wharf.wit")
    }

    /// The JavaScript SDK (`guest-sdk/js`).
    pub fn js(&self) -> PathBuf {
        self.root.join("js")
    }

    /// The Python SDK (`guest-sdk/python`).
    pub fn python(&self) -> PathBuf {
        self.root.join("python")
    }
}

/// Builds the project in `dir`; returns the component's path. `out`
/// overrides where the component goes.
pub fn build(dir: &Path, out: Option<&Path>, sdk: &Sdk) -> anyhow::Result<PathBuf> {
    let dir = std::fs::canonicalize(dir).with_context(|| format!("no project directory {}", dir.display()))?;
    let language = Language::detect(&dir)?;
    let out = match out {
        Some(o) => Some(std::path::absolute(o).with_context(|| format!("resolving {}", o.display()))?),
        None => None,
    };
    let wasm = match language {
        Language::Rust => rust::build(&dir, out.as_deref())?,
        Language::JavaScript | Language::TypeScript => js::build(&dir, language, out.as_deref(), sdk)?,
        Language::Python => python::build(&dir, out.as_deref(), sdk)?,
    };
    Ok(wasm)
}

/// The project's name: its directory's name, as a file name stem.
fn project_name(dir: &Path) -> String {
    let raw = dir.file_name().and_then(|n| n.to_str()).unwrap_or("handler");
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect()
}

/// Where a component goes by default: `DIR/target/NAME.wasm`.
fn default_out(dir: &Path) -> PathBuf {
    dir.join("target").join(format!("{}.wasm", project_name(dir)))
}

/// A directory for build intermediates: `DIR/target/wharf`.
fn work_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let work = dir.join("target/wharf");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    Ok(work)
}

/// A tool a build runs, with what to tell the user when it is missing.
struct Tool {
    /// Its name, as the user knows it.
    name: &'static str,
    /// The executable.
    program: PathBuf,
    /// The command that installs it.
    install: String,
}

impl Tool {
    /// Checks that the tool exists, then runs it with `args` in `cwd`; its
    /// output goes to the user (a compiler's errors name file and line).
    fn run(&self, cwd: &Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        self.run_with(cwd, args, &[])
    }

    /// [`Tool::run`] with environment variables set for it.
    fn run_with(
        &self,
        cwd: &Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, std::ffi::OsString)],
    ) -> anyhow::Result<()> {
        self.check()?;
        let status = Command::new(&self.program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            // componentize-py is Rust: its errors are the Python ones,
            // without a backtrace of the tool itself.
            .env("RUST_BACKTRACE", "0")
            .status()
            .with_context(|| format!("running {} ({})", self.name, self.program.display()))?;
        anyhow::ensure!(status.success(), "{} failed ({status}); its messages are above", self.name);
        Ok(())
    }
}

impl Tool {
    /// Whether the tool is there; the error names it and how to install it.
    fn check(&self) -> anyhow::Result<()> {
        let found =
            if self.program.components().count() > 1 { self.program.is_file() } else { which(&self.program).is_some() };
        anyhow::ensure!(
            found,
            "{} is not installed ({} not found): install it with `{}`",
            self.name,
            self.program.display(),
            self.install
        );
        Ok(())
    }
}

/// `program` on `PATH`.
fn which(program: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_is_read_off_the_project() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let err = Language::detect(d).unwrap_err().to_string();
        assert!(err.contains("is not a handler project") && err.contains("wharf new"), "{err}");
        std::fs::write(d.join("app.py"), "").unwrap();
        assert_eq!(Language::detect(d).unwrap(), Language::Python);
        std::fs::create_dir(d.join("src")).unwrap();
        std::fs::write(d.join("src/index.js"), "").unwrap();
        assert_eq!(Language::detect(d).unwrap(), Language::JavaScript);
        std::fs::write(d.join("src/index.ts"), "").unwrap();
        assert_eq!(Language::detect(d).unwrap(), Language::TypeScript);
        std::fs::write(d.join("Cargo.toml"), "").unwrap();
        assert_eq!(Language::detect(d).unwrap(), Language::Rust);
        assert_eq!(Language::parse("ts").unwrap(), Language::TypeScript);
        assert!(Language::parse("cobol").unwrap_err().to_string().contains("rust, js, ts or python"));
    }

    #[test]
    fn a_missing_tool_is_named_with_its_install_command() {
        let tool = Tool {
            name: "componentize-js",
            program: "/nonexistent/componentize-js".into(),
            install: "make tools".into(),
        };
        let err = tool.run(Path::new("."), &[]).unwrap_err().to_string();
        assert!(err.contains("componentize-js is not installed") && err.contains("`make tools`"), "{err}");
    }
}
