// `app-rooms` in TypeScript, with the behaviour of examples/app/rooms (see
// there): after app-auth in the chain of `/app`, it welcomes the user
// (`{"type":"welcome","user":…}`) and gets the messages their `action`
// picks: `join` (a room), `say` (to it), `leave`.
import { channels, parseJson, Reject, type Connection, type Handler, type Message } from "wharf";

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

function channel(room: string): string {
  return `room:${room}`;
}

function error(why: string): string {
  return JSON.stringify({ error: why, type: "error" });
}

const rooms: Handler = {
  onOpen(conn: Connection) {
    // Set by app-auth's onOpen, which ran first.
    const user = conn.metadata("user");
    if (user === undefined) throw new Reject(401, "not signed in");
    conn.sendJson({ type: "welcome", user });
  },

  onMessage(conn: Connection, msg: Message) {
    const request = parseJson(msg) as { action?: unknown; room?: unknown; text?: unknown } | undefined;
    if (request === undefined) return undefined;
    const user = conn.metadata("user") ?? "";
    const current = conn.metadata("room");
    switch (request.action) {
      case "join": {
        const room = request.room;
        if (typeof room !== "string" || !NAME.test(room)) return undefined;
        if (current !== undefined) conn.unsubscribe(channel(current));
        conn.subscribe(channel(room));
        conn.setMetadata("room", room);
        channels.publishJson(channel(room), { room, type: "joined", user });
        return undefined;
      }
      case "say": {
        if (current === undefined) return error("join a room first");
        const text = typeof request.text === "string" ? request.text : "";
        channels.publishJson(channel(current), { from: user, room: current, text, type: "say" });
        return undefined;
      }
      case "leave": {
        if (current === undefined) return undefined;
        conn.unsubscribe(channel(current));
        conn.deleteMetadata("room");
        return JSON.stringify({ room: current, type: "left" });
      }
      default:
        return error("unknown action");
    }
  },

  onClose(conn: Connection) {
    const room = conn.metadata("room");
    const user = conn.metadata("user");
    if (room !== undefined && user !== undefined) channels.publishJson(channel(room), { room, type: "left", user });
  },
};

export default rooms;
