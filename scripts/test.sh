#!/usr/bin/env bash
# The whole test suite: typecheck, the Node suite on lavapipe and again on SwiftShader, then the
# headless-Chromium tests. An adapter that is missing is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
LVP=/usr/share/vulkan/icd.d/lvp_icd.json
SWS=/usr/lib/chromium/vk_swiftshader_icd.json
for f in "$LVP" "$SWS" /usr/bin/chromium; do
  [ -e "$f" ] || { echo "test: $f is missing (run .ci/install-system.sh)" >&2; exit 1; }
done
echo "== typecheck"
npx tsc -p .
echo "== node suite on lavapipe"
VK_ICD_FILENAMES=$LVP npx vitest run --project node "$@"
echo "== node suite on SwiftShader"
VK_ICD_FILENAMES=$SWS npx vitest run --project node "$@"
echo "== headless Chromium"
npx vitest run --project browser
