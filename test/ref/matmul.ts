// CPU reference for matmul / linear (f64 accumulation), with numpy-style batch broadcasting.

import { ACT_REF } from './math.js';

export interface MatmulRefOptions {
  transA?: boolean;
  transB?: boolean;
  bias?: ArrayLike<number>;
  act?: string;
  alpha?: number;
  scale?: number;
}

export function matmulRef(
  a: ArrayLike<number>,
  aShape: readonly number[],
  b: ArrayLike<number>,
  bShape: readonly number[],
  opts: MatmulRefOptions = {},
): { out: Float32Array; shape: number[] } {
  const [ar, ac] = aShape.slice(-2) as [number, number];
  const [br, bc] = bShape.slice(-2) as [number, number];
  const M = opts.transA ? ac : ar;
  const K = opts.transA ? ar : ac;
  const N = opts.transB ? br : bc;
  if ((opts.transB ? bc : br) !== K) throw new Error('matmulRef: inner dimensions differ');
  const ba = aShape.slice(0, -2);
  const bb = bShape.slice(0, -2);
  const rank = Math.max(ba.length, bb.length);
  const A = [...new Array<number>(rank - ba.length).fill(1), ...ba];
  const B = [...new Array<number>(rank - bb.length).fill(1), ...bb];
  const batch = A.map((d, i) => Math.max(d, B[i]!));
  const nBatch = batch.reduce((p, d) => p * d, 1);
  const act = ACT_REF[opts.act ?? 'none']!;
  const out = new Float32Array(nBatch * M * N);
  for (let t = 0; t < nBatch; t++) {
    // Batch index -> offsets of this batch's matrices in a and b (broadcast dims repeat).
    let rem = t;
    let ia = 0;
    let ib = 0;
    let sa = 1;
    let sb = 1;
    for (let d = rank - 1; d >= 0; d--) {
      const c = rem % batch[d]!;
      rem = Math.floor(rem / batch[d]!);
      if (A[d] !== 1) ia += c * sa;
      if (B[d] !== 1) ib += c * sb;
      sa *= A[d]!;
      sb *= B[d]!;
    }
    const ao = ia * M * K;
    const bo = ib * K * N;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const av = a[ao + (opts.transA ? k * M + m : m * K + k)]!;
          const bv = b[bo + (opts.transB ? n * K + k : k * N + n)]!;
          s += av * bv;
        }
        s = s * (opts.scale ?? 1) + (opts.bias ? opts.bias[n]! : 0);
        out[t * M * N + m * N + n] = act(s, opts.alpha ?? 0.01);
      }
    }
  }
  return { out, shape: [...batch, M, N] };
}
