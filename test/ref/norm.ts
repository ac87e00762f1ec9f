// CPU references for GroupNorm and LayerNorm (f64 arithmetic, two-pass mean and biased variance).

import { ACT_REF } from './math.js';

/** Normalises consecutive rows of `len` elements; affine index of element i is floor(i / adiv) % amod. */
function rowNormRef(
  x: ArrayLike<number>,
  len: number,
  eps: number,
  w: ArrayLike<number> | undefined,
  b: ArrayLike<number> | undefined,
  adiv: number,
  amod: number,
  act: string,
): Float32Array {
  const out = new Float32Array(x.length);
  const f = ACT_REF[act]!;
  for (let r = 0; r * len < x.length; r++) {
    const base = r * len;
    let s = 0;
    for (let i = 0; i < len; i++) s += x[base + i]!;
    const mean = s / len;
    let q = 0;
    for (let i = 0; i < len; i++) q += (x[base + i]! - mean) ** 2;
    const rstd = 1 / Math.sqrt(q / len + eps);
    for (let i = 0; i < len; i++) {
      const a = Math.floor((base + i) / adiv) % amod;
      const y = (x[base + i]! - mean) * rstd * (w ? w[a]! : 1) + (b ? b[a]! : 0);
      out[base + i] = f(y, 0);
    }
  }
  return out;
}

/** PyTorch GroupNorm on x [N, C, ...spatial] (shape given), optional SiLU after the affine. */
export function groupNormRef(
  x: ArrayLike<number>,
  shape: number[],
  groups: number,
  w?: ArrayLike<number>,
  b?: ArrayLike<number>,
  eps = 1e-5,
  act: 'silu' | 'none' = 'none',
): Float32Array {
  const c = shape[1]!;
  const spatial = shape.slice(2).reduce((p, d) => p * d, 1);
  return rowNormRef(x, (c / groups) * spatial, eps, w, b, spatial, c, act);
}

/** PyTorch F.layer_norm over trailing dims of total size `len`. */
export function layerNormRef(x: ArrayLike<number>, len: number, w?: ArrayLike<number>, b?: ArrayLike<number>, eps = 1e-5): Float32Array {
  return rowNormRef(x, len, eps, w, b, 1, len, 'none');
}
