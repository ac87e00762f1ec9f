// 8-bit image resizing with PIL's Image.resize semantics: separable convolution with the filter
// stretched by the scale factor when shrinking (so downscaling averages instead of aliasing),
// horizontal pass first into an 8-bit intermediate, 22-bit fixed-point coefficients, round half up.

import { assertArg } from '../engine/errors.js';
import { checkImage, type Image8 } from './types.js';

/**
 * 'bicubic' (default): Keys cubic with a = -0.5 (PIL's BICUBIC; torchvision's antialiased bicubic uses
 * the same kernel). 'bilinear': the triangle (PIL's BILINEAR). 'box': area averaging (PIL's BOX; an
 * integer-factor shrink is the exact block mean).
 */
export type ResizeFilter = 'bicubic' | 'bilinear' | 'box';

const FILTERS: Record<ResizeFilter, { support: number; f: (x: number) => number }> = {
  box: { support: 0.5, f: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bilinear: {
    support: 1,
    f: (x) => {
      x = Math.abs(x);
      return x < 1 ? 1 - x : 0;
    },
  },
  bicubic: {
    support: 2,
    f: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

/** Per output index: first source index, tap count and fixed-point weights (`kmax` slots each). */
interface Taps {
  first: Int32Array;
  count: Int32Array;
  weights: Int32Array;
  kmax: number;
}

/** PIL's precompute_coeffs + normalize_coeffs_8bpc for one axis. */
export function resizeTaps(inSize: number, outSize: number, filter: ResizeFilter): Taps {
  const { support: baseSupport, f } = FILTERS[filter];
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = baseSupport * filterScale;
  const kmax = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * kmax);
  const ss = 1 / filterScale;
  const k = new Float64Array(kmax);
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(center - support + 0.5));
    const n = Math.min(inSize, Math.trunc(center + support + 0.5)) - lo;
    let sum = 0;
    for (let j = 0; j < n; j++) sum += k[j] = f((j + lo - center + 0.5) * ss);
    for (let j = 0; j < n; j++) {
      const w = sum !== 0 ? k[j]! / sum : k[j]!;
      weights[i * kmax + j] = Math.trunc(w < 0 ? w * ONE - 0.5 : w * ONE + 0.5);
    }
    first[i] = lo;
    count[i] = n;
  }
  return { first, count, weights, kmax };
}

/** Fixed-point sum -> 8 bits: the accumulator starts at ONE / 2, so this rounds half up. */
function clip8(acc: number): number {
  if (acc <= 0) return 0;
  const v = Math.floor(acc / ONE);
  return v > 255 ? 255 : v;
}

/** Resamples along x: each output sample is a weighted sum of `count` neighbours in its row. */
function horizontal(src: Image8, outW: number, taps: Taps): Image8 {
  const { width: w, height: h, channels: ch, data } = src;
  const out = new Uint8Array(outW * h * ch);
  const { first, count, weights, kmax } = taps;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < outW; x++) {
      const n = count[x]!;
      const wo = x * kmax;
      const base = (y * w + first[x]!) * ch;
      for (let c = 0; c < ch; c++) {
        let acc = ONE / 2;
        for (let j = 0; j < n; j++) acc += data[base + j * ch + c]! * weights[wo + j]!;
        out[(y * outW + x) * ch + c] = clip8(acc);
      }
    }
  }
  return { width: outW, height: h, channels: ch, data: out };
}

/** Resamples along y: whole rows are combined, so the inner loop runs along memory. */
function vertical(src: Image8, outH: number, taps: Taps): Image8 {
  const { width: w, channels: ch, data } = src;
  const rowLen = w * ch;
  const out = new Uint8Array(outH * rowLen);
  const acc = new Float64Array(rowLen);
  const { first, count, weights, kmax } = taps;
  for (let y = 0; y < outH; y++) {
    acc.fill(ONE / 2);
    for (let j = 0; j < count[y]!; j++) {
      const wt = weights[y * kmax + j]!;
      const row = (first[y]! + j) * rowLen;
      for (let i = 0; i < rowLen; i++) acc[i] += data[row + i]! * wt;
    }
    for (let i = 0; i < rowLen; i++) out[y * rowLen + i] = clip8(acc[i]!);
  }
  return { width: w, height: outH, channels: ch, data: out };
}

/**
 * `img` resized to width x height (any channel count; every channel, alpha included, is filtered
 * alike: PIL premultiplies RGBA first, we do not). An axis whose size does not change is copied.
 */
export function resizeImage(img: Image8, width: number, height: number, filter: ResizeFilter = 'bicubic'): Image8 {
  checkImage(img, 'resizeImage image');
  assertArg(Number.isInteger(width) && Number.isInteger(height) && width >= 1 && height >= 1, `resizeImage: target size ${width}x${height} must be integers >= 1`);
  assertArg(filter in FILTERS, `resizeImage: unknown filter '${filter}' (bicubic, bilinear, box)`);
  let out = img;
  if (width !== img.width) out = horizontal(out, width, resizeTaps(img.width, width, filter));
  if (height !== img.height) out = vertical(out, height, resizeTaps(img.height, height, filter));
  return out === img ? { ...img, data: img.data.slice() } : out;
}
