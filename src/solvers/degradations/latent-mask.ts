// The inpainting mask at latent resolution, as SILO feeds it to a cond_inpaint readout operator
// (silo_sample.py: `resize(inpaint_mask[:, 0:1], (64, 64))`, torchvision's bilinear resize with
// antialias, i.e. F.interpolate(mode='bilinear', align_corners=False, antialias=True)). Shrinking,
// the triangle filter is stretched by the scale factor, so each latent cell averages the pixels it
// covers with tent weights; the weights of each output are normalised to sum to 1. Computed on the
// CPU in float64 (a one-off of at most a few thousand outputs), then stored as float32.

import { assertArg } from '../../engine/errors.js';

/** Per output index along one axis: the first source index and the normalised weights. */
function axisWeights(inSize: number, outSize: number): { first: number; weights: Float64Array }[] {
  const scale = inSize / outSize;
  const support = scale >= 1 ? scale : 1; // bilinear's half-width (1), stretched when shrinking
  const inv = scale >= 1 ? 1 / scale : 1;
  const out: { first: number; weights: Float64Array }[] = [];
  for (let i = 0; i < outSize; i++) {
    const center = scale * (i + 0.5);
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const last = Math.min(Math.trunc(center + support + 0.5), inSize);
    const weights = new Float64Array(last - first);
    let total = 0;
    for (let j = 0; j < weights.length; j++) {
      const x = Math.abs((j + first - center + 0.5) * inv);
      weights[j] = x < 1 ? 1 - x : 0;
      total += weights[j]!;
    }
    for (let j = 0; j < weights.length; j++) weights[j]! /= total;
    out.push({ first, weights });
  }
  return out;
}

/** Resizes a [height, width] mask (row-major) to [outH, outW] with antialiased bilinear weights. */
export function resizeMaskAntialiased(mask: Float32Array, height: number, width: number, outH: number, outW: number): Float32Array {
  assertArg(mask.length === height * width, `resizeMaskAntialiased: the mask has ${mask.length} values, not ${height}x${width}`);
  assertArg(outH >= 1 && outW >= 1 && Number.isInteger(outH) && Number.isInteger(outW), `resizeMaskAntialiased: bad output size ${outH}x${outW}`);
  const wx = axisWeights(width, outW);
  const wy = axisWeights(height, outH);
  // Horizontal pass into float64 rows, then vertical (the separable filter's order does not matter in float64).
  const rows = new Float64Array(height * outW);
  for (let y = 0; y < height; y++) {
    for (let i = 0; i < outW; i++) {
      const { first, weights } = wx[i]!;
      let s = 0;
      for (let j = 0; j < weights.length; j++) s += weights[j]! * mask[y * width + first + j]!;
      rows[y * outW + i] = s;
    }
  }
  const out = new Float32Array(outH * outW);
  for (let o = 0; o < outH; o++) {
    const { first, weights } = wy[o]!;
    for (let i = 0; i < outW; i++) {
      let s = 0;
      for (let j = 0; j < weights.length; j++) s += weights[j]! * rows[(first + j) * outW + i]!;
      out[o * outW + i] = s;
    }
  }
  return out;
}
