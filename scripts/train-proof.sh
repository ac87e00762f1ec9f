#!/usr/bin/env bash
# The TAEF2 proof of issue #13 (docs/training.md): SILO's CNN operator at width 2 trained for TAEF2's latent
# space (32 channels, /8) and the Gaussian blur task on ../shared/assets/images, 8 images held out (the six
# faces and two Kodak images). Usage: bash scripts/train-proof.sh [out-folder] [extra silo train flags]
# Defaults: width 2, 128x128 crops (16x16 latents), 512 cached crops, batch 16, 2000 steps, lr 1e-3 with cosine
# decay; WIDTH, STEPS and CACHE in the environment change those three (WIDTH=1 is the first run, SILO's module).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-train-proof}
shift || true
A=../shared/assets/images
T=../shared/golden/taef2
npm run -s silo -- train --task gaussian_blur \
  --encoder $T/taef2_encoder.safetensors --decoder $T/taef2_decoder.safetensors \
  --data $A/natural --data $A/photos --data $A/faces256 \
  --data $A/sr/img_001_SRF_4_HR.png --data $A/sr/img_002_SRF_4_HR.png --data $A/sr/img_003_SRF_4_HR.png \
  --data $A/sr/img_004_SRF_4_HR.png --data $A/sr/img_005_SRF_4_HR.png \
  --validate $A/faces --validate $A/natural/kodim01.png --validate $A/natural/kodim02.png \
  --size 128 --batch 16 --cache "${CACHE:-512}" --cache-file "$OUT/cache.safetensors" --width "${WIDTH:-2}" \
  --steps "${STEPS:-2000}" --lr 1e-3 --schedule cosine --warmup 100 --val-every 250 --checkpoint-every 250 \
  --out "$OUT" "$@"
