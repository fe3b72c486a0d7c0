//! Python: componentize-py wraps `app.py`, the `wharf` SDK and the glue
//! between them into a component of the Wharf world; then the socket
//! imports its runtime carries are taken out (`no_network`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Sdk, Tool, default_out, work_dir};

/// The module componentize-py starts from: the handler behind the glue.
const ENTRY: &str = "# Written by `wharf build`: the handler behind the WIT exports.\n\
import app\n\
from wharf._export import export_handlers\n\
\n\
Handler, TimerHandler = export_handlers(app)\n";

/// Builds `dir/app.py`; returns the component's path.
pub(super) fn build(dir: &Path, out: Option<&Path>, sdk: &Sdk) -> anyhow::Result<PathBuf> {
    let py = sdk.python();
    let venv = py.join(".venv");
    let componentize = Tool {
        name: "componentize-py",
        program: venv.join("bin/componentize-py"),
        install: format!(
            "python3 -m venv {0} && {0}/bin/pip install -r {1}",
            venv.display(),
            py.join("requirements.txt").display()
        ),
    };
    let work = work_dir(dir)?;
    std::fs::write(work.join("wharf_entry.py"), ENTRY).with_context(|| format!("writing {}", work.display()))?;
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| default_out(dir));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let wit = sdk.wit();
    let raw = work.join("componentized.wasm");
    componentize.run(
        dir,
        &[
            OsStr::new("--quiet"),
            OsStr::new("--wit-path"),
            wit.as_os_str(),
            OsStr::new("--world"),
            OsStr::new("wharf"),
            OsStr::new("componentize"),
            OsStr::new("wharf_entry"),
            OsStr::new("--python-path"),
            work.as_os_str(),
            OsStr::new("--python-path"),
            dir.as_os_str(),
            OsStr::new("--python-path"),
            py.as_os_str(),
            OsStr::new("--output"),
            raw.as_os_str(),
        ],
    )?;
    let component = std::fs::read(&raw).with_context(|| format!("reading {}", raw.display()))?;
    let component = super::no_network::strip(component)
        .with_context(|| format!("taking the socket imports out of {}", raw.display()))?;
    std::fs::write(&out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}
