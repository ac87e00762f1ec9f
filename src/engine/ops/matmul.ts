// Matrix multiply with broadcast batch dims, transposes, a fused bias + activation, and nn.Linear.
// The kernel variant is chosen from the layout: vec4 loads along N (row-major B, N % 4 == 0), otherwise
// a scalar register-blocked fallback that takes any strides. A transposed B is first copied row-major.

import source from '../../../kernels/matmul.wgsl';
import activations from '../../../kernels/activations.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import type { Engine } from '../device.js';
import { assertArg } from '../errors.js';
import { paramDtype, shapeString } from '../dtype.js';
import { activationCode, broadcastShapes, type Activation } from './elementwise.js';
import { workgroupTilesFit } from './grid.js';

export interface MatmulOptions {
  /** A is stored [..., K, M]. */
  transA?: boolean;
  /**
   * B is stored [..., N, K] (the nn.Linear weight layout). It is first copied row-major (one extra
   * dispatch, N * K temporary elements): reading it in place measured 2x slower on lavapipe. Callers
   * that reuse a constant weight can transpose it once and pass it without transB.
   */
  transB?: boolean;
  /** [N], added after scaling and before the activation. */
  bias?: Tensor;
  act?: Activation;
  /** Leaky-ReLU slope of the fused activation (as in the elementwise ops). */
  alpha?: number;
  /** Multiplies the product before the bias: act(scale * A B + bias). Default 1. */
  scale?: number;
  /**
   * Added to the result after the activation, in the kernel's epilogue: act(scale * a b + bias) + residual
   * (a residual connection without its own dispatch). Shaped and typed like the output.
   */
  residual?: Tensor;
  /** Force a vec4 variant where it applies (tests and the tuner); default: the tuning table, else by adapter class. */
  variant?: MatmulVariant;
  op?: string;
}

/** The variants for a row-major B with N % 4 == 0: register-blocked (CPU adapters) or workgroup-tiled (GPUs). */
export type MatmulVariant = 'matmul_nn4' | 'matmul_tiled';
export const MATMUL_VARIANTS: readonly MatmulVariant[] = ['matmul_nn4', 'matmul_tiled'];

/**
 * The tuning table's key of a product: batches x rows x K x N (rows after folding batches into M), with a
 * trailing T when B is transposed (nn.Linear's weight: matmul_nn4 then pays for a transposed copy).
 */
export function matmulKey(batches: number, rows: number, k: number, n: number, transB = false): string {
  return `${batches}x${rows}x${k}x${n}${transB ? 'T' : ''}`;
}

/**
 * Output rows per workgroup (ROWS in the WGSL): 16 for matmul_nn4, whose per-thread B loads then feed
 * twice the FMAs (profiled on lavapipe, 16 vs 8 rows: 1024^3 167 vs 181 ms, 4096x320 @ 320x320 63 vs
 * 71 ms, 1024x640 @ 640x2560 214 vs 278 ms; SwiftShader 7-17 % faster too), 8 for matmul_any.
 */
const rowsFor = (variant: string): number => (variant === 'matmul_tiled' ? 64 : variant === 'matmul_nn4' ? 16 : 8);
/** Columns per thread (all variants). */
const COLS = 8;
const MAX_BATCH_RANK = 4;

function product(dims: readonly number[]): number {
  return dims.reduce((p, d) => p * d, 1);
}

/** Element strides of `dims` (row-major) broadcast against `out`: 0 where the dim is 1. */
function batchStrides(dims: readonly number[], out: readonly number[], matrixSize: number): number[] {
  const strides = new Array<number>(out.length).fill(0);
  let s = matrixSize;
  for (let i = dims.length - 1; i >= 0; i--) {
    const o = out.length - dims.length + i;
    strides[o] = dims[i] === 1 ? 0 : s;
    s *= dims[i]!;
  }
  return strides;
}

const pad4 = (v: number[], fill: number) => [...new Array<number>(MAX_BATCH_RANK - v.length).fill(fill), ...v];

/**
 * Threads per workgroup (one row of threads along N): 64, or 8 when that pads N less (N = 320 takes
 * 5 workgroups of 8 threads x 8 columns exactly, where 64 threads would idle 37 %). Only two sizes, to
 * keep the number of pipelines (and the driver's compile time) down.
 */
function threadsFor(n: number, maxInvocations: number): number {
  const pad = (wg: number) => Math.ceil(n / (wg * COLS)) * wg * COLS - n;
  return maxInvocations >= 64 && pad(64) <= pad(8) ? 64 : 8;
}

