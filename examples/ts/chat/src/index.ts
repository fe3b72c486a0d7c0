// `chat` in TypeScript: the chat service of the Fanout "WebSockets with AWS
// Lambda" article, with the behaviour of examples/chat (see there).
import { channels, Reject, WharfError, type Connection, type Handler, type Message } from "wharf";

const ROOM = "room";

function code(e: unknown): string {
  return e instanceof WharfError ? e.code : String(e);
}

class Chat implements Handler {
  onOpen(conn: Connection): void {
    try {
      conn.subscribe(ROOM);
    } catch (e) {
      throw new Reject(503, `cannot join the room: ${code(e)}`);
    }
  }

  onMessage(conn: Connection, msg: Message): string | void {
    if (typeof msg !== "string") return;
    if (msg.startsWith("/nick ")) {
      const nick = msg.slice("/nick ".length);
      try {
        conn.setMetadata("nick", nick);
        return `nickname set to [${nick}]`;
      } catch (e) {
        return `cannot set nickname: ${code(e)}`;
      }
    }
    let nick = "anonymous";
    try {
      nick = conn.metadata("nick") ?? "anonymous";
    } catch {
      // keep "anonymous"
    }
    try {
      channels.publish(ROOM, `${nick}: ${msg}`);
    } catch (e) {
      return `not sent: ${code(e)}`;
    }
  }
}

export default Chat;
