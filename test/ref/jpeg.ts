// CPU references for the JPEG degradation (float64, written from T.81 / JFIF directly, not from the
// GPU kernels): the lossy pipeline without entropy coding, its linear surrogate's transpose, and
// synthetic 8-bit test images.

import { jpegQuantTables } from '../../src/io/jpeg-tables.js';

// JFIF colour conversion with the spec's 6-digit constants (they match the exact BT.601 values to
// < 1e-6, far below the tests' tolerances).
const toYcc = (r: number, g: number, b: number): [number, number, number] => [
  0.299 * r + 0.587 * g + 0.114 * b,
  -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
  0.5 * r - 0.418688 * g - 0.081312 * b + 128,
];
const toRgb = (y: number, cb: number, cr: number): [number, number, number] => [
  y + 1.402 * (cr - 128),
  y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
  y + 1.772 * (cb - 128),
];
const M_COLS = [toYcc(1, 0, 0), toYcc(0, 1, 0), toYcc(0, 0, 1)].map((v, i) => [v[0], v[1] - 128, v[2] - 128]); // column i of M
const MINV_COLS = [
  [1, 1, 1],
  [0, -0.344136, 1.772],
  [1.402, -0.714136, 0],
]; // MINV_COLS[k] = column k of M^-1 (gradient of RGB w.r.t. component k)

/** T.81 A.3.3 FDCT of an 8x8 block (row-major, level-shifted). */
function fdct(f: Float64Array): Float64Array {
  const out = new Float64Array(64);
  const c = (k: number) => (k === 0 ? Math.SQRT1_2 : 1);
  for (let v = 0; v < 8; v++)
    for (let u = 0; u < 8; u++) {
      let s = 0;
      for (let y = 0; y < 8; y++)
        for (let x = 0; x < 8; x++) s += f[y * 8 + x]! * Math.cos(((2 * x + 1) * u * Math.PI) / 16) * Math.cos(((2 * y + 1) * v * Math.PI) / 16);
      out[v * 8 + u] = 0.25 * c(u) * c(v) * s; // row v (vertical frequency), column u
    }
  return out;
}

/** T.81 A.3.3 IDCT. */
function idct(F: Float64Array): Float64Array {
  const out = new Float64Array(64);
  const c = (k: number) => (k === 0 ? Math.SQRT1_2 : 1);
  for (let y = 0; y < 8; y++)
    for (let x = 0; x < 8; x++) {
      let s = 0;
      for (let v = 0; v < 8; v++)
        for (let u = 0; u < 8; u++) s += c(u) * c(v) * F[v * 8 + u]! * Math.cos(((2 * x + 1) * u * Math.PI) / 16) * Math.cos(((2 * y + 1) * v * Math.PI) / 16);
      out[y * 8 + x] = 0.25 * s;
    }
  return out;
}

/** Blockwise FDCT -> quantise (half away from zero) -> IDCT -> +128 [-> clamp] of a plane whose sides are multiples of 8. */
function blocks(plane: Float64Array, pw: number, ph: number, q: Uint16Array, quantize: boolean): Float64Array {
  const out = new Float64Array(plane.length);
  const blk = new Float64Array(64);
  for (let by = 0; by < ph; by += 8)
    for (let bx = 0; bx < pw; bx += 8) {
      for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) blk[y * 8 + x] = plane[(by + y) * pw + bx + x]! - 128;
      const F = fdct(blk);
      if (quantize) for (let k = 0; k < 64; k++) F[k] = q[k]! * Math.sign(F[k]!) * Math.floor(Math.abs(F[k]! / q[k]!) + 0.5);
      const r = idct(F);
      for (let k = 0; k < 64; k++) {
        const v = r[k]! + 128;
        out[(by + (k >> 3)) * pw + bx + (k & 7)] = quantize ? Math.min(255, Math.max(0, v)) : v;
      }
    }
  return out;
}

