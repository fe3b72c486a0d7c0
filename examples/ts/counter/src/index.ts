// `counter` in TypeScript: every message atomically increments key `hits` in
// the plugin's key/value namespace and replies with the new value as text.
// Same behaviour as examples/counter; with the embedded store the count
// survives a restart of the host.
import { kv, WharfError, type Handler } from "wharf";

const counter: Handler = {
  onMessage(): string {
    try {
      return String(kv.increment("hits", 1));
    } catch (e) {
      return `error: ${e instanceof WharfError ? e.code : String(e)}`;
    }
  },
};

export default counter;