/** The vec4 variant without a table entry: matmul_nn4 on CPU adapters, matmul_tiled elsewhere. */
export function defaultMatmulVariant(engine: Engine): MatmulVariant {
  return engine.info.software || !workgroupTilesFit(engine) ? 'matmul_nn4' : 'matmul_tiled';
}

/** The vec4 variant of a product: `forced` (tests, the tuner), else the tuning table's measured choice, else the default. */
function vec4Variant(engine: Engine, key: string, forced?: MatmulVariant): MatmulVariant {
  assertArg(forced === undefined || MATMUL_VARIANTS.includes(forced), `matmul: unknown variant ${String(forced)}`);
  const tuned = engine.tuning.get('matmul', key);
  const want = forced ?? (tuned && (MATMUL_VARIANTS as readonly string[]).includes(tuned) ? (tuned as MatmulVariant) : defaultMatmulVariant(engine));
  return want === 'matmul_tiled' && !workgroupTilesFit(engine) ? 'matmul_nn4' : want;
}

/**
 * [..., R, C] -> [..., C, R] into a new tensor (puts a transposed B in row-major order; models use it to
 * move between NCHW [N, C, H*W] and token layout [N, H*W, C]).
 */
export function transposeLast2(rec: Recorder, x: Tensor, op = 'transpose', opts: { exact?: boolean } = {}): Tensor {
  assertArg(x.rank >= 2, `${op}: input ${shapeString(x.shape)} needs rank >= 2`);
  const engine = rec.engine;
  const [R, C] = x.shape.slice(-2) as [number, number];
  const batches = x.size / (R * C);
  // exact: a buffer of exactly its size (a weight that lives as long as its model), not a pooled size class.
  const out = engine.empty([...x.shape.slice(0, -2), C, R], x.dtype, op, { exact: opts.exact });
  if (out.size === 0) return out;
  // 4x4 blocks when both dims allow vec4 rows (SD's weights and token layouts all do).
  const blocked = R % 4 === 0 && C % 4 === 0;
  const kernel = engine.kernel({
    family: 'matmul',
    source,
    includes: [activations],
    entry: blocked ? 'transpose_last2_4' : 'transpose_last2',
    dtype: x.dtype,
    consts: { WG: 8, ROWS: 8, ACT: 0, HAS_BIAS: false, B_VEC4: true, HAS_RES: false },
  });
  const [rowsX, cols] = blocked ? [R / 4, C / 4] : [R, C];
  const groupsY = Math.ceil((cols * batches) / 8);
  const ny = Math.min(groupsY, engine.limits.maxComputeWorkgroupsPerDimension);
  rec.dispatch(kernel, {
    op,
    bindings: blocked ? { tq_in: x, tq_out: out } : { tp_in: x, tp_out: out },
    uniforms: { rows: R, cols: C, row_len: ny * 8, total: cols * batches },
    workgroups: [Math.ceil(rowsX / 8), ny, Math.ceil(groupsY / ny)],
  });
  return out;
}

/**
 * a [..., M, K] (or [..., K, M] with transA) times b [..., K, N] (or [..., N, K] with transB), batch dims
 * broadcast numpy-style (a rank-2 b is shared by every batch of a). Output [...batch, M, N] in the
 * operands' dtype (f32 where one is f16 parameters and the other f32): act(scale * a b + bias). One dispatch, plus one that transposes b when transB.
 */
