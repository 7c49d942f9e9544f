// Usage: node engines.js PACKAGE_JSON NODE_VERSION
// Prints engines.node, then "ok", "mismatch" or "unknown" (no semver module to check).
"use strict";
const fs = require("fs");
const path = require("path");
const [pkgFile, version] = process.argv.slice(2);
// An unparsable package.json is the app's mistake: say so in one line (Heroku's
// "Unable to parse package.json"), never a Node.js stack trace.
let pkg;
try {
  pkg = JSON.parse(fs.readFileSync(pkgFile, "utf8"));
} catch (e) {
  console.error(`Unable to parse package.json: ${String(e.message).split(/[\r\n]/)[0]}`);
  process.exit(1);
}
if (pkg === null || typeof pkg !== "object" || Array.isArray(pkg)) {
  console.error("Unable to parse package.json: it must be a JSON object ({...})");
  process.exit(1);
}
const node = pkg.engines && typeof pkg.engines === "object" ? pkg.engines.node : undefined;
if (node !== undefined && typeof node !== "string") {
  console.error(`Unable to parse package.json: engines.node must be a string like ">=20", not ${JSON.stringify(node)}`);
  process.exit(1);
}
const range = node || "";
let semver = null;
const npmDir = path.dirname(path.dirname(fs.realpathSync(process.env.NPM_CLI || "/dev/null")));
for (const candidate of ["semver", path.join(npmDir, "node_modules", "semver")]) {
  try { semver = require(candidate); break; } catch (e) { /* next */ }
}
let verdict = "unknown";
if (!range) verdict = "ok";
else if (semver) {
  try {
    verdict = semver.satisfies(version, range) ? "ok" : "mismatch";
  } catch (e) {
    verdict = "unknown";
  }
}
console.log(range);
console.log(verdict);