/** libjpeg's triangular upsampling by 2 of a length-n signal to length len (scatter form), or the identity. */
function upsample1d(c: (i: number) => number, n: number, len: number, f: number): Float64Array {
  const out = new Float64Array(len);
  if (f === 1) {
    for (let i = 0; i < len; i++) out[i] = c(i);
    return out;
  }
  for (let i = 0; i < n; i++) {
    if (2 * i < len) out[2 * i] = 0.75 * c(i) + 0.25 * c(Math.max(i - 1, 0));
    if (2 * i + 1 < len) out[2 * i + 1] = 0.75 * c(i) + 0.25 * c(Math.min(i + 1, n - 1));
  }
  return out;
}

export type SamplingRef = [number, number]; // [sx, sy]

/**
 * The JPEG degradation on x [N, 3, H, W] in [-1, 1] (quantize = false: the linear surrogate, no
 * rounding and no clamps).
 */
export function jpegRef(x: ArrayLike<number>, shape: number[], quality: number, sampling: SamplingRef = [2, 2], quantize = true): Float32Array {
  const [n, , h, w] = shape as [number, number, number, number];
  const [sx, sy] = sampling;
  const { luma: ql, chroma: qc } = jpegQuantTables(quality);
  const crh = Math.ceil(h / sy);
  const crw = Math.ceil(w / sx);
  const yh = 8 * Math.ceil(h / 8);
  const yw = 8 * Math.ceil(w / 8);
  const ch = 8 * Math.ceil(crh / 8);
  const cw = 8 * Math.ceil(crw / 8);
  const out = new Float32Array(n * 3 * h * w);
  const cl = (v: number, hi: number) => Math.min(v, hi);
  for (let b = 0; b < n; b++) {
    const pix = (y: number, xx: number) => {
      const at = b * 3 * h * w + cl(y, h - 1) * w + cl(xx, w - 1);
      return toYcc(127.5 * (x[at]! + 1), 127.5 * (x[at + h * w]! + 1), 127.5 * (x[at + 2 * h * w]! + 1));
    };
    const lum = new Float64Array(yh * yw);
    for (let y = 0; y < yh; y++) for (let xx = 0; xx < yw; xx++) lum[y * yw + xx] = pix(y, xx)[0];
    const chroma = [new Float64Array(ch * cw), new Float64Array(ch * cw)];
    for (let y = 0; y < ch; y++)
      for (let xx = 0; xx < cw; xx++)
        for (let k = 0; k < 2; k++) {
          let s = 0;
          for (let dy = 0; dy < sy; dy++) for (let dx = 0; dx < sx; dx++) s += pix(y * sy + dy, xx * sx + dx)[k + 1];
          chroma[k]![y * cw + xx] = s / (sx * sy);
        }
    const lq = blocks(lum, yw, yh, ql, quantize);
    const cq = chroma.map((p) => blocks(p, cw, ch, qc, quantize));
    // Upsample rows, then columns, over the real chroma extent crh x crw.
    const up = cq.map((p) => {
      const cols: Float64Array[] = [];
      for (let xx = 0; xx < crw; xx++) cols.push(upsample1d((i) => p[i * cw + xx]!, crh, h, sy));
      const full = new Float64Array(h * w);
      for (let y = 0; y < h; y++) {
        const row = upsample1d((i) => cols[i]![y]!, crw, w, sx);
        full.set(row, y * w);
      }
      return full;
    });
    for (let y = 0; y < h; y++)
      for (let xx = 0; xx < w; xx++) {
        const rgb = toRgb(lq[y * yw + xx]!, up[0]![y * w + xx]!, up[1]![y * w + xx]!);
        for (let c = 0; c < 3; c++) {
          const v = quantize ? Math.min(255, Math.max(0, rgb[c]!)) : rgb[c]!;
          out[((b * 3 + c) * h + y) * w + xx] = v / 127.5 - 1;
        }
      }
  }
  return out;
}

