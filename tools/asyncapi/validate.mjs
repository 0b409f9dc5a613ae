// Validates an AsyncAPI document with the official parser (@asyncapi/parser),
// the same one AsyncAPI Studio and the generator use: it checks the document
// against the specification's JSON Schema, resolves every $ref and runs the
// specification's own lint rules.
//
// The parser does not check that a message's examples fit the message's
// schemas (for AsyncAPI 3 it has no such rule), so this script does, with
// ajv. In this project the examples are real events serialised by the code
// and the schemas are derived from the same types, so a mismatch means the
// schema generator and the serialiser disagree about the wire format.
//
//   node tools/asyncapi/validate.mjs docs/asyncapi.yaml
//
// Prints every diagnostic. Exits 1 when there is an error or an example does
// not fit its schema (warnings and hints are printed but do not fail), 2 when
// the parser is not installed or the file cannot be read.
//
// The parser is not installed next to this file but, pinned by this
// directory's package-lock.json, into .tools/asyncapi/node_modules by
// `scripts/install-tools.sh asyncapi`, so that the repository holds no
// node_modules and installed tools live in one ignored place.

import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const installDir = path.resolve(here, "../../.tools/asyncapi");

const file = process.argv[2];
if (!file || process.argv.length > 3) {
  console.error("usage: node tools/asyncapi/validate.mjs <asyncapi document>");
  process.exit(2);
}

let Parser, Ajv, addFormats;
try {
  // createRequire resolves the packages from the install directory, which a
  // plain `import` from this file's location would not search.
  const require = createRequire(path.join(installDir, "package.json"));
  ({ Parser } = require("@asyncapi/parser"));
  Ajv = require("ajv").default;
  addFormats = require("ajv-formats").default;
} catch (err) {
  console.error(
    `the AsyncAPI parser is not installed in ${installDir} (${err.code ?? err.message}): ` +
      "run scripts/install-tools.sh asyncapi",
  );
  process.exit(2);
}

let text;
try {
  text = await readFile(file, "utf8");
} catch (err) {
  console.error(`cannot read ${file}: ${err.message}`);
  process.exit(2);
}

// The parser reports severities as numbers (Spectral's DiagnosticSeverity).
const SEVERITY = ["error", "warning", "info", "hint"];

const { document, diagnostics } = await new Parser().parse(text, {
  source: path.resolve(file),
});

for (const d of diagnostics) {
  const where = d.path?.length ? d.path.join(".") : "(document)";
  const line = d.range ? `:${d.range.start.line + 1}` : "";
  console.log(`${SEVERITY[d.severity] ?? d.severity} ${d.code} at ${where}${line}: ${d.message}`);
}

let errors = diagnostics.filter((d) => d.severity === 0).length;
const others = diagnostics.length - errors;
if (errors > 0 || document === undefined) {
  console.log(`${file}: INVALID (${errors} error(s), ${others} other diagnostic(s))`);
  process.exit(1);
}

// AsyncAPI schemas (the default schema format) are JSON Schema draft 07, which
// is what ajv's default class checks. Not strict: the parser leaves its own
// `x-parser-*` keywords in the resolved schemas.
const ajv = new Ajv({ strict: false, allErrors: true });
addFormats(ajv);
// schemars marks integer widths with formats JSON Schema does not define.
ajv.addFormat("uint32", { type: "number", validate: (n) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff });
ajv.addFormat("uint64", { type: "number", validate: (n) => Number.isInteger(n) && n >= 0 });

let examples = 0;
for (const message of document.allMessages()) {
  message.examples().all().forEach((example, i) => {
    examples += 1;
    for (const part of ["headers", "payload"]) {
      const schema = message[part]()?.json();
      const value = example[part]();
      if (schema === undefined || value === undefined) continue;
      const validate = ajv.compile(schema);
      if (validate(value)) continue;
      for (const e of validate.errors) {
        errors += 1;
        console.log(
          `error example-${part} at message ${message.id()} example ${i}${e.instancePath}: ${e.message}`,
        );
      }
    }
  });
}
if (errors > 0) {
  console.log(`${file}: INVALID (${errors} example error(s), ${others} other diagnostic(s))`);
  process.exit(1);
}
console.log(
  `${file}: valid AsyncAPI ${document.version()}, ${examples} example(s) fit their schemas ` +
    `(${others} non-error diagnostic(s))`,
);
