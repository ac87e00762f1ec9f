// GroupNorm and LayerNorm (PyTorch semantics: biased variance, eps inside the square root,
// per-channel / element-wise affine), with an optional fused activation after the affine.
// Both are "normalise rows, then affine": statistics per row (norm_stats_chunk: a thread per chunk of a row;
// norm_stats: workgroups per row, plus norm_combine when a long row is split over several of them),
// then one elementwise pass that applies them. Rows short enough to be one chunk take one dispatch that
// does both (norm_fused, norm_fused_row4): a step has ~100 LayerNorms, and each dispatch costs JavaScript
// time to encode whatever its GPU time.

import source from '../../../kernels/norm.wgsl';
import type { Engine } from '../device.js';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { paramDtype, shapeSize, shapeString } from '../dtype.js';
import { ACTIVATION_WGSL, activationCode } from './elementwise.js';
import { grid1d, workgroupSize } from './grid.js';
import { laneIncludes } from './lanes.js';

/** Rows longer than this may be split into chunks, each reduced by its own workgroup. */
export const SPLIT_MIN_LEN = 4096;
/** Splitting aims for at least this many workgroups in the statistics pass. */
const TARGET_JOBS = 256;
/** Rows up to this length get one thread each for their statistics (no workgroup barriers). */
export const NORM_THREAD_MAX_LEN = 64;
/** Longest chunk one thread reduces in norm_stats_chunk (16 KiB of f32: its second pass hits cache). */
const THREAD_CHUNK = 2048;
// CPU adapters always take one thread per row: their workgroup barriers cost more than splitting a row
// gains. Measured (stats + apply, 2-core machine): GroupNorm [1, 320, 64, 64] / 32 groups on SwiftShader
// 56 ms per-thread vs 357 ms per-workgroup; LayerNorm over 320 on [2, 4096, 320] 165 ms vs 2.6 s;
// on lavapipe 14 vs 23 ms and 28 vs 87 ms (its one loss: [1, 128, 256, 256] / 32, 137 vs 104 ms).

/** The norm family's includes: every entry shares one module, so all of them get the lane include. */
export function normIncludes(engine: Engine): { includes: string[]; subgroups: boolean } {
  return laneIncludes(engine, [ACTIVATION_WGSL]);
}

export type NormLayout = 'auto' | 'thread' | 'group';

/** How norm_stats splits rows of `len` elements: `chunks` per row of `chunk` elements (last may be shorter). */
export function normChunks(rows: number, len: number): { chunks: number; chunk: number } {
  if (len <= SPLIT_MIN_LEN || rows >= TARGET_JOBS) return { chunks: 1, chunk: len };
  const want = Math.min(Math.ceil(len / SPLIT_MIN_LEN), Math.ceil(TARGET_JOBS / rows));
  const chunk = Math.ceil(len / Math.max(1, want));
  return { chunks: Math.ceil(len / chunk), chunk };
}

export function jobGrid(engine: Engine, jobs: number): [number, number] {
  const maxDim = engine.limits.maxComputeWorkgroupsPerDimension;
  const wx = Math.min(jobs, maxDim);
  return [wx, Math.ceil(jobs / wx)];
}

export interface RowNorm {
  op: string;
  layout: NormLayout;
  rows: number;
  len: number;
  /** Affine parameter index of element i: floor(i / adiv) % amod. */
  adiv: number;
  amod: number;
  eps: number;
  act: number;
  /** vec4s per workgroup of norm_apply_seg (default: segmentSpan). */
  span?: number;
}

/**
 * How norm_stats_chunk splits rows of `len` elements for one thread per chunk: chunks of at most
 * THREAD_CHUNK elements, few enough that a thread's second pass re-reads its chunk from cache, and
 * enough of them to spread short-row counts (GroupNorm: 32 rows per image) over all cores.
 */
export function threadChunks(len: number): { chunks: number; chunk: number } {
  if (len <= THREAD_CHUNK) return { chunks: 1, chunk: len };
  const chunks = Math.ceil(len / THREAD_CHUNK);
  // Chunks of whole vec4s when the row is (norm_stats_chunk4).
  const chunk = len % 4 === 0 ? 4 * Math.ceil(len / 4 / chunks) : Math.ceil(len / chunks);
  return { chunks: Math.ceil(len / chunk), chunk };
}

