#!/usr/bin/env bash
# The prepared GPU run: the kernel benchmarks, the SD-1.5 UNet and VAE decode at a 64x64 latent
# (512x512), and one guided step of each solver (SILO-CNN, SILO-RG, Latent-DPS, PSLD) at 64x64, each
# suite under its own time limit so the whole run fits 10 minutes. Every suite writes its JSON under
# bench/results/ (copied to $OUT when set, so the device tool brings it back) and a log beside it.
#   here:               bash bench/gpu.sh                 (Node and node_modules from npm ci)
#   on a device machine: bash scripts/gpu-carry.sh here, then run `bash bench/gpu.sh` there with carry [".gpu"]
# LATENT=N changes the model and solver latent (e.g. LATENT=8 for a dry run on a CPU adapter);
# KERNEL_ARGS and SOLVER_ARGS add flags (e.g. --quick, --tiny).
set -uo pipefail
cd "$(dirname "$0")/.."
LATENT=${LATENT:-64}
LOG_DIR=${OUT:-bench/results}
mkdir -p bench/results "$LOG_DIR"
if [ -d .gpu ]; then
  # The device machine: unpack the Vulkan loader, Node, and point the bundle at the carried binding.
  if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    for f in .gpu/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node
  NODE=/tmp/node
  BENCH=.gpu/bench.mjs
  export SILO_GOLDEN=$PWD/.gpu/golden
  NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$NV_ICD" ]; then export VK_DRIVER_FILES=$NV_ICD; fi
  NV_EGL=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  if [ -f "$NV_EGL" ]; then export __EGL_VENDOR_LIBRARY_FILENAMES=$NV_EGL; fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
else
  NODE=node
  node scripts/build.mjs bench/main.ts dist/bench.mjs node >/dev/null || exit 1
  BENCH=dist/bench.mjs
fi
echo "node $($NODE --version), latent $LATENT"

status=0
suite() { # name, seconds, then bench arguments
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$NODE" "$BENCH" "$@" 2>&1 | tee "$LOG_DIR/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  [ "$rc" = 0 ] || status=1
}
# shellcheck disable=SC2086
suite kernels 150 kernels ${KERNEL_ARGS:-}
suite models 150 models --latent "$LATENT"
# SILO-CNN, SILO-RG, Latent-DPS, PSLD: one warm-up and one timed step each, keeping the UNet's activations,
# with f16 weights (what restore runs with on an adapter with shader-f16; SOLVER_ARGS="--dtype f32" overrides).
# shellcheck disable=SC2086
suite solvers 240 solvers --latent "$LATENT" --steps 1 --warmup 1 --mode reuse --dtype f16 ${SOLVER_ARGS:-}
if [ -n "${OUT:-}" ]; then
  # The newest JSON of each suite (the device tool brings back at most 8 files).
  for s in kernels models solvers; do
    f=$(ls -t bench/results/$s-*.json 2>/dev/null | head -1)
    [ -n "$f" ] && cp "$f" "$OUT/"
  done
fi
exit $status
