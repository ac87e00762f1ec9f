// One Adam / AdamW step on one parameter tensor, in place (kernels/optim.wgsl): f32 parameters (the master
// weights), f32 moments and an f32 gradient. The step's scalars (bias corrections, 1 - beta) are computed
// here in f64 and rounded once, as torch.optim computes them in Python floats.

import source from '../../../kernels/optim.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

export interface AdamHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** AdamW's decoupled weight decay (p *= 1 - lr wd) instead of Adam's L2 term in the gradient. */
  decoupled: boolean;
}

export interface AdamStepOptions extends AdamHyper {
  /** The step number t >= 1 (bias corrections 1 - beta^t). */
  step: number;
  /** Multiplies the gradient first (e.g. 1 / accumulation steps). Default 1. */
  gradScale?: number;
  /** Clip by the global norm of a group of gradients: `norms` [k] holds each one's L2 norm (f32). */
  clip?: { norms: Tensor; maxNorm: number };
  op?: string;
}

/** Refuses hyperparameters torch.optim.Adam refuses (and a non-finite learning rate). */
export function checkAdamHyper(what: string, h: AdamHyper): void {
  assertArg(Number.isFinite(h.lr) && h.lr >= 0, `${what}: learning rate ${h.lr} must be finite and >= 0`);
  assertArg(Number.isFinite(h.eps) && h.eps >= 0, `${what}: eps ${h.eps} must be finite and >= 0`);
  assertArg(h.beta1 >= 0 && h.beta1 < 1, `${what}: beta1 ${h.beta1} must be in [0, 1)`);
  assertArg(h.beta2 >= 0 && h.beta2 < 1, `${what}: beta2 ${h.beta2} must be in [0, 1)`);
  assertArg(Number.isFinite(h.weightDecay) && h.weightDecay >= 0, `${what}: weight decay ${h.weightDecay} must be finite and >= 0`);
}

/** p, m, v updated in place from g for step `step`. */
export function adamStep(rec: Recorder, p: Tensor, g: Tensor, m: Tensor, v: Tensor, o: AdamStepOptions): void {
  const op = o.op ?? (o.decoupled ? 'adamw' : 'adam');
  checkAdamHyper(op, o);
  assertArg(Number.isInteger(o.step) && o.step >= 1, `${op}: step ${o.step} must be an integer >= 1`);
  const gradScale = o.gradScale ?? 1;
  assertArg(Number.isFinite(gradScale), `${op}: gradient scale ${gradScale} must be finite`);
  for (const [name, t] of [['parameter', p], ['gradient', g], ['first moment', m], ['second moment', v]] as const) {
    assertArg(t.dtype === 'f32', `${op}: the ${name} ${t.name} must be f32 (master weights and moments), it is ${t.dtype}`);
    assertArg(t.size === p.size && t.rank === p.rank && t.shape.every((d, i) => d === p.shape[i]), `${op}: the ${name} ${t.name} is ${shapeString(t.shape)}, the parameter ${p.name} ${shapeString(p.shape)}`);
  }
  if (o.clip) {
    const { norms, maxNorm } = o.clip;
    assertArg(norms.dtype === 'f32' && norms.rank === 1 && norms.size >= 1, `${op}: clipping norms ${norms.name} must be an f32 vector, it is ${norms.dtype} ${shapeString(norms.shape)}`);
    assertArg(Number.isFinite(maxNorm) && maxNorm > 0, `${op}: max gradient norm ${maxNorm} must be finite and > 0`);
  }
  if (p.size === 0) return;
  const engine = rec.engine;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'optim', source, entry: 'adam_step', dtype: 'f32', consts: { WG: wg } });
  const grid = grid1d(engine, p.size, wg);
  rec.dispatch(k, {
    op,
    bindings: { op_p: p, op_m: m, op_v: v, op_g: g, op_norms: o.clip?.norms ?? g },
    uniforms: {
      n: p.size,
      row: grid.row,
      nnorms: o.clip ? o.clip.norms.size : 0,
      decoupled: o.decoupled ? 1 : 0,
      beta1: o.beta1,
      beta2: o.beta2,
      c1: 1 - o.beta1,
      c2: 1 - o.beta2,
      decay: 1 - o.lr * o.weightDecay,
      eps: o.eps,
      wd: o.weightDecay,
      step_size: o.lr / (1 - o.beta1 ** o.step),
      bc2_sqrt: Math.sqrt(1 - o.beta2 ** o.step),
      gscale: gradScale,
      max_norm: o.clip?.maxNorm ?? 0,
    },
    workgroups: grid.workgroups,
  });
}