/**
 * Records the row statistics pass(es) of a row normalisation: a new f32 tensor [rows, 2] of
 * (mean, 1 / sqrt(biased variance + eps)) per row of `len` consecutive elements of x.
 * Shared with the backward ops, which recompute the statistics rather than keep them.
 */
/** Per recording: row statistics by input tensor and settings (see normRowStats). */
const statsMemo = new WeakMap<Recorder, Map<Tensor, Map<string, Tensor>>>();

/**
 * Per-row [mean, rstd] of x, shared within one recording: a VJP that recomputes a block's forward and
 * then differentiates its norms reads the statistics the forward computed for the same input tensor
 * (ops write fresh tensors, so the same Tensor holds the same values for the whole recording). The
 * result belongs to the recording (freed when it ends): callers must not dispose it.
 */
export function normRowStats(rec: Recorder, x: Tensor, p: { op: string; layout: NormLayout; rows: number; len: number; eps: number }): Tensor {
  const hit = statsMemo.get(rec)?.get(x)?.get(statsKey(p));
  if (hit) return hit;
  const stats = computeRowStats(rec, x, p);
  rememberRowStats(rec, x, p, stats);
  return stats;
}

function statsKey(p: { layout: NormLayout; rows: number; len: number; eps: number }): string {
  return `${p.layout}|${p.rows}|${p.len}|${p.eps}`;
}

/** Whether normRowStats already holds x's statistics in this recording. */
function hasRowStats(rec: Recorder, x: Tensor, p: { layout: NormLayout; rows: number; len: number; eps: number }): boolean {
  return !!statsMemo.get(rec)?.get(x)?.has(statsKey(p));
}

/** Registers x's statistics for this recording (normRowStats returns them from now on; the recording frees them). */
function rememberRowStats(rec: Recorder, x: Tensor, p: { layout: NormLayout; rows: number; len: number; eps: number }, stats: Tensor): void {
  let byX = statsMemo.get(rec);
  if (!byX) {
    const m = new Map<Tensor, Map<string, Tensor>>();
    statsMemo.set(rec, (byX = m));
    rec.onEnd(() => {
      for (const forX of m.values()) for (const t of forX.values()) t.dispose();
      statsMemo.delete(rec);
    });
  }
  let forX = byX.get(x);
  if (!forX) byX.set(x, (forX = new Map()));
  forX.set(statsKey(p), rec.engine.keep(stats));
}

/** Whether the statistics are computed one thread per row (else workgroups per row). */
function statsPerThread(engine: Engine, p: { layout: NormLayout; len: number }): boolean {
  return p.layout === 'thread' || (p.layout === 'auto' && (p.len <= NORM_THREAD_MAX_LEN || engine.info.software));
}

/**
 * The fused statistics + apply kernel for this normalisation, if one applies: rows of one chunk, and on
 * the per-thread layout only whole-vec4 rows with element-wise affine (LayerNorm; a GroupNorm row there
 * is read by one thread, and its segment-wise apply writes far faster than one thread per row could).
 */
export function fusedNormEntry(engine: Engine, p: Pick<RowNorm, 'layout' | 'rows' | 'len' | 'adiv' | 'amod'>): 'norm_fused' | 'norm_fused_row4' | undefined {
  if (statsPerThread(engine, p)) {
    const rowAffine = p.adiv === 1 && p.amod === p.len;
    return rowAffine && p.len % 4 === 0 && threadChunks(p.len).chunks === 1 ? 'norm_fused_row4' : undefined;
  }
  return normChunks(p.rows, p.len).chunks === 1 ? 'norm_fused' : undefined;
}

/** Two workgroup sizes only: each is a pipeline, and barrier pipelines compile slowly on SwiftShader. */
function statsWorkgroup(engine: Engine, perThread: boolean, chunk: number): number {
  return workgroupSize(engine, perThread || chunk <= 1024 ? 64 : 256);
}

