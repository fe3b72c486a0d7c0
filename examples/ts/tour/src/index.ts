// `tour` in TypeScript: every host call of the `wharf` module, in one room
// (the example of docs/handlers.md; tests in examples/tour/tests), but
// channel history's and timers', which examples/ts/rooms and
// examples/ts/countdown show.
import { asBytes, channels, connection, kv, log, parseJson, Reject, WharfError, type Handler } from "wharf";

const room: Handler = {
  onOpen(conn, req) {
    // req.path, req.query, req.params (decoded), req.headers (lower-case names),
    // req.header("X-Name"), req.headerList, req.subprotocols, req.remoteAddr
    if (!req.subprotocols.includes("chat.v1")) throw new Reject(400, "speak chat.v1");
    conn.subscribe("room");
    conn.send("welcome");
    return { subprotocol: "chat.v1", metadata: { nick: req.params.nick ?? "anonymous" } };
  },

  onMessage(conn, msg) {
    if (typeof msg !== "string") return asBytes(msg); // binary: a Uint8Array, echoed
    const cmd = parseJson<{ op: string; text?: string }>(msg);
    switch (cmd?.op) {
      case "say":
        channels.publish("room", `${conn.metadata("nick")}: ${cmd.text}`);
        return;                                    // nothing: no direct reply
      case "shout":
        channels.broadcast(cmd.text ?? "", { except: conn });  // the whole route
        return;
      case "nick":
        conn.setMetadata("nick", cmd.text ?? "");
        return "ok";
      case "who":
        return JSON.stringify(channels.members("room").map((c) => c.info().metadata.nick));
      case "poke":
        connection(channels.members("room")[0].id).sendJson({ poked: conn.id });
        return;
      case "count": {
        const n = kv.increment("hits", 1);         // atomic, durable with the embedded store
        kv.set("last", String(n), { ttlMs: 60_000 });
        kv.setJson("seen", { by: conn.id });
        return String(kv.get("last")) + " " + JSON.stringify(kv.getJson("seen"));
      }
      case "claim":
        // won when "owner" was absent (undefined) and is now conn.id
        return kv.compareAndSwap("owner", undefined, conn.id) ? "won" : "lost";
      case "keys":
        return kv.listKeys("", { limit: 10 }).join(",");
      case "leave":
        conn.unsubscribe("room");
        conn.deleteMetadata("nick");
        conn.close(4000, "bye");                   // 1000 or 3000-4999, after the event
        return;
    }
    try {
      kv.set("big", "x".repeat(2_000_000));
    } catch (e) {
      if (e instanceof WharfError) return `refused: ${e.code}`;   // "too-large"
      throw e;
    }
  },

  onClose(conn, code, reason) {
    log.info("left", conn.id, code, reason);       // tagged with plugin and connection
  },
};

export default room;
