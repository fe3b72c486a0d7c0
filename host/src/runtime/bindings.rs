//! The only `bindgen!` of the host: Rust bindings for every version of the
//! `wharf:handler` world it serves, 0.2.0 (`wit/wharf.wit`) and the frozen
//! 0.1.0 (`wit/deps/`). One world imports both versions' interfaces, so the
//! linker serves a component of either; each version's `handler` export is
//! bound on its own (`plugin.rs`). Nothing generated here is visible outside
//! `runtime/`.

wasmtime::component::bindgen!({
    path: "../wit",
    inline: "
        package wharf:host;

        world all-versions {
            include wharf:handler/wharf@0.1.0;
            include wharf:handler/wharf@0.2.0;
        }
    ",
    world: "wharf:host/all-versions",
    imports: { default: async },
    exports: { default: async },
});

/// Version 0.2.0, the current one.
pub(crate) mod v2 {
    pub(crate) use super::exports::wharf::handler0_2_0::handler::{Guest, GuestIndices};
    pub(crate) use super::exports::wharf::handler0_2_0::timer_handler::{
        Guest as TimerGuest, GuestIndices as TimerGuestIndices,
    };
    pub(crate) use super::wharf::handler0_2_0::{channels, connections, kv, logging, pipeline, timers, types};
}

/// Version 0.1.0, frozen: its imports are served by 0.2.0's (`compat.rs`).
pub(crate) mod v1 {
    pub(crate) use super::exports::wharf::handler0_1_0::handler::{Guest, GuestIndices};
    pub(crate) use super::wharf::handler0_1_0::{channels, connections, kv, logging, types};
}
