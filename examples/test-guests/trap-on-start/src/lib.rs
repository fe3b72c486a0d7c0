//! `trap-on-start`: a test handler for the host's own tests, not an example.
//! Its static constructor panics. Rust components for wasm32-wasip2 run
//! constructors on the first call into the component, not at instantiation,
//! so instantiation succeeds and every event traps: `wharf test`'s smoke
//! check must catch it.

use wharf_guest::{Connection, Handler, Message, export_handler};

struct Never;

impl Handler for Never {
    fn on_message(_conn: Connection, msg: Message) -> Option<Message> {
        Some(msg)
    }
}

export_handler!(Never);

extern "C" fn explode() {
    panic!("this component traps while starting");
}

/// Runs from `.init_array` before the first export call.
#[used]
#[unsafe(link_section = ".init_array")]
static START: extern "C" fn() = explode;
