// CPU reference (f64) for the matmul VJP: accumulates dA, dB and dBias element by element over the
// forward's loops (batch broadcasting included), independent of the matmul-of-transposes form.

export interface MatmulBackwardRefOptions {
  transA?: boolean;
  transB?: boolean;
  scale?: number;
}

export function matmulBackwardRef(
  a: ArrayLike<number>,
  aShape: readonly number[],
  b: ArrayLike<number>,
  bShape: readonly number[],
  g: ArrayLike<number>,
  opts: MatmulBackwardRefOptions = {},
): { gradA: Float64Array; gradB: Float64Array; gradBias: Float64Array } {
  const [ar, ac] = aShape.slice(-2) as [number, number];
  const [br, bc] = bShape.slice(-2) as [number, number];
  const M = opts.transA ? ac : ar;
  const K = opts.transA ? ar : ac;
  const N = opts.transB ? br : bc;
  const scale = opts.scale ?? 1;
  const ba = aShape.slice(0, -2);
  const bb = bShape.slice(0, -2);
  const rank = Math.max(ba.length, bb.length);
  const A = [...new Array<number>(rank - ba.length).fill(1), ...ba];
  const B = [...new Array<number>(rank - bb.length).fill(1), ...bb];
  const batch = A.map((d, i) => Math.max(d, B[i]!));
  const nBatch = batch.reduce((p, d) => p * d, 1);
  const gradA = new Float64Array(a.length);
  const gradB = new Float64Array(b.length);
  const gradBias = new Float64Array(N);
  for (let t = 0; t < nBatch; t++) {
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
        const gv = g[t * M * N + m * N + n]!;
        gradBias[n] += gv;
        for (let k = 0; k < K; k++) {
          const ai = ao + (opts.transA ? k * M + m : m * K + k);
          const bi = bo + (opts.transB ? n * K + k : k * N + n);
          gradA[ai] += scale * gv * b[bi]!;
          gradB[bi] += scale * gv * a[ai]!;
        }
      }
    }
  }
  return { gradA, gradB, gradBias };
}
