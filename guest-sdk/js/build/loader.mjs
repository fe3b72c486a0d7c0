// The module loader hook of hook.mjs: one edit to componentize-js's own
// componentize.js as Node loads it (node_modules stays as npm installed it).

const TARGET = "/@bytecodealliance/componentize-js/src/componentize.js";
const ANCHOR = "  await writeFile(initializerPath, jsBindings);\n";
const BINDINGS = new URL("./bindings.mjs", import.meta.url).href;

export async function load(url, context, nextLoad) {
  const loaded = await nextLoad(url, context);
  if (!url.endsWith(TARGET)) return loaded;
  const source = String(loaded.source);
  if (source.split(ANCHOR).length !== 2) {
    throw new Error(`wharf build: ${url} does not write its bindings as componentize-js 0.23.0 did; update guest-sdk/js/build/loader.mjs`);
  }
  const edit = `  jsBindings = (await import(${JSON.stringify(BINDINGS)})).fastBindings(jsBindings);\n`;
  return { ...loaded, source: source.replace(ANCHOR, edit + ANCHOR) };
}
