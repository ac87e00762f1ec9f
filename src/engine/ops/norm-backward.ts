// Reverse-mode (vector-Jacobian product) ops for GroupNorm and LayerNorm, with the forward's optional
// fused SiLU: the statistics are recomputed from x (norm_stats) unless the recording has them, then one
// workgroup per row reduces (sum gy, sum gy * y) and forms its dx in the same dispatch (norm_bw_fused;
// on GPUs, rows longer than SPLIT_MIN_LEN take a second, elementwise dx pass for parallelism), and one
// thread per affine index sums dWeight / dBias. f32 storage only: gradients are accumulated in f32 and
// an f16 copy would lose too much.

import source from '../../../kernels/norm.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeSize, shapeString } from '../dtype.js';
import { add, activationCode } from './elementwise.js';
import { grid1d, workgroupSize } from './grid.js';
import { affineBindings, jobGrid, normIncludes, normRowStats, SPLIT_MIN_LEN, type NormLayout, type RowNorm } from './norm.js';

/** Gradients of a normalisation: dWeight / dBias are present exactly when weight / bias were given. */
export interface NormGrads {
  dx: Tensor;
  dWeight?: Tensor;
  dBias?: Tensor;
}

interface RowNormBw extends RowNorm {
  /** Shape of the affine parameters (and of their gradients). */
  paramShape: readonly number[];
  /** Compute dWeight / dBias (a full pass over x and gradOut); false when only dx is wanted. */
  paramGrads: boolean;
  /** Added to dx (a VJP's sum with a residual gradient). */
  accumulate?: Tensor;
  /** false: the row sums and dx as two dispatches even where one applies (tests). */
  fuse?: boolean;
}

/** Activations and gradients are f32; affine parameters (`param`) may be f16 (mixed precision). */
function checkTensor(op: string, what: string, t: Tensor | undefined, shape: readonly number[], param = false): void {
  if (!t) return;
  assertArg(t.dtype === 'f32' || (param && t.dtype === 'f16'), `${op}: backward ops take f32 tensors${param ? ' (f16 parameters)' : ''}, ${what} is ${t.dtype}`);
  assertArg(
    t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]),
    `${op}: ${what} has shape ${shapeString(t.shape)} but must be ${shapeString(shape)}`,
  );
}

function checkEps(op: string, eps: number): void {
  assertArg(Number.isFinite(eps) && eps >= 0, `${op}: eps must be a finite number >= 0, got ${eps}`);
}

function rowNormBackward(rec: Recorder, x: Tensor, gradOut: Tensor, weight: Tensor | undefined, bias: Tensor | undefined, p: RowNormBw): NormGrads {
  const engine = rec.engine;
  const dx = engine.empty(x.shape, 'f32', `${p.op}:dx`);
  const grads: NormGrads = { dx };
  const wantParams = p.paramGrads && (weight !== undefined || bias !== undefined);
  const dw = wantParams ? engine.empty(p.paramShape, 'f32', `${p.op}:dweight`) : undefined;
  const db = wantParams ? engine.empty(p.paramShape, 'f32', `${p.op}:dbias`) : undefined;
  if (x.size === 0) {
    dw?.dispose();
    db?.dispose();
    return grads;
  }
  const consts = { ACT: p.act, HAS_W: weight !== undefined, HAS_B: bias !== undefined };
  const { w, b } = affineBindings(p.op, x, weight, bias);
  const kernel = (entry: string, wg: number) =>
    engine.kernel({ family: 'norm', source, ...normIncludes(engine), entry, dtype: 'f32', wdtype: w.dtype, consts: { WG: wg, ...consts } });
  const stats = normRowStats(rec, x, p);
  const uniforms = { n: x.size, row: 0, rows: p.rows, len: p.len, adiv: p.adiv, amod: p.amod, outer: x.size / (p.amod * p.adiv) };

  const wgRows = workgroupSize(engine, p.len <= 1024 ? 64 : 256);
  const fused = p.fuse !== false && (engine.info.software || p.len <= SPLIT_MIN_LEN);
  if (fused) {
    const acc = p.accumulate;
    rec.dispatch(
      engine.kernel({ family: 'norm', source, ...normIncludes(engine), entry: 'norm_bw_fused', dtype: 'f32', wdtype: w.dtype, consts: { WG: wgRows, ...consts }, overrides: { HAS_RES: acc ? 1 : 0 } }),
      {
        op: p.op,
        // Without a residual its binding is x (read-only, never read: HAS_RES folds the access away).
        bindings: { bf_x: x, bf_g: gradOut, bf_stats: stats, bf_w: w, bf_b: b, bf_res: acc ?? x, bf_out: dx },
        uniforms,
        workgroups: jobGrid(engine, p.rows),
      },
    );
  } else {
    const sums = engine.empty([p.rows, 2], 'f32', `${p.op}:rowsums`);
    rec.dispatch(kernel('norm_bw_rows', wgRows), {
      op: p.op,
      bindings: { brx: x, brg: gradOut, brstats: stats, brw: w, brb: b, brsum: sums },
      uniforms,
      workgroups: jobGrid(engine, p.rows),
    });
    const wg = workgroupSize(engine);
    const g = grid1d(engine, x.size, wg);
    rec.dispatch(kernel('norm_bw_dx', wg), {
      op: p.op,
      bindings: { bdx_x: x, bdx_g: gradOut, bdx_stats: stats, bdx_w: w, bdx_b: b, bdx_sums: sums, bdx_out: dx },
      uniforms: { ...uniforms, row: g.row },
      workgroups: g.workgroups,
    });
    sums.dispose();
    if (p.accumulate) {
      grads.dx = add(rec, p.accumulate, dx);
      dx.dispose();
    }
  }
  if (dw && db) {
    rec.dispatch(kernel('norm_bw_param', 64), {
      op: p.op,
      bindings: { bp_x: x, bp_g: gradOut, bp_stats: stats, bp_w: w, bp_b: b, bp_dw: dw, bp_db: db },
      uniforms,
      workgroups: Math.ceil(p.amod / 64),
    });
    if (weight) grads.dWeight = dw;
    else dw.dispose();
    if (bias) grads.dBias = db;
    else db.dispose();
  }
  return grads;
}

