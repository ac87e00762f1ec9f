// CPU reference for multi-head attention on [B, L, H*D] tensors (f64 arithmetic, two-pass softmax).

export interface AttentionRefArgs {
  B: number;
  lq: number;
  lk: number;
  heads: number;
  D: number;
  scale?: number;
  causal?: boolean;
  /** Only these query rows are computed (others stay 0); all when omitted. */
  rows?: number[];
}

export function attentionRef(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, a: AttentionRefArgs): Float32Array {
  const { B, lq, lk, heads, D } = a;
  const hd = heads * D;
  const scale = a.scale ?? 1 / Math.sqrt(D);
  const out = new Float32Array(B * lq * hd);
  const rows = a.rows ?? Array.from({ length: lq }, (_, i) => i);
  const s = new Float64Array(lk);
  for (let b = 0; b < B; b++) {
    for (const i of rows) {
      for (let h = 0; h < heads; h++) {
        const qb = (b * lq + i) * hd + h * D;
        const visible = a.causal ? Math.min(lk, i + 1) : lk;
        let mx = -Infinity;
        for (let j = 0; j < visible; j++) {
          const kb = (b * lk + j) * hd + h * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qb + d]! * k[kb + d]!;
          s[j] = dot * scale;
          mx = Math.max(mx, s[j]!);
        }
        let sum = 0;
        for (let j = 0; j < visible; j++) {
          s[j] = Math.exp(s[j]! - mx);
          sum += s[j]!;
        }
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j < visible; j++) acc += s[j]! * v[(b * lk + j) * hd + h * D + d]!;
          out[qb + d] = acc / sum;
        }
      }
    }
  }
  return out;
}
