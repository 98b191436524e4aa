// Prints an exported Automerge document's root as JSON, as JS Automerge reads it: byte values
// as {"bytes": "<hex>"}. Usage: node read_document.mjs <file>
import * as Automerge from "@automerge/automerge";
import { readFileSync } from "node:fs";

const doc = Automerge.load(new Uint8Array(readFileSync(process.argv[2])));
const root = {};
for (const [key, value] of Object.entries(doc)) {
  root[key] = value instanceof Uint8Array ? { bytes: Buffer.from(value).toString("hex") } : value;
}
console.log(JSON.stringify(root));
