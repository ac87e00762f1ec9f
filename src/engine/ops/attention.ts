// Multi-head scaled-dot-product attention on [B, L, H*D] tensors (the layout of diffusers'/
// transformers' to_q/to_k/to_v outputs, heads interleaved in the last dim): a flash-style kernel
// that never materialises the scores, and a naive three-kernel baseline that does.

import source from '../../../kernels/attention.wgsl';
import ioVec4 from '../../../kernels/attention_vec4.wgsl';
import ioScalar from '../../../kernels/attention_scalar.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

export interface AttentionOptions {
  heads: number;
  /** Softmax scale; default 1/sqrt(head dim). */
  scale?: number;
  /** Query i sees keys j <= i only (top-left aligned, like torch's is_causal). */
  causal?: boolean;
}

/** Largest head dim the flash kernel keeps in registers (query and accumulator arrays of D floats). */
export const MAX_HEAD_DIM = 256;

interface Checked {
  B: number;
  lq: number;
  lk: number;
  hd: number;
  heads: number;
  D: number;
  scale: number;
}

function check(op: string, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Checked {
  const shapes = `q ${shapeString(q.shape)}, k ${shapeString(k.shape)}, v ${shapeString(v.shape)}`;
  assertArg(q.rank === 3 && k.rank === 3 && v.rank === 3, `${op}: q, k and v must be [B, L, heads*headDim] (got ${shapes})`);
  const [B, lq, hd] = q.shape as [number, number, number];
  const [bk, lk, hdk] = k.shape as [number, number, number];
  assertArg(k.shape.every((d, i) => d === v.shape[i]), `${op}: k and v shapes differ (${shapes})`);
  assertArg(bk === B, `${op}: batch of q (${B}) and k/v (${bk}) differ (${shapes})`);
  assertArg(hdk === hd, `${op}: last dims of q (${hd}) and k/v (${hdk}) differ (${shapes})`);
  assertArg(q.dtype === k.dtype && k.dtype === v.dtype, `${op}: dtypes differ (q ${q.dtype}, k ${k.dtype}, v ${v.dtype})`);
  const heads = opts.heads;
  assertArg(Number.isInteger(heads) && heads > 0, `${op}: heads must be a positive integer, got ${heads}`);
  assertArg(hd % heads === 0, `${op}: last dim ${hd} is not divisible by heads=${heads} (${shapes})`);
  assertArg(B > 0 && lq > 0 && lk > 0 && hd > 0, `${op}: empty input (${shapes})`);
  const D = hd / heads;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  assertArg(Number.isFinite(scale), `${op}: scale must be finite, got ${scale}`);
  return { B, lq, lk, hd, heads, D, scale };
}

/** Queries per thread in the flash kernel (its register block is 8 queries x 4 keys). */
const QUERIES_PER_THREAD = 8;

/**
 * Threads per workgroup of the flash kernel: 8 threads x 8 queries measured best on lavapipe and
 * SwiftShader (about 5.5 and 0.9 GFLOP per CPU-second at 1024 x 1024, head dim 40; 4 queries per
 * thread gave 4.4 and 0.7, 16 per thread 2.4). One size for every sequence length keeps the number
 * of pipelines (seconds of JIT each on CPU adapters) small.
 */
function flashWorkgroup(engine: Recorder['engine']): number {
  return workgroupSize(engine, 8);
}

/**
 * The attention family with the buffer loaders for this head dim (vec4 when it allows). VEC4 is
 * not read by the WGSL: it keys the pipeline cache, which does not look at includes.
 */
function attentionKernel(engine: Recorder['engine'], entry: string, dtype: Tensor['dtype'], wg: number, D: number) {
  const vec4 = D % 4 === 0;
  return engine.kernel({
    family: 'attention',
    source,
    includes: [vec4 ? ioVec4 : ioScalar],
    entry,
    dtype,
    consts: { WG: wg, D, VEC4: vec4, QB: QUERIES_PER_THREAD },
  });
}

/**
 * Attention with an online softmax: q [B, Lq, H*D], k and v [B, Lk, H*D] -> [B, Lq, H*D] in q's
 * dtype (f16 storage accumulates in f32). Scores are never written to memory.
 */
export function attention(rec: Recorder, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  const c = check('attention', q, k, v, opts);
  assertArg(c.D <= MAX_HEAD_DIM, `attention: head dim ${c.D} exceeds the supported ${MAX_HEAD_DIM}`);
  const engine = rec.engine;
  const maxGroups = engine.limits.maxComputeWorkgroupsPerDimension;
  assertArg(c.B * c.heads <= maxGroups, `attention: batch*heads = ${c.B * c.heads} exceeds ${maxGroups} workgroups`);
  const wg = flashWorkgroup(engine);
  const groupsX = Math.ceil(c.lq / (wg * QUERIES_PER_THREAD));
  assertArg(groupsX <= maxGroups, `attention: ${c.lq} queries need ${groupsX} workgroups, over ${maxGroups}`);
  const kernel = attentionKernel(engine, 'attention', q.dtype, wg, c.D);
  const out = engine.empty([c.B, c.lq, c.hd], q.dtype, 'attention');
  rec.dispatch(kernel, {
    op: 'attention',
    bindings: { aq: q, ak: k, av: v, aout: out },
    uniforms: {
      lq: c.lq,
      lk: c.lk,
      hd: c.hd,
      heads: c.heads,
      d4: Math.ceil(c.D / 4),
      scale_log2: c.scale * Math.LOG2E,
      causal: opts.causal ? 1 : 0,
    },
    workgroups: [groupsX, c.B * c.heads],
  });
  return out;
}

/**
 * Baseline: scores [B*H, Lq, Lk] in f32 (one thread per score), an in-place row softmax, then
 * P.V (one thread per output). Only for sizes whose score matrix fits one storage binding.
 */
export function attentionNaive(rec: Recorder, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  const c = check('attentionNaive', q, k, v, opts);
  const engine = rec.engine;
  const nScores = c.B * c.heads * c.lq * c.lk;
  const bytes = nScores * 4;
  assertArg(
    bytes <= engine.limits.maxStorageBufferBindingSize,
    `attentionNaive: the score matrix [${c.B * c.heads}, ${c.lq}, ${c.lk}] needs ${bytes} bytes, over the adapter's ` +
      `maxStorageBufferBindingSize ${engine.limits.maxStorageBufferBindingSize}; use attention()`,
  );
  const wg = workgroupSize(engine);
  const spec = (entry: string) => attentionKernel(engine, entry, q.dtype, wg, 4);
  const scores = engine.empty([c.B * c.heads, c.lq, c.lk], 'f32', 'attention_scores');
  const naive = (n: number, row: number) => ({
    n,
    row,
    lq: c.lq,
    lk: c.lk,
    heads: c.heads,
    hdim: c.D,
    scale: c.scale,
    causal: opts.causal ? 1 : 0,
  });
  let g = grid1d(engine, nScores, wg);
  rec.dispatch(spec('attention_scores'), {
    op: 'attention_scores',
    bindings: { nq: q, nk: k, nscores: scores },
    uniforms: naive(nScores, g.row),
    workgroups: g.workgroups,
  });
  const rows = c.B * c.heads * c.lq;
  g = grid1d(engine, rows, wg);
  rec.dispatch(spec('attention_softmax'), {
    op: 'attention_softmax',
    bindings: { srows: scores },
    uniforms: { n: rows, row: g.row, len: c.lk },
    workgroups: g.workgroups,
  });
  const out = engine.empty([c.B, c.lq, c.hd], q.dtype, 'attention_naive');
  g = grid1d(engine, out.size, wg);
  rec.dispatch(spec('attention_pv'), {
    op: 'attention_pv',
    bindings: { pprobs: scores, pv: v, pout: out },
    uniforms: naive(out.size, g.row),
    workgroups: g.workgroups,
  });
  // Later dispatches of this program run after these, so the buffer can go back to the pool now.
  scores.dispose();
  return out;
}
export { check as checkAttentionArgs };
