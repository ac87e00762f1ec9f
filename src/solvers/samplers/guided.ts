// The guided step shared by SILO-CNN and Latent-DPS: both compare a measurement with an estimate
// computed from x0 alone,
//   eps, x0, prev = model + DDPM step at z_t;  estimate = M(x0);  r = ||target - estimate||_2
//   g = d r / d z_t = (x0 formula and model VJP) o M^T (d r / d estimate)
//   z_{t-1} = prev - eta * clamp(g, -c, c)
// and differ only in M (SILO: the latent operator H(x0, e_sigma); Latent-DPS: A(D(x0 / s))) and in the
// clamp (SILO clamps to [-1, 1]; DPS does not clamp).

import type { Scalar } from '../../engine/step-value.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { clamp, scaleAdd } from '../../engine/ops/elementwise.js';
import { denoise, disposeDenoised, x0Vjp, type DiffusionPrior } from './denoiser.js';
import { residualNorm } from './residual.js';

/** x0 -> measurement estimate, with its reverse pass. */
export interface LatentMeasurement {
  readonly name: string;
  /** The estimate and any intermediates worth returning (e.g. the decoded image). */
  forward(rec: Recorder, x0: Tensor): { estimate: Tensor; extras?: Record<string, Tensor> };
  /** d/dx0 of <g, estimate(x0)>. */
  vjp(rec: Recorder, x0: Tensor, g: Tensor): Tensor;
}

export interface GuidedStepOptions {
  /** Step size (SILO's --scale, the paper's eta; DPS's scale). */
  eta: number;
  /** Element-wise gradient clamp: SILO 1; Infinity (DPS) disables it. Default 1. */
  gradClamp?: number;
}

/** What one guided step produced; the caller owns every tensor. */
export interface GuidedStep {
  zPrev: Tensor;
  eps: Tensor;
  x0: Tensor;
  /** The unguided DDPM prev_sample. */
  prev: Tensor;
  /** The measurement estimate (w_hat, or A(D(x0 / s))). */
  estimate: Tensor;
  /** ||target - estimate||_2, shape [1]. */
  residualNorm: Tensor;
  /** The unclipped guidance gradient d residual / d z_t. */
  grad: Tensor;
  /** Intermediates the measurement returned (Latent-DPS: `decoded`). */
  extras: Record<string, Tensor>;
}

/** Validates the update's options; steps call it before recording anything, so a bad option costs no work. */
export function checkGuidedOptions(opts: GuidedStepOptions): void {
  const c = opts.gradClamp ?? 1;
  assertArg(c > 0, `guided step: gradClamp must be positive, got ${c}`);
  assertArg(Number.isFinite(opts.eta), `guided step: eta must be finite, got ${opts.eta}`);
}

/** z_{t-1} = prev - eta * clamp(grad, -c, c). */
export function guidedUpdate(rec: Recorder, prev: Tensor, grad: Tensor, opts: GuidedStepOptions): Tensor {
  checkGuidedOptions(opts);
  const c = opts.gradClamp ?? 1;
  return rec.engine.tidy(() => {
    const g = Number.isFinite(c) ? clamp(rec, grad, -c, c) : grad;
    return scaleAdd(rec, prev, 1, g, -opts.eta, { op: 'guided_update' });
  });
}

export function guidedStep(
  rec: Recorder,
  prior: DiffusionPrior,
  m: LatentMeasurement,
  target: Tensor,
  zt: Tensor,
  t: Scalar,
  noise: Tensor | undefined,
  opts: GuidedStepOptions,
): GuidedStep {
  checkGuidedOptions(opts);
  return rec.scope(`${m.name}_step`, () =>
    rec.engine.tidy(() => {
      const d = denoise(rec, prior, zt, t, noise);
      // SILO's cfg_fix: the operator reads x0 of the text branch alone.
      const branch = d.x0Text ? 'text' : 'guided';
      const x0m = d.x0Text ?? d.x0;
      const { estimate, extras } = rec.scope('measurement', () => m.forward(rec, x0m));
      const r = residualNorm(rec, target, estimate, `${m.name}_residual`);
      const gX0 = rec.scope('measurement_vjp', () => m.vjp(rec, x0m, r.grad));
      const grad = rec.scope('model_vjp', () => x0Vjp(rec, prior, d, gX0, branch));
      const zPrev = guidedUpdate(rec, d.prev, grad, opts);
      disposeDenoised(d, [d.eps, d.x0, d.prev]);
      return { zPrev, eps: d.eps, x0: d.x0, prev: d.prev, estimate, residualNorm: r.norm, grad, extras: extras ?? {} };
    }),
  );
}
