// Reverse-mode (vector-Jacobian product) multi-head attention on [B, L, H*D] tensors: dQ, dK, dV for
// an incoming gradient dO of attention(q, k, v, opts). Memory is O(B * H * Lq) besides the gradients:
// scores are recomputed per pass, never stored. Head dims that are multiples of 4 (up to MAX_HEAD_DIM)
// take the tiled kernels (kernels/attention_backward_flash.wgsl); others one thread per row
// (kernels/attention_backward.wgsl).
// f32 storage only: gradients are accumulated in f32 and an f16 copy would lose too much.

import source from '../../../kernels/attention_backward.wgsl';
import flashSource from '../../../kernels/attention_backward_flash.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';
import { checkAttentionArgs, MAX_HEAD_DIM, type AttentionOptions } from './attention.js';

export interface AttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
}

/** The gradients and the per-row (logsumexp, delta) both kernel pairs write; v's shape is k's. */
function outputs(rec: Recorder, q: Tensor, k: Tensor, rows: number) {
  const op = 'attention_backward';
  const e = rec.engine;
  return {
    lse: e.empty([rows], 'f32', `${op}:lse`),
    delta: e.empty([rows], 'f32', `${op}:delta`),
    dq: e.empty(q.shape, 'f32', `${op}:dq`),
    dk: e.empty(k.shape, 'f32', `${op}:dk`),
    dv: e.empty(k.shape, 'f32', `${op}:dv`),
  };
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
  const maxGroups = engine.limits.maxComputeWorkgroupsPerDimension;
  const flashWg = workgroupSize(engine, FLASH_WG);
  const flash =
    c.D % 4 === 0 &&
    c.D <= MAX_HEAD_DIM &&
    c.B * c.heads <= maxGroups &&
    Math.ceil(Math.max(c.lq, c.lk) / (flashWg * FLASH_ROWS)) <= maxGroups;
  if (flash) return flashBackward(rec, q, k, v, gradOut, opts, c, flashWg);
  const wg = workgroupSize(engine, 64);
  const kernel = (entry: string) => engine.kernel({ family: 'attention_backward', source, entry, dtype: 'f32', consts: { WG: wg } });
  const rows = c.B * c.heads * c.lq;
  const { lse, delta, dq, dk, dv } = outputs(rec, q, k, rows);
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

/**
 * Threads per workgroup and rows (queries or keys) per thread of the tiled kernels. Profiled on
 * lavapipe against one thread per row: 1024 x 1024 tokens, 8 heads x 40: 810 vs 4376 ms; 1024 x 77:
 * 100 vs 416 ms; 256 x 256, 8 x 80: 151 vs 585 ms; 64 x 64, 8 x 160: 13 vs 79 ms.
 */
const FLASH_WG = 8;
const FLASH_ROWS = 4;

function flashBackward(
  rec: Recorder,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gradOut: Tensor,
  opts: AttentionOptions,
  c: ReturnType<typeof checkAttentionArgs>,
  wg: number,
): AttentionGrads {
  const op = 'attention_backward';
  const engine = rec.engine;
  const kernel = (entry: string) =>
    engine.kernel({ family: 'attention_backward_flash', source: flashSource, entry, dtype: 'f32', consts: { WG: wg, D: c.D, R: FLASH_ROWS } });
  const { lse, delta, dq, dk, dv } = outputs(rec, q, k, c.B * c.heads * c.lq);
  const uniforms = {
    lq: c.lq,
    lk: c.lk,
    hd: c.hd,
    heads: c.heads,
    d4: c.D / 4,
    scale_log2: c.scale * Math.LOG2E,
    scale: c.scale,
    causal: opts.causal ? 1 : 0,
  };
  rec.dispatch(kernel('attn_bwf_q'), {
    op,
    bindings: { fq_q: q, fq_k: k, fq_v: v, fq_do: gradOut, fq_lse: lse, fq_delta: delta, fq_dq: dq },
    uniforms,
    workgroups: [Math.ceil(c.lq / (wg * FLASH_ROWS)), c.B * c.heads],
  });
  rec.dispatch(kernel('attn_bwf_kv'), {
    op,
    bindings: { fk_q: q, fk_k: k, fk_v: v, fk_do: gradOut, fk_lse: lse, fk_delta: delta, fk_dk: dk, fk_dv: dv },
    uniforms,
    workgroups: [Math.ceil(c.lk / (wg * FLASH_ROWS)), c.B * c.heads],
  });
  lse.dispose();
  delta.dispose();
  return { dq, dk, dv };
}
