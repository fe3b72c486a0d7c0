//! `no-timer-export`: a test handler for the host's own tests, not an
//! example. Built against wharf:handler@0.2.0 with its own world, which
//! imports `timers` but exports only `handler` (no `on-timer`): every
//! message is answered with what `timers.set` said.

wit_bindgen::generate!({
    path: "../../../wit/wharf.wit",
    inline: "
        package test:no-timer-export;

        world no-timer-export {
            import wharf:handler/timers@0.2.0;
            export wharf:handler/handler@0.2.0;
        }
    ",
    world: "test:no-timer-export/no-timer-export",
    generate_all,
});

use exports::wharf::handler::handler::Guest;
use wharf::handler::timers;
use wharf::handler::types::{Accept, Message, Reject, Request};

struct NoTimerExport;

impl Guest for NoTimerExport {
    fn on_open(_conn: u64, _req: Request) -> Result<Accept, Reject> {
        Ok(Accept { subprotocol: None, metadata: Vec::new() })
    }

    fn on_message(_conn: u64, _msg: Message) -> Option<Message> {
        let answer = match timers::set("t", timers::When::AfterMs(10), b"") {
            Ok(()) => "ok".to_string(),
            Err(timers::Error::NotAllowed) => "error: not allowed".to_string(),
            Err(_) => "error: another error".to_string(),
        };
        Some(Message::Text(answer))
    }

    fn on_close(_conn: u64, _code: u16, _reason: String) {}
}

export!(NoTimerExport);