/** A_lin^T g in scatter form: every output pixel pushes its gradient back through each linear stage. */
export function jpegAdjointRef(g: ArrayLike<number>, shape: number[], sampling: SamplingRef = [2, 2]): Float32Array {
  const [n, , h, w] = shape as [number, number, number, number];
  const [sx, sy] = sampling;
  const crh = Math.ceil(h / sy);
  const crw = Math.ceil(w / sx);
  const out = new Float32Array(n * 3 * h * w);
  // Upsampling taps of output coordinate o: [index, weight] pairs.
  const taps = (o: number, f: number, nc: number): [number, number][] => {
    if (f === 1) return [[o, 1]];
    const i = o >> 1;
    return [[i, 0.75], [o & 1 ? Math.min(i + 1, nc - 1) : Math.max(i - 1, 0), 0.25]];
  };
  for (let b = 0; b < n; b++) {
    const gy = new Float64Array(h * w);
    const gc = [new Float64Array(crh * crw), new Float64Array(crh * crw)];
    for (let y = 0; y < h; y++)
      for (let xx = 0; xx < w; xx++) {
        const gr = [0, 1, 2].map((c) => g[((b * 3 + c) * h + y) * w + xx]!);
        const t = MINV_COLS.map((col) => col[0]! * gr[0]! + col[1]! * gr[1]! + col[2]! * gr[2]!);
        gy[y * w + xx] = t[0]!;
        for (const [i, wi] of taps(y, sy, crh)) for (const [j, wj] of taps(xx, sx, crw)) for (let k = 0; k < 2; k++) gc[k]![i * crw + j]! += wi * wj * t[k + 1]!;
      }
    // Cell average transposed: chroma sample (i, j) hands 1 / (sx sy) to each (clamped) pixel of its cell.
    const gpix = [gy, new Float64Array(h * w), new Float64Array(h * w)];
    for (let i = 0; i < crh; i++)
      for (let j = 0; j < crw; j++)
        for (let dy = 0; dy < sy; dy++)
          for (let dx = 0; dx < sx; dx++) {
            const at = Math.min(i * sy + dy, h - 1) * w + Math.min(j * sx + dx, w - 1);
            for (let k = 0; k < 2; k++) gpix[k + 1]![at]! += gc[k]![i * crw + j]! / (sx * sy);
          }
    for (let p = 0; p < h * w; p++)
      for (let c = 0; c < 3; c++) {
        const m = M_COLS[c]!; // d(Y, Cb, Cr) / d(channel c)
        out[(b * 3 + c) * h * w + p] = m[0]! * gpix[0]![p]! + m[1]! * gpix[1]![p]! + m[2]! * gpix[2]![p]!;
      }
  }
  return out;
}

/** Deterministic 8-bit RGB test image (h x w x 3): smooth gradients, a disc and a bar with hard edges, and noise. */
export function syntheticRgb8(w: number, h: number, seed: number): Uint8Array {
  let s = seed >>> 0;
  const rnd = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  const out = new Uint8Array(w * h * 3);
  const cx = w * (0.3 + 0.4 * rnd());
  const cy = h * (0.3 + 0.4 * rnd());
  const r = Math.max(2, Math.min(w, h) * 0.3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const inDisc = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      const bar = Math.abs(x - 0.7 * w) < Math.max(1, w * 0.06);
      for (let c = 0; c < 3; c++) {
        let v = 40 + 150 * ((x / Math.max(1, w - 1)) * (c === 0 ? 1 : 0.4) + (y / Math.max(1, h - 1)) * (c === 2 ? 1 : 0.3)) / 1.4;
        if (inDisc) v = c === 1 ? 220 : 60 + 30 * c;
        if (bar) v = 250 - 100 * c;
        v += (rnd() - 0.5) * 24;
        out[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  return out;
}

/** HxWx3 8-bit -> [1, 3, H, W] in [-1, 1] (v / 127.5 - 1). */
export function rgb8ToNchw(rgb: Uint8Array, w: number, h: number): Float32Array {
  const out = new Float32Array(3 * w * h);
  for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) out[c * w * h + i] = rgb[3 * i + c]! / 127.5 - 1;
  return out;
}
