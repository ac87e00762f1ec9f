// Image-quality metrics on host arrays (f64 accumulation): MSE/PSNR, luma PSNR, SSIM, MS-SSIM, and the
// measurement-consistency PSNR (the one metric that runs a degradation on the GPU).

import type { Tensor } from '../engine/tensor.js';
import { runProgram } from '../engine/recorder.js';
import type { Degradation } from './degradations/types.js';

/** Mean squared error of two equally long arrays. */
export function mse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`mse: lengths differ (${a.length} vs ${b.length})`);
  if (a.length === 0) throw new RangeError('mse: empty arrays');
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    s += d * d;
  }
  return s / a.length;
}

/** PSNR in dB, 10 log10(range^2 / mse): range 1 for images in [0, 1], 2 for [-1, 1]. Infinity when equal. */
export function psnr(a: ArrayLike<number>, b: ArrayLike<number>, range = 1): number {
  if (!(range > 0)) throw new RangeError(`psnr: data range must be > 0, got ${range}`);
  return 10 * Math.log10((range * range) / mse(a, b));
}

// ---------------------------------------------------------------------------------------------------
// Image metrics on NCHW (or CHW) host arrays. Unless stated otherwise images are in [0, range] (range 1
// for [0, 1]; map SILO's [-1, 1] images with unitFromSigned first). Batches are averaged per image.

function planes(shape: readonly number[], what: string): { n: number; c: number; h: number; w: number } {
  if (shape.length !== 3 && shape.length !== 4) throw new RangeError(`${what}: shape must be [N, C, H, W] or [C, H, W], got [${shape.join(', ')}]`);
  const [n, c, h, w] = (shape.length === 3 ? [1, ...shape] : shape) as [number, number, number, number];
  return { n, c, h, w };
}

function checkPair(a: ArrayLike<number>, b: ArrayLike<number>, shape: readonly number[], what: string) {
  const p = planes(shape, what);
  const size = p.n * p.c * p.h * p.w;
  if (a.length !== size || b.length !== size) throw new RangeError(`${what}: arrays of ${a.length} and ${b.length} values do not match shape [${shape.join(', ')}]`);
  return p;
}

/** [-1, 1] -> [0, 1] (x + 1) / 2, as a new array. */
export function unitFromSigned(x: ArrayLike<number>): Float32Array {
  return Float32Array.from(x, (v) => (v + 1) / 2);
}

export interface PsnrYOptions {
  /** Data range of the RGB inputs (they lie in [0, range]); default 1. */
  range?: number;
  /** Pixels cut from every border before comparing (SR papers: the scale factor); default 0. */
  crop?: number;
}

/**
 * PSNR on the luma channel, the SR-paper convention (ITU-R BT.601 "studio swing" as in MATLAB's
 * rgb2ycbcr / BasicSR): with R, G, B in [0, 1], Y = 16 + 65.481 R + 128.553 G + 24.966 B, in [16, 235],
 * and PSNR = 10 log10(255^2 / MSE(Y)). No quantisation to 8 bits. Needs C = 3 (RGB order); per image,
 * then averaged over the batch.
 */
export function psnrY(a: ArrayLike<number>, b: ArrayLike<number>, shape: readonly number[], opts: PsnrYOptions = {}): number {
  const { n, c, h, w } = checkPair(a, b, shape, 'psnrY');
  if (c !== 3) throw new RangeError(`psnrY: needs 3 (RGB) channels, got ${c}`);
  const range = opts.range ?? 1;
  const crop = opts.crop ?? 0;
  if (!(range > 0)) throw new RangeError(`psnrY: data range must be > 0, got ${range}`);
  if (!(Number.isInteger(crop) && crop >= 0 && 2 * crop < h && 2 * crop < w)) throw new RangeError(`psnrY: crop ${crop} leaves nothing of ${h}x${w}`);
  const hw = h * w;
  let total = 0;
  for (let img = 0; img < n; img++) {
    const o = img * 3 * hw;
    let s = 0;
    for (let y = crop; y < h - crop; y++)
      for (let x = crop; x < w - crop; x++) {
        const i = o + y * w + x;
        const d = (65.481 * (a[i]! - b[i]!) + 128.553 * (a[i + hw]! - b[i + hw]!) + 24.966 * (a[i + 2 * hw]! - b[i + 2 * hw]!)) / range;
        s += d * d;
      }
    total += 10 * Math.log10((255 * 255) / (s / ((h - 2 * crop) * (w - 2 * crop))));
  }
  return total / n;
}

