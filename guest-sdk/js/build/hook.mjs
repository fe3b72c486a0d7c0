// `node --import` this to build with guest-sdk/js/build/bindings.mjs: it
// hands componentize-js's generated bindings to `fastBindings` before they
// are written out for the snapshot. `wharf build` sets it in NODE_OPTIONS
// when it runs componentize-js.
import { register } from "node:module";

register("./loader.mjs", import.meta.url);
