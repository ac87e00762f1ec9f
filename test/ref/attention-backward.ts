// CPU references (f64) for the attention vector-Jacobian products, with the full probability matrix
// (fine at test sizes), plus an f64 forward for the adjoint check.

import type { AttentionRefArgs } from './attention.js';

/** P[b][h] as a flat [lq, lk] f64 array (masked entries 0) for q, k of [B, L, H*D]. */
function probs(q: ArrayLike<number>, k: ArrayLike<number>, a: AttentionRefArgs, b: number, h: number): Float64Array {
  const { lq, lk, heads, D } = a;
  const hd = heads * D;
  const scale = a.scale ?? 1 / Math.sqrt(D);
  const p = new Float64Array(lq * lk);
  for (let i = 0; i < lq; i++) {
    const visible = a.causal ? Math.min(lk, i + 1) : lk;
    let mx = -Infinity;
    for (let j = 0; j < visible; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += q[(b * lq + i) * hd + h * D + d]! * k[(b * lk + j) * hd + h * D + d]!;
      p[i * lk + j] = s * scale;
      mx = Math.max(mx, s * scale);
    }
    let sum = 0;
    for (let j = 0; j < visible; j++) sum += (p[i * lk + j] = Math.exp(p[i * lk + j]! - mx));
    for (let j = 0; j < visible; j++) p[i * lk + j]! /= sum;
  }
  return p;
}

/** f64 attention forward: O = P V per (batch, head). */
export function attentionForward64(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, a: AttentionRefArgs): Float64Array {
  const { B, lq, lk, heads, D } = a;
  const hd = heads * D;
  const out = new Float64Array(B * lq * hd);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      const p = probs(q, k, a, b, h);
      for (let i = 0; i < lq; i++) {
        for (let j = 0; j < lk; j++) {
          const pij = p[i * lk + j]!;
          for (let d = 0; d < D; d++) out[(b * lq + i) * hd + h * D + d] += pij * v[(b * lk + j) * hd + h * D + d]!;
        }
      }
    }
  }
  return out;
}

/** dQ, dK, dV: dP = dO V^T, dS = P * (dP - rowsum(P * dP)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO. */
export function attentionBackwardRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dO: ArrayLike<number>,
  a: AttentionRefArgs,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { B, lq, lk, heads, D } = a;
  const hd = heads * D;
  const scale = a.scale ?? 1 / Math.sqrt(D);
  const dq = new Float64Array(B * lq * hd);
  const dk = new Float64Array(B * lk * hd);
  const dv = new Float64Array(B * lk * hd);
  const qi = (b: number, i: number, h: number) => (b * lq + i) * hd + h * D;
  const kj = (b: number, j: number, h: number) => (b * lk + j) * hd + h * D;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      const p = probs(q, k, a, b, h);
      const dp = new Float64Array(lq * lk);
      for (let i = 0; i < lq; i++) {
        let rowSum = 0;
        for (let j = 0; j < lk; j++) {
          let s = 0;
          for (let d = 0; d < D; d++) s += dO[qi(b, i, h) + d]! * v[kj(b, j, h) + d]!;
          dp[i * lk + j] = s;
          rowSum += p[i * lk + j]! * s;
        }
        for (let j = 0; j < lk; j++) {
          const pij = p[i * lk + j]!;
          const ds = pij * (dp[i * lk + j]! - rowSum);
          for (let d = 0; d < D; d++) {
            dq[qi(b, i, h) + d] += scale * ds * k[kj(b, j, h) + d]!;
            dk[kj(b, j, h) + d] += scale * ds * q[qi(b, i, h) + d]!;
            dv[kj(b, j, h) + d] += pij * dO[qi(b, i, h) + d]!;
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}
