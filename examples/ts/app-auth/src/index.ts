// `app-auth` in TypeScript, with the behaviour of examples/app/auth (see
// there): `/app/login?name=NICK` issues a token
// (`{"token":…,"type":"token","user":NICK}`, valid for an hour) and closes;
// first in the chain of `/app?token=TOKEN`, it refuses an unknown token
// with 401 and accepts with metadata `user = NAME`, which the next handler
// sees in its own onOpen.
import { kv, Reject, type Connection, type Handler, type Request } from "wharf";

declare const crypto: { getRandomValues(a: Uint8Array): Uint8Array };

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const TOKEN_TTL_MS = 3_600_000;

function newToken(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

const auth: Handler = {
  onOpen(conn: Connection, req: Request) {
    if (req.path.endsWith("/login")) {
      const name = req.params.name ?? "";
      if (!NAME.test(name)) throw new Reject(400, "name: 1 to 64 ASCII letters, digits, - or _");
      const token = newToken();
      kv.set(`token:${token}`, name, { ttlMs: TOKEN_TTL_MS });
      conn.sendJson({ token, type: "token", user: name });
      conn.close(1000, "token issued");
      return;
    }
    const token = req.params.token;
    if (token === undefined) throw new Reject(401, "a token is required");
    const user = kv.get(`token:${token}`);
    if (user === undefined) throw new Reject(401, "unknown token");
    return { metadata: { user } };
  },
};

export default auth;
