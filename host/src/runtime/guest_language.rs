//! Which language a component was written in, read off its custom
//! sections, for the runtime defaults that depend on it.
//!
//! componentize-js writes `language: JavaScript` into the component's
//! `producers` section; componentize-py links CPython as a module named
//! `libpython3.N.so`. Anything else counts as compiled code (Rust, C, Go),
//! whose memory does not grow once it has settled.

/// A guest's language, as far as the runtime's defaults care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestLanguage {
    /// SpiderMonkey (componentize-js).
    JavaScript,
    /// CPython (componentize-py).
    Python,
    /// Anything else.
    Compiled,
}

impl GuestLanguage {
    /// Reads it off `bytes`; a component that does not parse is `Compiled`
    /// (compiling it reports why).
    pub fn detect(bytes: &[u8]) -> GuestLanguage {
        let mut python = false;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            let Ok(wasmparser::Payload::CustomSection(section)) = payload else { continue };
            match section.as_known() {
                wasmparser::KnownCustom::Producers(producers) => {
                    for field in producers.into_iter().flatten() {
                        if field.name == "language"
                            && field.values.into_iter().flatten().any(|v| v.name == "JavaScript")
                        {
                            return GuestLanguage::JavaScript;
                        }
                    }
                }
                wasmparser::KnownCustom::ComponentName(_) | wasmparser::KnownCustom::Name(_) => {
                    python |= section.data().windows(10).any(|w| w == b"libpython3");
                }
                _ => {}
            }
        }
        if python { GuestLanguage::Python } else { GuestLanguage::Compiled }
    }

    /// Its name in logs.
    pub fn name(self) -> &'static str {
        match self {
            GuestLanguage::JavaScript => "javascript",
            GuestLanguage::Python => "python",
            GuestLanguage::Compiled => "compiled",
        }
    }

    /// How far a warm instance may grow before it is dropped rather than
    /// pooled, when the config does not say (`limits.pool_growth_mib`).
    /// Under steady echo traffic a JavaScript instance's heap grows by
    /// about 6 MiB before SpiderMonkey's collector settles (measured with
    /// `make bench-languages`); at 4 MiB each instance was thrown away and
    /// instantiated again every few thousand events. CPython's heap grows in
    /// arenas the same way.
    pub fn default_pool_growth_bytes(self) -> usize {
        match self {
            GuestLanguage::JavaScript | GuestLanguage::Python => 16 << 20,
            GuestLanguage::Compiled => 4 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(file: &str) -> Option<Vec<u8>> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file)).ok()
    }

    #[test]
    fn each_example_is_told_apart() {
        let rust = component("target/wasm32-wasip2/release/echo.wasm").expect("make guests builds the Rust echo");
        assert_eq!(GuestLanguage::detect(&rust), GuestLanguage::Compiled);
        assert_eq!(GuestLanguage::detect(b"not wasm"), GuestLanguage::Compiled);
        // The JavaScript and Python components are built by `make components`,
        // which `make test` runs before the tests.
        let js = component("target/components/js-echo.wasm").expect("make components builds js-echo");
        assert_eq!(GuestLanguage::detect(&js), GuestLanguage::JavaScript);
        let py = component("target/components/py-echo.wasm").expect("make components builds py-echo");
        assert_eq!(GuestLanguage::detect(&py), GuestLanguage::Python);
    }
}
