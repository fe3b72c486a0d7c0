// Two changes to the JavaScript bindings componentize-js generates for a
// world, applied by `wharf build` before they are snapshotted into the
// component. Neither changes what the bindings do; both remove work that
// StarlingMonkey's interpreter makes expensive on every event:
//
// 1. Lowering a string into the host (a reply, a published message, a key, a
//    log line) first measured its UTF-8 length in a loop over every UTF-16
//    unit, about 0.2 µs a character when interpreted: 0.8 ms for a 4 KiB
//    reply. TextEncoder.encode (native code) measures and encodes at once,
//    with the same output (a lone surrogate becomes U+FFFD either way).
// 2. Every lifted and lowered call logged through `_debugLog`, which builds
//    its arguments and looks up `globalThis.process.env.JCO_DEBUG` before
//    doing nothing: a handler has no environment. The calls are skipped.
//
// Each change names the exact text it replaces and fails the build when it
// is not there, so a new componentize-js cannot silently lose them.

const ENCODE_START = "function _utf8AllocateAndEncode(s, realloc, memory) {\n";
const ENCODE = `function _utf8AllocateAndEncode(s, realloc, memory) {
  if (typeof s !== 'string') {
    throw new TypeError('expected a string, received [' + typeof s + ']');
  }
  if (s.length === 0) { return { ptr: 1, len: 0 }; }
  const bytes = TEXT_ENCODER_UTF8.encode(s);
  const len = bytes.length;
  const ptr = realloc(0, 0, 1, len);
  new Uint8Array(memory.buffer, ptr, len).set(bytes);
  return { ptr, len };
}
`;
const DEBUG_DEFINITION = "const _debugLog = (...args) => {\n  if (!globalThis?.process?.env?.JCO_DEBUG) { return; }";

/** `js`, the generated bindings, with both changes made. */
export function fastBindings(js) {
  const start = js.indexOf(ENCODE_START);
  const end = start < 0 ? -1 : js.indexOf("\n}\n", start);
  if (start < 0 || end < 0 || js.indexOf(ENCODE_START, end) >= 0 || !js.includes("TEXT_ENCODER_UTF8.encodeInto(")) {
    throw new Error("wharf build: the componentize-js bindings have no `_utf8AllocateAndEncode` as 0.23.0 wrote it; update guest-sdk/js/build/bindings.mjs");
  }
  js = js.slice(0, start) + ENCODE + js.slice(end + 3);
  if (!js.includes(DEBUG_DEFINITION)) {
    throw new Error("wharf build: the componentize-js bindings have no `_debugLog` as 0.23.0 wrote it; update guest-sdk/js/build/bindings.mjs");
  }
  // Every call is a statement of its own line.
  return js.replace(/^(\s*)_debugLog\(/gm, "$1false && _debugLog(");
}
