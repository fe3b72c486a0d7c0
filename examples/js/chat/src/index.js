// `chat` in JavaScript: the chat service of the Fanout "WebSockets with AWS
// Lambda" article, with the behaviour of examples/chat.
//
// Every connection joins channel `room` on open. `/nick NAME` stores `nick`
// in the connection's metadata (kept by the host between events) and
// replies `nickname set to [NAME]`; any other text is published to `room`
// as `NICK: text` (`anonymous` until a nick is set), so every member, the
// sender too, receives it.
import { channels, Reject } from "wharf";

const ROOM = "room";

export default {
  onOpen(conn) {
    try {
      conn.subscribe(ROOM);
    } catch (e) {
      throw new Reject(503, `cannot join the room: ${e.code}`);
    }
  },

  onMessage(conn, msg) {
    if (typeof msg !== "string") return;
    if (msg.startsWith("/nick ")) {
      const nick = msg.slice("/nick ".length);
      try {
        conn.setMetadata("nick", nick);
        return `nickname set to [${nick}]`;
      } catch (e) {
        return `cannot set nickname: ${e.code}`;
      }
    }
    let nick;
    try {
      nick = conn.metadata("nick") ?? "anonymous";
    } catch {
      nick = "anonymous";
    }
    try {
      channels.publish(ROOM, `${nick}: ${msg}`);
    } catch (e) {
      return `not sent: ${e.code}`;
    }
  },
};