function computeRowStats(rec: Recorder, x: Tensor, p: { op: string; layout: NormLayout; rows: number; len: number; eps: number }): Tensor {
  const engine = rec.engine;
  const stats = engine.empty([p.rows, 2], 'f32', `${p.op}:stats`);
  const perThread = statsPerThread(engine, p);
  const { chunks, chunk } = perThread ? threadChunks(p.len) : normChunks(p.rows, p.len);
  // threadChunks cuts rows of whole vec4s into chunks of whole vec4s.
  const vec4 = perThread && p.len % 4 === 0;
  const wgStats = statsWorkgroup(engine, perThread, chunk);
  const statsUniforms = { rows: p.rows, len: p.len, chunk, chunks, eps: p.eps };
  const kStats = engine.kernel({
    family: 'norm',
    source,
    ...normIncludes(engine),
    entry: perThread ? (vec4 ? 'norm_stats_chunk4' : 'norm_stats_chunk') : 'norm_stats',
    dtype: x.dtype,
    consts: { WG: wgStats, ACT: 0, HAS_W: false, HAS_B: false },
  });
  const jobs = p.rows * chunks;
  const target = chunks === 1 ? stats : engine.empty([jobs, 2], 'f32', `${p.op}:moments`);
  const workgroups = perThread ? grid1d(engine, jobs, wgStats).workgroups : jobGrid(engine, jobs);
  const bindings: Record<string, Tensor> = vec4 ? { nx4: x, nmom4: target } : { nx: x, nmom: target };
  rec.dispatch(kStats, { op: p.op, bindings, uniforms: statsUniforms, workgroups });
  if (chunks > 1) {
    const kComb = engine.kernel({ family: 'norm', source, ...normIncludes(engine), entry: 'norm_combine', dtype: 'f32', consts: { WG: 64, ACT: 0, HAS_W: false, HAS_B: false } });
    rec.dispatch(kComb, { op: p.op, bindings: { cmom: target, cstats: stats }, uniforms: statsUniforms, workgroups: Math.ceil(p.rows / 64) });
    target.dispose(); // later reuse is ordered after this program's reads
  }
  return stats;
}

/**
 * How norm_apply_seg covers this normalisation, if it can: segments of `seg` elements (a multiple of 4)
 * that share one affine index (GroupNorm: a channel's plane) or are whole rows indexing the affine
 * parameters element-wise (LayerNorm); otherwise undefined (norm_apply takes it).
 */
export function normSegments(p: Pick<RowNorm, 'len' | 'adiv' | 'amod'>): { seg: number; shared: boolean } | undefined {
  if (p.adiv % 4 === 0 && p.len % p.adiv === 0) return { seg: p.adiv, shared: true };
  if (p.adiv === 1 && p.amod === p.len && p.len % 4 === 0) return { seg: p.len, shared: false };
  return undefined;
}

/**
 * vec4s per workgroup in norm_apply_seg. CPU adapters pay a fixed cost per workgroup, so a workgroup there
 * takes 1024 vec4s (several short segments, or a slice of a long one). Medians of 15 profiled runs on
 * lavapipe, GroupNorm + SiLU [1, 320, 64, 64] / [1, 640, 32, 32] / [1, 128, 256, 256]: span 256 4.9 / 2.5 /
 * 39.7 ms, 1024 4.0 / 2.1 / 35.6 ms, 4096 4.1 / 2.1 / 46.1 ms. GPUs want many small workgroups.
 */
function segmentSpan(engine: Engine): number {
  return engine.info.software ? 1024 : 256;
}

/**
 * The tensors bound as a norm kernel's weight and bias (forward and backward): an absent one is bound to
 * the other or to x (read-only, never read: HAS_W / HAS_B fold the access away). The affine bindings take
 * the parameters' dtype (f16 with f32 activations), so weight and bias must share it.
 */
export function affineBindings(op: string, x: Tensor, weight: Tensor | undefined, bias: Tensor | undefined): { w: Tensor; b: Tensor } {
  assertArg(!weight || !bias || weight.dtype === bias.dtype, `${op}: weight is ${weight?.dtype} but bias is ${bias?.dtype}`);
  return { w: weight ?? bias ?? x, b: bias ?? weight ?? x };
}

