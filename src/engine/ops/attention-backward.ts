// Reverse-mode (vector-Jacobian product) multi-head attention on [B, L, H*D] tensors: dQ, dK, dV for
// an incoming gradient dO of attention(q, k, v, opts). Memory is O(B * H * Lq) besides the gradients:
// scores are recomputed per pass (kernels/attention_backward.wgsl), never stored.
// f32 storage only: gradients are accumulated in f32 and an f16 copy would lose too much.

import source from '../../../kernels/attention_backward.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';
import { checkAttentionArgs, type AttentionOptions } from './attention.js';

export interface AttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
}

export function attentionBackward(rec: Recorder, q: Tensor, k: Tensor, v: Tensor, gradOut: Tensor, opts: AttentionOptions): AttentionGrads {
  const op = 'attention_backward';
  const c = checkAttentionArgs(op, q, k, v, opts);
  assertArg(q.dtype === 'f32', `${op}: backward ops take f32 tensors, got ${q.dtype}`);
  assertArg(
    gradOut.dtype === 'f32' && gradOut.shape.length === 3 && gradOut.shape.every((d, i) => d === q.shape[i]),
    `${op}: gradOut ${gradOut.dtype} ${shapeString(gradOut.shape)} must be f32 of q's shape ${shapeString(q.shape)}`,
  );
  const engine = rec.engine;
  const wg = workgroupSize(engine, 64);
  const kernel = (entry: string) => engine.kernel({ family: 'attention_backward', source, entry, dtype: 'f32', consts: { WG: wg } });
  const rows = c.B * c.heads * c.lq;
  const lse = engine.empty([rows], 'f32', `${op}:lse`);
  const delta = engine.empty([rows], 'f32', `${op}:delta`);
  const dq = engine.empty(q.shape, 'f32', `${op}:dq`);
  const dk = engine.empty(k.shape, 'f32', `${op}:dk`);
  const dv = engine.empty(v.shape, 'f32', `${op}:dv`);
  const common = { lq: c.lq, lk: c.lk, heads: c.heads, hdim: c.D, scale: c.scale, causal: opts.causal ? 1 : 0 };
  let g = grid1d(engine, rows, wg);
  rec.dispatch(kernel('attn_bw_q'), {
    op,
    bindings: { bq_q: q, bq_k: k, bq_v: v, bq_do: gradOut, bq_lse: lse, bq_delta: delta, bq_dq: dq },
    uniforms: { n: rows, row: g.row, ...common },
    workgroups: g.workgroups,
  });
  const keys = c.B * c.heads * c.lk;
  g = grid1d(engine, keys, wg);
  rec.dispatch(kernel('attn_bw_kv'), {
    op,
    bindings: { bkv_q: q, bkv_k: k, bkv_v: v, bkv_do: gradOut, bkv_lse: lse, bkv_delta: delta, bkv_dk: dk, bkv_dv: dv },
    uniforms: { n: keys, row: g.row, ...common },
    workgroups: g.workgroups,
  });
  lse.dispose();
  delta.dispose();
  return { dq, dk, dv };
}
