#!/usr/bin/env bash
# Prepares .gpu/ (in .gitignore) for the prepared GPU run, bench/gpu.sh, on the device machine, which
# has a GPU but no Node, no npm and no network: Node itself (xz-compressed), Dawn's linux-x64 Node
# binding, the Vulkan loader and GL vendor libraries (Debian packages, unpacked there), the benchmark
# bundle and the two golden configs the benchmarks read. About 40 MB: under the 64 MiB a run may carry.
# Then run `bash bench/gpu.sh` there with carry [".gpu"] (docs/benchmarks.md, "The prepared GPU run").
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/webgpu/dist/linux-x64 ] || { echo "gpu-carry: run npm ci first (node_modules/webgpu is missing)" >&2; exit 1; }
[ -f ../shared/golden/unet_mini/config.json ] || { echo "gpu-carry: ../shared/golden is missing" >&2; exit 1; }
rm -rf .gpu
mkdir -p .gpu/node_modules/webgpu/dist .gpu/golden/unet_mini .gpu/golden/vae_mini .gpu/debs
node scripts/build.mjs bench/main.ts .gpu/bench.mjs node >/dev/null && rm -f .gpu/bench.mjs.map
cp node_modules/webgpu/package.json node_modules/webgpu/index.js .gpu/node_modules/webgpu/
cp -r node_modules/webgpu/dist/linux-x64 .gpu/node_modules/webgpu/dist/
xz -T0 -6 -c "$(command -v node)" > .gpu/node.xz
for c in unet_mini vae_mini; do cp "../shared/golden/$c/config.json" ".gpu/golden/$c/"; done
(cd .gpu/debs && apt-get download -q libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>/dev/null)
echo "gpu-carry: .gpu/ is $(du -sh .gpu | cut -f1) (node $(node --version), webgpu $(node -p "require('./node_modules/webgpu/package.json').version"))"