export interface SsimOptions {
  /** Data range L of the inputs ([0, L]); default 1. */
  range?: number;
  /** Gaussian window side (odd) and std; default 11 and 1.5 (Wang et al. 2004). */
  window?: number;
  sigma?: number;
  /** Stabilisers: C1 = (K1 L)^2, C2 = (K2 L)^2; default 0.01, 0.03. */
  k1?: number;
  k2?: number;
}

/** The normalised 1-D Gaussian window (the 2-D window is its outer product). */
function gaussianWindow(size: number, sigma: number): Float64Array {
  if (!(Number.isInteger(size) && size >= 1 && size % 2 === 1)) throw new RangeError(`ssim: window must be an odd integer, got ${size}`);
  const g = new Float64Array(size);
  const c = (size - 1) / 2;
  let s = 0;
  for (let i = 0; i < size; i++) s += g[i] = Math.exp(-((i - c) ** 2) / (2 * sigma * sigma));
  for (let i = 0; i < size; i++) g[i]! /= s;
  return g;
}

/** 'valid' separable filtering of one h x w plane (offset o) by g: (h - k + 1) x (w - k + 1). */
function filterValid(x: ArrayLike<number>, o: number, h: number, w: number, g: Float64Array): Float64Array {
  const k = g.length;
  const oh = h - k + 1;
  const ow = w - k + 1;
  const rows = new Float64Array(h * ow);
  for (let y = 0; y < h; y++)
    for (let xx = 0; xx < ow; xx++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += g[t]! * x[o + y * w + xx + t]!;
      rows[y * ow + xx] = s;
    }
  const out = new Float64Array(oh * ow);
  for (let y = 0; y < oh; y++)
    for (let xx = 0; xx < ow; xx++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += g[t]! * rows[(y + t) * ow + xx]!;
      out[y * ow + xx] = s;
    }
  return out;
}

/**
 * Mean SSIM and mean contrast-structure term of one plane, Wang et al.'s Gaussian-weighted statistics
 * over the 'valid' positions (no padding), population (biased) variances.
 */
function ssimPlane(a: ArrayLike<number>, b: ArrayLike<number>, o: number, h: number, w: number, g: Float64Array, c1: number, c2: number): { ssim: number; cs: number } {
  const hw = h * w;
  const aa = new Float64Array(hw);
  const bb = new Float64Array(hw);
  const ab = new Float64Array(hw);
  for (let i = 0; i < hw; i++) {
    const x = a[o + i]!;
    const y = b[o + i]!;
    aa[i] = x * x;
    bb[i] = y * y;
    ab[i] = x * y;
  }
  const mx = filterValid(a, o, h, w, g);
  const my = filterValid(b, o, h, w, g);
  const sxx = filterValid(aa, 0, h, w, g);
  const syy = filterValid(bb, 0, h, w, g);
  const sxy = filterValid(ab, 0, h, w, g);
  let ssim = 0;
  let cs = 0;
  for (let i = 0; i < mx.length; i++) {
    const ux = mx[i]!;
    const uy = my[i]!;
    const vx = sxx[i]! - ux * ux;
    const vy = syy[i]! - uy * uy;
    const cxy = sxy[i]! - ux * uy;
    const csi = (2 * cxy + c2) / (vx + vy + c2);
    cs += csi;
    ssim += ((2 * ux * uy + c1) / (ux * ux + uy * uy + c1)) * csi;
  }
  return { ssim: ssim / mx.length, cs: cs / mx.length };
}

/** Per-(image, channel) SSIM and cs; images need H, W >= the window. */
function ssimPerPlane(a: ArrayLike<number>, b: ArrayLike<number>, n: number, c: number, h: number, w: number, opts: SsimOptions, what: string) {
  const range = opts.range ?? 1;
  if (!(range > 0)) throw new RangeError(`${what}: data range must be > 0, got ${range}`);
  const g = gaussianWindow(opts.window ?? 11, opts.sigma ?? 1.5);
  if (h < g.length || w < g.length) throw new RangeError(`${what}: a ${h}x${w} image is smaller than the ${g.length}x${g.length} window`);
  const c1 = ((opts.k1 ?? 0.01) * range) ** 2;
  const c2 = ((opts.k2 ?? 0.03) * range) ** 2;
  const out: Array<{ ssim: number; cs: number }> = [];
  for (let p = 0; p < n * c; p++) out.push(ssimPlane(a, b, p * h * w, h, w, g, c1, c2));
  return out;
}

