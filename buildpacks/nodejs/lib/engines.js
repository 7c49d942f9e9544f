// Usage: node engines.js PACKAGE_JSON NODE_VERSION
// Prints engines.node, then "ok", "mismatch" or "unknown" (no semver module to check).
"use strict";
const fs = require("fs");
const path = require("path");
const [pkgFile, version] = process.argv.slice(2);
const pkg = JSON.parse(fs.readFileSync(pkgFile, "utf8"));
const range = (pkg.engines && pkg.engines.node) || "";
let semver = null;
const npmDir = path.dirname(path.dirname(fs.realpathSync(process.env.NPM_CLI || "/dev/null")));
for (const candidate of ["semver", path.join(npmDir, "node_modules", "semver")]) {
  try { semver = require(candidate); break; } catch (e) { /* next */ }
}
let verdict = "unknown";
if (!range) verdict = "ok";
else if (semver) verdict = semver.satisfies(version, range) ? "ok" : "mismatch";
console.log(range);
console.log(verdict);
