// `js-faulty`: a test handler for the host's own tests, not an example.
//
// It echoes, but misbehaves on command: `throw` throws (the event ends, the
// connection closes with 1011), `spin` loops forever (stopped by the event
// deadline), `bomb` allocates until the memory cap stops it. `whoami`
// answers the connection id; on-close records each close's code in
// key/value (`closed:<id>`), which `close-code?<id>` reads back, so tests
// see that on-close ran exactly once and with which code. An open whose
// query says `throw` throws (the client gets 500); `reject=STATUS` rejects.
// `publish:CH:TEXT` publishes and answers the position as JSON (`null` on
// a channel without history), or `error: CODE`. `forward:HANDLER:TEXT`
// hands TEXT on to another handler of the route (`forwarded`, or
// `error: CODE`).
import { channels, kv, pipeline, Reject, WharfError } from "wharf";

export default {
  onOpen(conn, req) {
    if (req.params.throw !== undefined) throw new Error("asked to throw in onOpen");
    if (req.params.reject !== undefined) throw new Reject(Number(req.params.reject), "rejected by request");
  },

  onMessage(conn, msg) {
    if (typeof msg !== "string") return msg;
    if (msg === "whoami") return conn.id;
    if (msg === "throw") throw new Error("asked to throw");
    if (msg === "spin") for (;;) {}
    if (msg === "bomb") {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(7));
    }
    if (msg.startsWith("publish:")) {
      const [, channel, text] = msg.split(":");
      try {
        return JSON.stringify(channels.publish(channel, text) ?? null);
      } catch (e) {
        if (e instanceof WharfError) return `error: ${e.code}`;
        throw e;
      }
    }
    if (msg.startsWith("forward:")) {
      const [, to, ...text] = msg.split(":");
      try {
        pipeline.forward(to, text.join(":"));
        return "forwarded";
      } catch (e) {
        if (e instanceof WharfError) return `error: ${e.code}`;
        throw e;
      }
    }
    if (msg.startsWith("close-code?")) return kv.get(`closed:${msg.slice("close-code?".length)}`) ?? "";
    return msg;
  },

  onClose(conn, code) {
    kv.set(`closed:${conn.id}`, String(code));
  },
};
