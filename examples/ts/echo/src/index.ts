// `echo` in TypeScript: every text or binary message comes back unchanged,
// as the direct reply to its sender. Same behaviour as examples/echo.
import type { Connection, Handler, Message } from "wharf";

const echo: Handler = {
  onMessage(_conn: Connection, msg: Message): Message {
    return msg;
  },
};

export default echo;