export interface GroupNormBackwardOptions {
  /** As in the forward (default 1e-5). */
  eps?: number;
  /** The activation fused in the forward: the gradient flows through it first. */
  act?: 'silu' | 'none';
  /** Statistics layout (tests): see groupNorm. */
  layout?: NormLayout;
  /** Also compute dWeight / dBias (default true); a VJP for the input alone skips their pass. */
  paramGrads?: boolean;
  /** Added to dx in the same dispatch (a residual connection's gradient); the shape of x, f32. */
  accumulate?: Tensor;
  /** false: row sums and dx as two dispatches (tests). */
  fuse?: boolean;
}

/** VJP of groupNorm(x, groups, weight, bias, opts) for gradOut: dx [N, C, ...], dWeight / dBias [C]. */
export function groupNormBackward(
  rec: Recorder,
  x: Tensor,
  gradOut: Tensor,
  groups: number,
  weight?: Tensor,
  bias?: Tensor,
  opts: GroupNormBackwardOptions = {},
): NormGrads {
  const op = 'group_norm_backward';
  assertArg(x.rank >= 2, `${op}: input ${shapeString(x.shape)} must be [N, C, ...]`);
  const [n, c] = [x.shape[0]!, x.shape[1]!];
  assertArg(
    Number.isInteger(groups) && groups >= 1 && c % groups === 0,
    `${op}: ${groups} groups do not divide the ${c} channels of input ${shapeString(x.shape)}`,
  );
  checkTensor(op, 'x', x, x.shape);
  checkTensor(op, 'gradOut', gradOut, x.shape);
  checkTensor(op, 'weight', weight, [c], true);
  checkTensor(op, 'bias', bias, [c], true);
  checkTensor(op, 'accumulate', opts.accumulate, x.shape);
  const eps = opts.eps ?? 1e-5;
  checkEps(op, eps);
  const spatial = shapeSize(x.shape.slice(2));
  return rowNormBackward(rec, x, gradOut, weight, bias, {
    op,
    layout: opts.layout ?? 'auto',
    rows: n * groups,
    len: (c / groups) * spatial,
    adiv: Math.max(1, spatial),
    amod: c,
    eps,
    act: activationCode(opts.act ?? 'none'),
    paramShape: [c],
    paramGrads: opts.paramGrads ?? true,
    accumulate: opts.accumulate,
    fuse: opts.fuse,
  });
}

/** VJP of layerNorm(x, normalizedShape, weight, bias) for gradOut: dx, and dWeight / dBias of normalizedShape. */
export function layerNormBackward(
  rec: Recorder,
  x: Tensor,
  gradOut: Tensor,
  normalizedShape: number[],
  weight?: Tensor,
  bias?: Tensor,
  opts: Omit<GroupNormBackwardOptions, 'act'> = {},
): NormGrads {
  const op = 'layer_norm_backward';
  const k = normalizedShape.length;
  assertArg(
    k >= 1 && k <= x.rank && normalizedShape.every((d, i) => d === x.shape[x.rank - k + i]),
    `${op}: normalized shape ${shapeString(normalizedShape)} is not the trailing dims of input ${shapeString(x.shape)}`,
  );
  checkTensor(op, 'x', x, x.shape);
  checkTensor(op, 'gradOut', gradOut, x.shape);
  checkTensor(op, 'weight', weight, normalizedShape, true);
  checkTensor(op, 'bias', bias, normalizedShape, true);
  checkTensor(op, 'accumulate', opts.accumulate, x.shape);
  const eps = opts.eps ?? 1e-5;
  checkEps(op, eps);
  const len = shapeSize(normalizedShape);
  return rowNormBackward(rec, x, gradOut, weight, bias, {
    op,
    layout: opts.layout ?? 'auto',
    rows: len === 0 ? 0 : x.size / len,
    len,
    adiv: 1,
    amod: Math.max(1, len),
    eps,
    act: 0,
    paramShape: normalizedShape,
    paramGrads: opts.paramGrads ?? true,
    accumulate: opts.accumulate,
    fuse: opts.fuse,
  });
}