export function matmul(rec: Recorder, a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const engine = rec.engine;
  const name = opts.op ?? 'matmul';
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  const what = `${name}: a ${shapeString(a.shape)}${transA ? 'ᵀ' : ''} x b ${shapeString(b.shape)}${transB ? 'ᵀ' : ''}`;
  assertArg(a.rank >= 2 && b.rank >= 2, `${what}: both operands need rank >= 2`);
  // Either operand may be f16 parameters next to f32 activations (mixed precision): the output is then
  // f32. The bias is bound with b's dtype.
  const dtype = a.dtype === b.dtype ? a.dtype : 'f32';
  const wdtype = paramDtype(`${what}: b`, dtype, b.dtype);
  const adtype = paramDtype(`${what}: a`, dtype, a.dtype);
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const M = transA ? ac : ar;
  const K = transA ? ar : ac;
  const Kb = transB ? bc : br;
  const N = transB ? br : bc;
  assertArg(K === Kb, `${what}: inner dimensions differ (K = ${K} for a, ${Kb} for b)`);
  assertArg(M >= 1 && N >= 1 && K >= 1, `${what}: M, N and K must be >= 1`);
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const batch = broadcastShapes(batchA, batchB, `${what}: batch dims`);
  assertArg(batch.length <= MAX_BATCH_RANK, `${what}: at most ${MAX_BATCH_RANK} batch dims are supported`);
  assertArg(batch.every((d) => d >= 1), `${what}: batch dims must be >= 1`);
  if (opts.bias) {
    assertArg(opts.bias.dtype === wdtype, `${what}: bias dtype ${opts.bias.dtype} differs from b's ${wdtype}`);
    assertArg(opts.bias.rank === 1 && opts.bias.size === N, `${what}: bias must be [${N}], got ${shapeString(opts.bias.shape)}`);
  }

  // A b without batch dims, applied to a row-major a: fold a's batches into M (one big matmul).
  const fold = !transA && batchB.every((d) => d === 1) && batch.length > 0;
  const rows = fold ? M * product(batchA) : M;
  const gridBatch = fold ? [] : batch;
  const batches = product(gridBatch);

  // N % 4 == 0 takes a vec4 variant. matmul_tiled reads a transposed B in place (through workgroup
  // memory); matmul_nn4 and matmul_any want it row-major, so it goes through a copy (see transpose_last2
  // in the WGSL), except when N or K is 1, where both layouts are the same memory.
  const vec4Ok = N % 4 === 0;
  const picked = vec4Ok ? vec4Variant(engine, matmulKey(batches, rows, K, N, transB && N > 1 && K > 1), opts.variant) : undefined;
  const inPlace = picked === 'matmul_tiled' || !transB || N === 1 || K === 1;
  const bt = inPlace ? null : transposeLast2(rec, b, `${name}/transpose_b`);
  const bRowMajor = !transB || bt !== null || N === 1 || K === 1;
  const variant = picked ?? 'matmul_any';
  const wg = variant === 'matmul_tiled' ? 16 : threadsFor(N, engine.limits.maxComputeInvocationsPerWorkgroup);
  const kernel = engine.kernel({
    family: 'matmul',
    source,
    includes: [activations],
    entry: variant,
    dtype,
    wdtype,
    adtype,
    consts: { WG: wg, ROWS: rowsFor(variant), ACT: activationCode(opts.act), HAS_BIAS: !!opts.bias, B_VEC4: bRowMajor, HAS_RES: !!opts.residual },
  });

  const outShape = [...batch, M, N];
  if (opts.residual) {
    const r = opts.residual;
    assertArg(r.dtype === dtype && r.shape.length === outShape.length && r.shape.every((d, i) => d === outShape[i]), `${what}: residual ${r.dtype} ${shapeString(r.shape)} must be the output's ${dtype} ${shapeString(outShape)}`);
  }
  const out = engine.empty(outShape, dtype, name);
  const rowGroups = Math.ceil(rows / rowsFor(variant));
  const tiles = rowGroups * batches;
  const ny = Math.min(tiles, engine.limits.maxComputeWorkgroupsPerDimension);
  const vec4 = variant !== 'matmul_any';
  const bMat = bt ?? b;
  // Without a residual its (dead) binding still needs a read-only buffer of at least one vec4 of the
  // output's type: B or A (an f16 B of 4 values is only 8 bytes), else a scratch one.
  const deadRes = opts.residual ? undefined : bMat.buffer.size >= 16 ? bMat : a.buffer.size >= 16 ? a : engine.empty([4], 'f32', 'no_residual');
  rec.dispatch(kernel, {
    op: name,
    bindings: {
      mm_a: a,
      // matmul_tiled names both B bindings (B_VEC4 picks one at compile time; the other is dead).
      ...(variant === 'matmul_tiled' ? { mm_b4: bMat, mm_b: bMat } : { [vec4 ? 'mm_b4' : 'mm_b']: bMat }),
      // Without a bias the (dead) bias binding still needs a buffer: B is large enough and read-only.
      [vec4 ? 'mm_bias4' : 'mm_bias']: opts.bias ?? bMat,
      [vec4 ? 'mm_r4' : 'mm_r']: opts.residual ?? deadRes!,
      [vec4 ? 'mm_c4' : 'mm_c']: out,
    },
    uniforms: {
      M: rows,
      N,
      K,
      row_groups: rowGroups,
      sam: transA ? 1 : K,
      sak: transA ? M : 1,
      sbk: bRowMajor ? N : 1,
      sbn: bRowMajor ? 1 : K,
      ny,
      tiles,
      scale: opts.scale ?? 1,
      slope: opts.alpha ?? 0.01,
      bdims: pad4(gridBatch, 1),
      bsa: pad4(fold ? [] : batchStrides(batchA, gridBatch, M * K), 0),
      bsb: pad4(fold ? [] : batchStrides(batchB, gridBatch, K * N), 0),
    },
    workgroups: [Math.ceil(N / (variant === 'matmul_tiled' ? 64 : wg * COLS)), ny, Math.ceil(tiles / ny)],
  });
  // Later reuse of the copy's buffer is ordered after this program's read.
  bt?.dispose();
  if (deadRes && deadRes !== a && deadRes !== bMat) deadRes.dispose();
  return out;
}

