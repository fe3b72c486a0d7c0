// `rooms` in TypeScript: chat rooms whose clients miss nothing across
// reconnects, with the behaviour of examples/rooms (see there).
//
// A client opens `?room=NAME&name=NICK`, and after a drop reopens it with
// `&since=OFFSET&epoch=EPOCH`, the position of the last message it saw.
// Every message is published stamped with its position; the host keeps each
// room's history (`[[channels]] match = "room:*"`) and replays what the
// client missed before the live messages, none twice. After the replay the
// client gets `{"type":"welcome","recovered":…,"replayed":…,"offset":…,"epoch":…}`.
// `{"type":"history","limit":N}` (default 20, at most 100) answers the
// room's last messages: `{"type":"history","recovered":…,"offset":…,"epoch":…,"messages":[…]}`.
import { channels, parseJson, Reject, WharfError, type Connection, type Handler, type Message, type Request } from "wharf";

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_HISTORY = 100;

function code(e: unknown): string {
  return e instanceof WharfError ? e.code : String(e);
}

const rooms: Handler = {
  onOpen(conn: Connection, req: Request) {
    const room = req.params.room ?? "lobby";
    const name = req.params.name ?? "anonymous";
    if (!NAME.test(room) || !NAME.test(name)) throw new Reject(400, "room and name: 1 to 64 ASCII letters, digits, - or _");
    let since;
    if (req.params.since !== undefined && req.params.epoch !== undefined) {
      if (!/^[0-9]{1,19}$/.test(req.params.since)) throw new Reject(400, "since must be an offset");
      since = { offset: req.params.since, epoch: req.params.epoch };
    }
    let joined;
    try {
      joined = conn.subscribe(`room:${room}`, { since });
    } catch (e) {
      throw new Reject(503, `cannot join the room: ${code(e)}`);
    }
    const latest = joined.latest ?? { offset: 0, epoch: "" };
    conn.sendJson({ type: "welcome", room, recovered: joined.recovered, replayed: joined.replayed, ...latest });
    return { metadata: { room, name } };
  },

  onMessage(conn: Connection, msg: Message) {
    if (typeof msg !== "string") return;
    const room = conn.metadata("room");
    if (room === undefined) return;
    const parsed = parseJson<{ type?: unknown; text?: unknown; limit?: unknown }>(msg);
    const isObject = parsed !== null && typeof parsed === "object" && !Array.isArray(parsed);
    if (isObject && parsed.type === "history") {
      const limit = Number.isInteger(parsed.limit) && (parsed.limit as number) >= 0 ? Math.min(parsed.limit as number, MAX_HISTORY) : 20;
      return JSON.stringify(recent(room, limit));
    }
    const text = isObject ? (typeof parsed.text === "string" ? parsed.text : "") : msg;
    if (text === "") return;
    try {
      channels.publishStamped(`room:${room}`, { type: "say", from: conn.metadata("name") ?? "", text });
    } catch (e) {
      return JSON.stringify({ type: "error", error: code(e) });
    }
  },
};

// The reply to a `history` request: the room's last `limit` messages.
function recent(room: string, limit: number): object {
  try {
    const page = channels.history(`room:${room}`, { limit });
    const messages = page.publications.flatMap((p) => (typeof p.msg === "string" ? [JSON.parse(p.msg)] : []));
    return { type: "history", recovered: page.recovered, ...page.latest, messages };
  } catch (e) {
    return { type: "error", error: code(e) };
  }
}

export default rooms;
