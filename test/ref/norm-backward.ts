// CPU references (f64) for the GroupNorm / LayerNorm vector-Jacobian products, written from the
// textbook derivation, plus an f64 forward for the finite-difference (adjoint) checks.

import { sigmoid } from './math.js';

export interface RowNormSpec {
  /** Elements per normalised row. */
  len: number;
  eps: number;
  /** Affine index of element i: floor(i / adiv) % amod. */
  adiv: number;
  amod: number;
  silu: boolean;
}

export const groupNormSpec = (shape: number[], groups: number, eps = 1e-5, silu = false): RowNormSpec => {
  const spatial = shape.slice(2).reduce((p, d) => p * d, 1);
  return { len: (shape[1]! / groups) * spatial, eps, adiv: spatial, amod: shape[1]!, silu };
};

export const layerNormSpec = (len: number, eps = 1e-5): RowNormSpec => ({ len, eps, adiv: 1, amod: len, silu: false });

function rowStats(x: ArrayLike<number>, base: number, len: number, eps: number): [number, number] {
  let s = 0;
  for (let i = 0; i < len; i++) s += x[base + i]!;
  const mean = s / len;
  let q = 0;
  for (let i = 0; i < len; i++) q += (x[base + i]! - mean) ** 2;
  return [mean, 1 / Math.sqrt(q / len + eps)];
}

/** f64 forward: act((x - mean) * rstd * w + b). */
export function rowNormForward64(x: ArrayLike<number>, s: RowNormSpec, w?: ArrayLike<number>, b?: ArrayLike<number>): Float64Array {
  const out = new Float64Array(x.length);
  for (let base = 0; base < x.length; base += s.len) {
    const [mean, rstd] = rowStats(x, base, s.len, s.eps);
    for (let i = base; i < base + s.len; i++) {
      const a = Math.floor(i / s.adiv) % s.amod;
      const z = (x[i]! - mean) * rstd * (w ? w[a]! : 1) + (b ? b[a]! : 0);
      out[i] = s.silu ? z * sigmoid(z) : z;
    }
  }
  return out;
}

/** dx, dWeight, dBias of rowNormForward64 for the incoming gradient g. */
export function rowNormBackwardRef(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  s: RowNormSpec,
  w?: ArrayLike<number>,
  b?: ArrayLike<number>,
): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(s.amod);
  const db = new Float64Array(s.amod);
  const y = new Float64Array(s.len);
  const gy = new Float64Array(s.len);
  for (let base = 0; base < x.length; base += s.len) {
    const [mean, rstd] = rowStats(x, base, s.len, s.eps);
    let sumGy = 0;
    let sumGyY = 0;
    for (let k = 0; k < s.len; k++) {
      const i = base + k;
      const a = Math.floor(i / s.adiv) % s.amod;
      y[k] = (x[i]! - mean) * rstd;
      const wa = w ? w[a]! : 1;
      const z = y[k]! * wa + (b ? b[a]! : 0);
      const dz = s.silu ? sigmoid(z) * (1 + z * (1 - sigmoid(z))) : 1;
      const gz = g[i]! * dz;
      dw[a] += gz * y[k]!;
      db[a] += gz;
      gy[k] = gz * wa;
      sumGy += gy[k]!;
      sumGyY += gy[k]! * y[k]!;
    }
    for (let k = 0; k < s.len; k++) dx[base + k] = rstd * (gy[k]! - sumGy / s.len - (y[k]! * sumGyY) / s.len);
  }
  return { dx, dw, db };
}