/**
 * PyTorch nn.Linear: x [..., in] times weight [out, in] transposed, plus bias [out] -> [..., out].
 * `transposed`: the weight is held as [in, out] (WeightLoaderOptions.linearLayout), read as it is.
 */
export function linear(rec: Recorder, x: Tensor, weight: Tensor, bias?: Tensor, opts: { act?: Activation; residual?: Tensor; op?: string; transposed?: boolean } = {}): Tensor {
  const name = opts.op ?? 'linear';
  const tr = opts.transposed ?? false;
  assertArg(x.rank >= 1, `${name}: x must have rank >= 1`);
  assertArg(weight.rank === 2, `${name}: weight must be ${tr ? '[in, out]' : '[out, in]'}, got ${shapeString(weight.shape)}`);
  const inF = x.shape[x.rank - 1]!;
  const [wIn, wOut] = tr ? [weight.shape[0]!, weight.shape[1]!] : [weight.shape[1]!, weight.shape[0]!];
  paramDtype(`${name}: weight`, x.dtype, weight.dtype);
  assertArg(
    wIn === inF,
    `${name}: x ${shapeString(x.shape)} has ${inF} input features but weight ${shapeString(weight.shape)}${tr ? ' (held as [in, out])' : ''} expects ${wIn}`,
  );
  const lead = x.shape.slice(0, -1);
  const x2 = x.rank === 1 ? x.reshape([1, inF]) : x;
  const r2 = opts.residual && x.rank === 1 ? opts.residual.reshape([1, wOut]) : opts.residual;
  const y = matmul(rec, x2, weight, { transB: !tr, bias, act: opts.act, residual: r2, op: name });
  if (r2 && r2 !== opts.residual) r2.dispose();
  if (x2 !== x) x2.dispose();
  if (x.rank >= 2) return y;
  const y1 = y.reshape([...lead, wOut]);
  y.dispose();
  return y1;
}

/** The baseline kernel (one thread per output, no blocking) for benchmarks: a [M, K] x b [K, N], f32. */
export function matmulNaive(rec: Recorder, a: Tensor, b: Tensor): Tensor {
  const engine = rec.engine;
  const what = `matmulNaive: a ${shapeString(a.shape)} x b ${shapeString(b.shape)}`;
  assertArg(a.rank === 2 && b.rank === 2, `${what}: both operands must be rank 2`);
  assertArg(a.dtype === 'f32' && b.dtype === 'f32', `${what}: f32 only`);
  const [M, K] = a.shape as [number, number];
  const [Kb, N] = b.shape as [number, number];
  assertArg(K === Kb, `${what}: inner dimensions differ (K = ${K} for a, ${Kb} for b)`);
  const kernel = engine.kernel({
    family: 'matmul',
    source,
    includes: [activations],
    entry: 'matmul_naive',
    dtype: 'f32',
    consts: { WG: 8, ROWS: 8, ACT: 0, HAS_BIAS: false, B_VEC4: true, HAS_RES: false },
  });
  const out = engine.empty([M, N], 'f32', 'matmul_naive');
  const zero4 = [0, 0, 0, 0];
  rec.dispatch(kernel, {
    op: 'matmul_naive',
    bindings: { mm_a: a, mm_b: b, mm_c: out },
    uniforms: {
      M, N, K, row_groups: 0, sam: K, sak: 1, sbk: N, sbn: 1, ny: 0, tiles: 0, scale: 1, slope: 0,
      bdims: [1, 1, 1, 1], bsa: zero4, bsb: zero4,
    },
    workgroups: [Math.ceil(N / 8), Math.ceil(M / 8)],
  });
  return out;
}
