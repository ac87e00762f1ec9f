// Mean regression losses and their gradients in one pass (kernels/loss.wgsl): F.l1_loss and F.mse_loss
// with reduction 'mean', optionally against a target clamped to [lo, hi] first (SILO's trainer clamps
// its latent targets to [-4, 4]).

import source from '../../../kernels/loss.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';
import { reduceTensor } from './reduce.js';

export type LossKind = 'l1' | 'mse';

export interface LossResult {
  /** The mean loss, [1]. */
  loss: Tensor;
  /** d loss / d out, shaped like out. */
  grad: Tensor;
}

export function regressionLoss(rec: Recorder, out: Tensor, target: Tensor, opts: { kind?: LossKind; clamp?: [number, number] } = {}): LossResult {
  const kind = opts.kind ?? 'l1';
  const op = `${kind}_loss`;
  assertArg(kind === 'l1' || kind === 'mse', `loss: kind must be 'l1' or 'mse', got ${String(kind)}`);
  assertArg(out.dtype === 'f32' && target.dtype === 'f32', `${op}: output and target must be f32, got ${out.dtype} and ${target.dtype}`);
  assertArg(
    out.rank === target.rank && out.shape.every((d, i) => d === target.shape[i]),
    `${op}: output ${shapeString(out.shape)} and target ${shapeString(target.shape)} differ in shape`,
  );
  assertArg(out.size > 0, `${op}: empty output ${shapeString(out.shape)}`);
  const [lo, hi] = opts.clamp ?? [-Infinity, Infinity];
  assertArg(!(lo > hi) && !Number.isNaN(lo) && !Number.isNaN(hi), `${op}: clamp range [${lo}, ${hi}] is empty`);
  const engine = rec.engine;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'loss', source, entry: 'loss_terms', dtype: 'f32', consts: { WG: wg, MODE: kind === 'mse' ? 1 : 0 } });
  const terms = engine.empty(out.shape, 'f32', `${op}:terms`);
  const grad = engine.empty(out.shape, 'f32', `${op}:grad`);
  const g = grid1d(engine, out.size, wg);
  rec.dispatch(k, {
    op,
    bindings: { lo_out: out, lo_target: target, lo_terms: terms, lo_grad: grad },
    uniforms: { n: out.size, row: g.row, lo, hi, inv_n: 1 / out.size },
    workgroups: g.workgroups,
  });
  const loss = reduceTensor(rec, terms, 'sum', { scale: 1 / out.size, op });
  terms.dispose();
  return { loss, grad };
}
