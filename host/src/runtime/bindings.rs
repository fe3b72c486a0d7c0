//! The only `bindgen!` of the host: Rust bindings for the `wharf:handler`
//! world. Nothing generated here is visible outside `runtime/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wharf:handler/wharf",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use self::wharf::handler::types;
