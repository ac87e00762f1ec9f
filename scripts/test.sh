#!/usr/bin/env bash
# The whole test suite: typecheck, the Node suite on lavapipe and again on SwiftShader, then the
# headless-Chromium tests. An adapter that is missing is a failure, never a skip. Ends with one
# summary line over all runs.
set -euo pipefail
cd "$(dirname "$0")/.."
LVP=/usr/share/vulkan/icd.d/lvp_icd.json
SWS=/usr/lib/chromium/vk_swiftshader_icd.json
for f in "$LVP" "$SWS" /usr/bin/chromium; do
  [ -e "$f" ] || { echo "test: $f is missing (run .ci/install-system.sh)" >&2; exit 1; }
done
RESULTS=$(mktemp -d)
trap 'rm -rf "$RESULTS"' EXIT
run() { # name, then vitest arguments
  local name=$1; shift
  echo "== $name"
  npx vitest run "$@" --reporter=default --reporter=json --outputFile.json="$RESULTS/$name.json"
}
echo "== typecheck"
npx tsc -p .
VK_ICD_FILENAMES=$LVP run lavapipe --project node "$@"
VK_ICD_FILENAMES=$SWS run swiftshader --project node "$@"
run chromium --project browser
node -e '
  const fs = require("fs"); let p = 0, f = 0, s = 0;
  for (const file of fs.readdirSync(process.argv[1])) {
    const r = JSON.parse(fs.readFileSync(process.argv[1] + "/" + file, "utf8"));
    p += r.numPassedTests; f += r.numFailedTests; s += r.numPendingTests + (r.numTodoTests || 0);
    console.log(`${file.replace(".json", "")}: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests} skipped`);
  }
  if (p === 0) { console.error("no test ran"); process.exit(1); }
  console.log(`${p} passed, ${f} failed, ${s} skipped`);
  process.exit(f ? 1 : 0);
' "$RESULTS"