/**
 * SSIM (Wang, Bovik, Sheikh, Simoncelli 2004): 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, on
 * inputs in [0, range]; the map over the valid positions (as the authors' MATLAB code, skimage with
 * gaussian_weights=True / use_sample_covariance=False after its border crop, pytorch_msssim), averaged
 * over positions, then channels and images.
 */
export function ssim(a: ArrayLike<number>, b: ArrayLike<number>, shape: readonly number[], opts: SsimOptions = {}): number {
  const { n, c, h, w } = checkPair(a, b, shape, 'ssim');
  const per = ssimPerPlane(a, b, n, c, h, w, opts, 'ssim');
  return per.reduce((s, v) => s + v.ssim, 0) / per.length;
}

/** MS-SSIM's scale weights (Wang, Simoncelli, Bovik 2003). */
export const MS_SSIM_WEIGHTS = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333] as const;

/** 2x2 average pooling, stride 2, zero padding of one on each side of an odd axis counted in the mean (torch avg_pool2d, count_include_pad). */
function avgPool2(x: ArrayLike<number>, planesCount: number, h: number, w: number): { data: Float64Array; h: number; w: number } {
  const ph = h % 2;
  const pw = w % 2;
  const oh = Math.floor((h + 2 * ph - 2) / 2) + 1;
  const ow = Math.floor((w + 2 * pw - 2) / 2) + 1;
  const out = new Float64Array(planesCount * oh * ow);
  for (let p = 0; p < planesCount; p++)
    for (let y = 0; y < oh; y++)
      for (let xx = 0; xx < ow; xx++) {
        let s = 0;
        for (let dy = 0; dy < 2; dy++)
          for (let dx = 0; dx < 2; dx++) {
            const sy = 2 * y + dy - ph;
            const sx = 2 * xx + dx - pw;
            if (sy >= 0 && sy < h && sx >= 0 && sx < w) s += x[(p * h + sy) * w + sx]!;
          }
        out[(p * oh + y) * ow + xx] = s / 4;
      }
  return { data: out, h: oh, w: ow };
}

/**
 * MS-SSIM with pytorch_msssim's conventions: 5 scales with MS_SSIM_WEIGHTS; at each of the first 4
 * the mean contrast-structure term cs (clamped at 0), then 2x2 average pooling (odd sizes padded as
 * torch's avg_pool2d(padding = size % 2)); at the last the full SSIM (clamped at 0); the product of
 * the terms raised to the weights, per channel, averaged over channels and images. The coarsest scale
 * must still hold the window: H, W >= 10 * 16 + 1 = 161 with the defaults (as pytorch_msssim asserts).
 */
export function msSsim(a: ArrayLike<number>, b: ArrayLike<number>, shape: readonly number[], opts: SsimOptions & { weights?: readonly number[] } = {}): number {
  let { n, c, h, w } = checkPair(a, b, shape, 'msSsim');
  const weights = opts.weights ?? MS_SSIM_WEIGHTS;
  const win = opts.window ?? 11;
  const need = (win - 1) * 2 ** (weights.length - 1) + 1;
  if (h < need || w < need) throw new RangeError(`msSsim: ${weights.length} scales with a ${win}-px window need H, W >= ${need}, got ${h}x${w}`);
  const acc = new Float64Array(n * c).fill(1);
  let x: ArrayLike<number> = a;
  let y: ArrayLike<number> = b;
  for (let level = 0; level < weights.length; level++) {
    const per = ssimPerPlane(x, y, n, c, h, w, opts, 'msSsim');
    const last = level === weights.length - 1;
    for (let p = 0; p < n * c; p++) acc[p]! *= Math.max(last ? per[p]!.ssim : per[p]!.cs, 0) ** weights[level]!;
    if (!last) {
      const px = avgPool2(x, n * c, h, w);
      y = avgPool2(y, n * c, h, w).data;
      x = px.data;
      h = px.h;
      w = px.w;
    }
  }
  return acc.reduce((s, v) => s + v, 0) / acc.length;
}

/**
 * Measurement consistency: PSNR between A(output) and A(groundTruth), both GPU tensors in [-1, 1]
 * (range 2 by default, the images' own units), so it scores only what the measurement can see.
 */
export async function consistencyPsnr(A: Degradation, output: Tensor, groundTruth: Tensor, range = 2): Promise<number> {
  const { result } = await runProgram(output.engine, `consistency_psnr/${A.name}`, (rec) => [A.apply(rec, output), A.apply(rec, groundTruth)] as const);
  try {
    const [ya, yb] = await Promise.all([result[0].read(), result[1].read()]);
    return psnr(ya, yb, range);
  } finally {
    result[0].dispose();
    result[1].dispose();
  }
}