function recordApply(rec: Recorder, x: Tensor, stats: Tensor, weight: Tensor | undefined, bias: Tensor | undefined, out: Tensor, p: RowNorm): void {
  const engine = rec.engine;
  const consts = { ACT: p.act, HAS_W: weight !== undefined, HAS_B: bias !== undefined };
  const { w, b } = affineBindings(p.op, x, weight, bias);
  const wdtype = w.dtype;
  const segs = normSegments(p);
  if (segs) {
    const seg4 = segs.seg / 4;
    const count = x.size / segs.seg;
    const wg = workgroupSize(engine, 64);
    const want = p.span ?? segmentSpan(engine);
    const span = Math.min(seg4, want);
    const perWg = Math.max(1, Math.floor(want / seg4));
    const groups = Math.ceil(count / perWg);
    const maxDim = engine.limits.maxComputeWorkgroupsPerDimension;
    const gy = Math.min(groups, maxDim);
    const k = engine.kernel({ family: 'norm', source, ...normIncludes(engine), entry: 'norm_apply_seg', dtype: x.dtype, wdtype, consts: { WG: wg, ...consts }, overrides: { AFF_SHARED: segs.shared ? 1 : 0 } });
    rec.dispatch(k, {
      op: p.op,
      bindings: { vx: x, vstats: stats, vw: w, vb: b, vout: out },
      uniforms: { segs: count, seg4, span, per_wg: perWg, per_row: p.len / segs.seg, amod: p.amod },
      workgroups: [Math.ceil(seg4 / span), gy, Math.ceil(groups / gy)],
    });
    return;
  }
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'norm', source, ...normIncludes(engine), entry: 'norm_apply', dtype: x.dtype, wdtype, consts: { WG: wg, ...consts } });
  const g = grid1d(engine, x.size, wg);
  rec.dispatch(k, {
    op: p.op,
    bindings: { ax: x, astats: stats, aw: w, ab: b, aout: out },
    uniforms: { n: x.size, row: g.row, len: p.len, adiv: p.adiv, amod: p.amod },
    workgroups: g.workgroups,
  });
}

function normalizeRows(rec: Recorder, x: Tensor, weight: Tensor | undefined, bias: Tensor | undefined, p: RowNorm & { fuse?: boolean }): Tensor {
  const engine = rec.engine;
  const out = engine.empty(x.shape, x.dtype, p.op);
  if (x.size === 0) return out;
  const entry = p.fuse === false || hasRowStats(rec, x, p) ? undefined : fusedNormEntry(engine, p);
  if (!entry) {
    recordApply(rec, x, normRowStats(rec, x, p), weight, bias, out, p);
    return out;
  }
  const stats = engine.empty([p.rows, 2], 'f32', `${p.op}:stats`);
  const { w, b } = affineBindings(p.op, x, weight, bias);
  const perRow = entry === 'norm_fused_row4';
  // The stats pass's workgroup size: the same summation order, so the same bits.
  const wg = statsWorkgroup(engine, perRow, p.len);
  const k = engine.kernel({
    family: 'norm',
    source,
    ...normIncludes(engine),
    entry,
    dtype: x.dtype,
    wdtype: w.dtype,
    consts: { WG: wg, ACT: p.act, HAS_W: weight !== undefined, HAS_B: bias !== undefined },
  });
  rec.dispatch(k, {
    op: p.op,
    bindings: perRow ? { rx4: x, rstats4: stats, rw4: w, rb4: b, rout4: out } : { fx: x, fstats: stats, fw: w, fb: b, fout: out },
    uniforms: { rows: p.rows, len: p.len, adiv: p.adiv, amod: p.amod, eps: p.eps },
    workgroups: perRow ? grid1d(engine, p.rows, wg).workgroups : jobGrid(engine, p.rows),
  });
  rememberRowStats(rec, x, p, stats);
  return out;
}

