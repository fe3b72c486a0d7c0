// `countdown` in TypeScript: a room whose countdown the host runs, whoever
// is connected, with the behaviour of examples/countdown (see there).
//
// A client opens `?room=NAME` and gets `{"type":"welcome","room":…,"running":…,"left":N}`;
// `{"type":"start","seconds":N}` (1 to 3600) makes every member get
// `{"type":"started","seconds":N}`, then a `{"type":"tick","left":…}` a
// second down to 0, then `{"type":"done"}`; `{"type":"stop"}` cancels it
// (`{"type":"stopped"}`), `{"type":"status"}` answers `{"type":"status","running":…,"left":…}`.
// One timer per room, `countdown:NAME`; each firing sets the next at its
// own due time plus a second, so a late firing delays none after it.
import { channels, parseJson, Reject, text, timers, WharfError, type Connection, type Handler, type Message, type Request } from "wharf";

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_SECONDS = 3600;

/** What a room's timer carries: the seconds left after its firing's tick, and when it is due. */
interface Carried {
  room: string;
  left: number;
  at: number;
}

function channel(room: string): string {
  return `countdown:${room}`;
}

function payload(c: Carried): string {
  return JSON.stringify(c);
}

function carried(bytes: Uint8Array): Carried | undefined {
  const p = parseJson(text(bytes)) as Partial<Carried> | undefined;
  if (p === undefined || typeof p.room !== "string" || typeof p.left !== "number" || typeof p.at !== "number") return undefined;
  return { room: p.room, left: p.left, at: p.at };
}

/** Whether the room's countdown runs, and the seconds it has left. */
function status(room: string): { running: boolean; left: number } {
  const pending = timers.get(channel(room));
  const c = pending && carried(pending.payload);
  return c ? { running: true, left: c.left + 1 } : { running: false, left: 0 };
}

function start(room: string, seconds: number): void {
  const name = channel(room);
  // Set it a second from now, read back when that is, and keep that in the
  // payload: each firing schedules the next from its own due time.
  timers.set(name, 1000, payload({ room, left: seconds - 1, at: 0 }));
  const due = timers.get(name)?.dueUnixMs ?? 0;
  timers.setAt(name, due, payload({ room, left: seconds - 1, at: due }));
  channels.publishJson(name, { type: "started", seconds });
}

function error(why: string): string {
  return JSON.stringify({ type: "error", error: why });
}

const countdown: Handler = {
  onOpen(conn: Connection, req: Request) {
    const room = req.params.room ?? "lobby";
    if (!NAME.test(room)) throw new Reject(400, "room: 1 to 64 ASCII letters, digits, - or _");
    try {
      conn.subscribe(channel(room));
    } catch (e) {
      throw new Reject(503, `cannot join the room: ${e instanceof WharfError ? e.code : String(e)}`);
    }
    conn.sendJson({ type: "welcome", room, ...status(room) });
    return { metadata: { room } };
  },

  onMessage(conn: Connection, msg: Message) {
    const room = conn.metadata("room");
    if (room === undefined || typeof msg !== "string") return undefined;
    const request = parseJson(msg) as { type?: unknown; seconds?: unknown } | undefined;
    switch (request?.type) {
      case "start": {
        const s = request.seconds;
        if (typeof s !== "number" || !Number.isInteger(s) || s < 1 || s > MAX_SECONDS) return error("seconds: 1 to 3600");
        try {
          start(room, s);
        } catch (e) {
          return error(e instanceof WharfError ? e.code : String(e));
        }
        return undefined;
      }
      case "stop":
        if (timers.cancel(channel(room))) channels.publishJson(channel(room), { type: "stopped" });
        return undefined;
      case "status":
        return JSON.stringify({ type: "status", ...status(room) });
      default:
        return error('send {"type":"start","seconds":N}, {"type":"stop"} or {"type":"status"}');
    }
  },

  onTimer(_name: string, bytes: Uint8Array) {
    const c = carried(bytes);
    if (c === undefined) return;
    const name = channel(c.room);
    channels.publishJson(name, { type: "tick", left: c.left });
    if (c.left === 0) {
      channels.publishJson(name, { type: "done" });
    } else {
      // A failure here throws, so the host runs this firing again rather
      // than losing the countdown.
      timers.setAt(name, c.at + 1000, payload({ room: c.room, left: c.left - 1, at: c.at + 1000 }));
    }
  },
};

export default countdown;
