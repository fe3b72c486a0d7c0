//! componentize-py's runtime (CPython on wasi-libc) imports `wasi:sockets`
//! whether a handler opens a socket or not, and the host refuses every
//! component that imports the network. This module takes those imports out:
//! it generates, from the WASI WIT, a component that exports exactly the
//! socket interfaces the handler imports with every function trapping
//! ("handlers get no network"), and composes it in (wac's `plug`). The
//! result imports no socket interface; a handler that tries one fails its
//! event (the host closes the connection with 1011).

use anyhow::Context;

/// The WASI packages the stand-in is generated from (WASI 0.2.12).
const WASI: [(&str, &str); 3] = [
    ("io.wit", include_str!("wasi/io.wit")),
    ("clocks.wit", include_str!("wasi/clocks.wit")),
    ("sockets.wit", include_str!("wasi/sockets.wit")),
];
const WASI_VERSION: &str = "0.2.12";

/// The component's own `wasi:sockets/*` imports (not those of the
/// components nested in it, which a composition satisfies inside).
pub(super) fn socket_imports(component: &[u8]) -> anyhow::Result<Vec<String>> {
    use wasmparser::Payload;
    let mut found = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload.context("reading the component")? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let name = import.context("reading the component's imports")?.name.name;
                    if name.starts_with("wasi:sockets/") {
                        found.push(name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

/// `component` with its socket imports satisfied by trapping stand-ins;
/// `component` itself when it imports none.
pub(super) fn strip(component: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let sockets = socket_imports(&component)?;
    let Some(version) = sockets.first().and_then(|s| s.split_once('@')).map(|(_, v)| v.to_string()) else {
        return Ok(component);
    };
    anyhow::ensure!(
        version.starts_with("0.2."),
        "the component imports WASI sockets {version}; this host knows WASI 0.2"
    );
    let stand_in = stand_in(&sockets, &version).context("generating the no-network stand-in")?;
    let mut graph = wac_graph::CompositionGraph::new();
    let handler = wac_graph::types::Package::from_bytes("handler", None, component, graph.types_mut())
        .context("reading the component for composition")?;
    let handler = graph.register_package(handler)?;
    let plug = wac_graph::types::Package::from_bytes("no-network", None, stand_in, graph.types_mut())?;
    let plug = graph.register_package(plug)?;
    wac_graph::plug(&mut graph, vec![plug], handler).context("composing the no-network stand-in")?;
    let composed = graph.encode(wac_graph::EncodeOptions::default()).context("encoding the composed component")?;
    let left = socket_imports(&composed)?;
    anyhow::ensure!(left.is_empty(), "socket imports left after composition: {}", left.join(", "));
    Ok(composed)
}

/// A component exporting `sockets` (names with version `version`) whose
/// functions all trap.
fn stand_in(sockets: &[String], version: &str) -> anyhow::Result<Vec<u8>> {
    let mut resolve = wit_parser::Resolve::default();
    for (file, text) in WASI {
        let text = text.replace(&format!("@{WASI_VERSION}"), &format!("@{version}"));
        resolve.push_str(file, &text).with_context(|| format!("parsing the WASI {file}"))?;
    }
    let mut world = String::from("package wharf:no-network;\n\nworld stand-in {\n");
    for s in sockets {
        world += &format!("    export {s};\n");
    }
    world += "}\n";
    let package = resolve.push_str("stand-in.wit", &world).context("the stand-in's world")?;
    let world = resolve.select_world(&[package], Some("stand-in"))?;
    let mut module = wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8)?;
    wit_component::ComponentEncoder::default().module(&module)?.validate(true).encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports(component: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(component) {
            if let wasmparser::Payload::ComponentExportSection(reader) = payload.unwrap() {
                // Interface exports; inner components' sections name their
                // functions and types.
                names.extend(reader.into_iter().map(|e| e.unwrap().name.name.to_string()).filter(|n| n.contains(':')));
            }
        }
        names
    }

    #[test]
    fn the_stand_in_exports_exactly_the_imported_socket_interfaces_at_their_version() {
        let sockets = ["wasi:sockets/network@0.2.9".to_string(), "wasi:sockets/tcp@0.2.9".to_string()];
        let component = stand_in(&sockets, "0.2.9").unwrap();
        assert_eq!(exports(&component), sockets);
        assert!(socket_imports(&component).unwrap().is_empty(), "the stand-in imports no socket");
        // A component without socket imports is left as it is.
        assert_eq!(strip(component.clone()).unwrap(), component);
    }
}