function checkParam(op: string, x: Tensor, t: Tensor | undefined, what: string, shape: readonly number[]): void {
  if (!t) return;
  assertArg(
    t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]),
    `${op}: ${what} has shape ${shapeString(t.shape)} but must be ${shapeString(shape)} for input ${shapeString(x.shape)}`,
  );
  paramDtype(`${op}: ${what}`, x.dtype, t.dtype);
}

function checkEps(op: string, eps: number): void {
  assertArg(Number.isFinite(eps) && eps >= 0, `${op}: eps must be a finite number >= 0, got ${eps}`);
}

export interface GroupNormOptions {
  /** Added to the variance (default 1e-5, diffusers' GroupNorm default). */
  eps?: number;
  /** Activation fused after the affine (SD's resnet blocks: GroupNorm then SiLU). */
  act?: 'silu' | 'none';
  /** Force the statistics layout (tests and tuning): one thread per row or workgroups per row. */
  layout?: NormLayout;
  /** vec4s per workgroup when applying (tests and tuning; default by adapter class). */
  span?: number;
  /** false: statistics and apply as two dispatches even where one fused dispatch applies (tests). */
  fuse?: boolean;
}

/** PyTorch GroupNorm on x [N, C, ...spatial] with optional per-channel weight/bias [C]. */
export function groupNorm(rec: Recorder, x: Tensor, groups: number, weight?: Tensor, bias?: Tensor, opts: GroupNormOptions = {}): Tensor {
  const op = 'group_norm';
  assertArg(x.rank >= 2, `${op}: input ${shapeString(x.shape)} must be [N, C, ...]`);
  const [n, c] = [x.shape[0]!, x.shape[1]!];
  assertArg(
    Number.isInteger(groups) && groups >= 1 && c % groups === 0,
    `${op}: ${groups} groups do not divide the ${c} channels of input ${shapeString(x.shape)}`,
  );
  checkParam(op, x, weight, 'weight', [c]);
  checkParam(op, x, bias, 'bias', [c]);
  const eps = opts.eps ?? 1e-5;
  checkEps(op, eps);
  const spatial = shapeSize(x.shape.slice(2));
  return normalizeRows(rec, x, weight, bias, {
    op,
    layout: opts.layout ?? 'auto',
    rows: n * groups,
    len: (c / groups) * spatial,
    adiv: Math.max(1, spatial),
    amod: c,
    eps,
    act: activationCode(opts.act ?? 'none'),
    span: opts.span,
    fuse: opts.fuse,
  });
}

export interface LayerNormOptions {
  /** Added to the variance (default 1e-5, PyTorch's default). */
  eps?: number;
  /** Force the statistics layout (tests and tuning): one thread per row or workgroups per row. */
  layout?: NormLayout;
  /** vec4s per workgroup when applying (tests and tuning; default by adapter class). */
  span?: number;
  /** false: statistics and apply as two dispatches even where one fused dispatch applies (tests). */
  fuse?: boolean;
}

/** PyTorch F.layer_norm over the trailing dims `normalizedShape`, with element-wise weight/bias of that shape. */
export function layerNorm(rec: Recorder, x: Tensor, normalizedShape: number[], weight?: Tensor, bias?: Tensor, opts: LayerNormOptions = {}): Tensor {
  const op = 'layer_norm';
  const k = normalizedShape.length;
  assertArg(
    k >= 1 && k <= x.rank && normalizedShape.every((d, i) => d === x.shape[x.rank - k + i]),
    `${op}: normalized shape ${shapeString(normalizedShape)} is not the trailing dims of input ${shapeString(x.shape)}`,
  );
  checkParam(op, x, weight, 'weight', normalizedShape);
  checkParam(op, x, bias, 'bias', normalizedShape);
  const eps = opts.eps ?? 1e-5;
  checkEps(op, eps);
  const len = shapeSize(normalizedShape);
  return normalizeRows(rec, x, weight, bias, {
    op,
    layout: opts.layout ?? 'auto',
    rows: len === 0 ? 0 : x.size / len,
    len,
    adiv: 1,
    amod: Math.max(1, len),
    eps,
    act: 0,
    span: opts.span,
    fuse: opts.fuse,
  });
}
