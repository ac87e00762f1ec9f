// CPU references (f64) for the VAE mid-block attention (diffusers' Attention with a group norm and a
// residual, on x [N, C, H, W]) and its vector-Jacobian product with respect to x, composed from the
// group-norm and attention references (full probability matrices: fine at test sizes).

import { attentionBackwardRef, attentionForward64 } from './attention-backward.js';
import { groupNormSpec, rowNormBackwardRef, rowNormForward64 } from './norm-backward.js';

export interface VaeAttentionRefParams {
  /** [N, C, H, W]. */
  shape: readonly number[];
  heads: number;
  groups: number;
  eps: number;
  rescale: number;
  normW: ArrayLike<number>;
  normB: ArrayLike<number>;
  /** Linear weights [C_out, C_in] (row-major) and biases [C]. */
  wq: ArrayLike<number>;
  bq: ArrayLike<number>;
  wk: ArrayLike<number>;
  bk: ArrayLike<number>;
  wv: ArrayLike<number>;
  bv: ArrayLike<number>;
  wo: ArrayLike<number>;
  bo: ArrayLike<number>;
}

function dims(p: VaeAttentionRefParams) {
  const [n, c, h, w] = p.shape as [number, number, number, number];
  return { n, c, l: h * w };
}

/** tokens [N, L, C] W^T + b from channels-first [N, C, L]. */
function project(xT: Float64Array, w: ArrayLike<number>, b: ArrayLike<number>, n: number, c: number, l: number): Float64Array {
  const out = new Float64Array(n * l * c);
  for (let bi = 0; bi < n; bi++) {
    for (let t = 0; t < l; t++) {
      for (let o = 0; o < c; o++) {
        let s = b[o]!;
        for (let i = 0; i < c; i++) s += xT[(bi * c + i) * l + t]! * w[o * c + i]!;
        out[(bi * l + t) * c + o] = s;
      }
    }
  }
  return out;
}

function inner(p: VaeAttentionRefParams, x: ArrayLike<number>) {
  const { n, c, l } = dims(p);
  const spec = groupNormSpec(p.shape.slice(), p.groups, p.eps);
  const hn = rowNormForward64(x, spec, p.normW, p.normB); // [N, C, L]
  const q = project(hn, p.wq, p.bq, n, c, l);
  const k = project(hn, p.wk, p.bk, n, c, l);
  const v = project(hn, p.wv, p.bv, n, c, l);
  const args = { B: n, lq: l, lk: l, heads: p.heads, D: c / p.heads };
  return { n, c, l, spec, q, k, v, args };
}

/** (to_out(attention(q, k, v)) as [N, C, H, W] + x) / rescale. */
export function vaeAttentionForward64(x: ArrayLike<number>, p: VaeAttentionRefParams): Float64Array {
  const { n, c, l, q, k, v, args } = inner(p, x);
  const att = attentionForward64(q, k, v, args); // [N, L, C]
  const y = new Float64Array(n * c * l);
  for (let bi = 0; bi < n; bi++) {
    for (let o = 0; o < c; o++) {
      for (let t = 0; t < l; t++) {
        let s = p.bo[o]!;
        for (let j = 0; j < c; j++) s += p.wo[o * c + j]! * att[(bi * l + t) * c + j]!;
        const i = (bi * c + o) * l + t;
        y[i] = (s + x[i]!) / p.rescale;
      }
    }
  }
  return y;
}

/** d/dx of sum(g * vaeAttentionForward64(x)). */
export function vaeAttentionVjpRef(x: ArrayLike<number>, g: ArrayLike<number>, p: VaeAttentionRefParams): Float64Array {
  const { n, c, l, spec, q, k, v, args } = inner(p, x);
  const gs = Float64Array.from(g, (e) => e / p.rescale);
  // d att[n, t, j] = sum_o gs[n, o, t] Wo[o, j].
  const dAtt = new Float64Array(n * l * c);
  for (let bi = 0; bi < n; bi++) {
    for (let t = 0; t < l; t++) {
      for (let j = 0; j < c; j++) {
        let s = 0;
        for (let o = 0; o < c; o++) s += gs[(bi * c + o) * l + t]! * p.wo[o * c + j]!;
        dAtt[(bi * l + t) * c + j] = s;
      }
    }
  }
  const { dq, dk, dv } = attentionBackwardRef(q, k, v, dAtt, args);
  // d hn[n, i, t] = sum_o (dq Wq + dk Wk + dv Wv)[n, t, o -> i].
  const dhn = new Float64Array(n * c * l);
  for (let bi = 0; bi < n; bi++) {
    for (let t = 0; t < l; t++) {
      for (let i = 0; i < c; i++) {
        let s = 0;
        for (let o = 0; o < c; o++) {
          const r = (bi * l + t) * c + o;
          s += dq[r]! * p.wq[o * c + i]! + dk[r]! * p.wk[o * c + i]! + dv[r]! * p.wv[o * c + i]!;
        }
        dhn[(bi * c + i) * l + t] = s;
      }
    }
  }
  const { dx } = rowNormBackwardRef(x, dhn, spec, p.normW, p.normB);
  for (let i = 0; i < dx.length; i++) dx[i]! += gs[i]!;
  return dx;
}
