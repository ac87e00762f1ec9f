// The pixel-space baselines SILO is compared with. Both put the autoencoder inside every step, which is
// the cost SILO removes.
//   Latent-DPS (DPS's PosteriorSampling on a latent model): y_hat = A(D(x0 / s)), r = ||y - y_hat||_2,
//     z_{t-1} = prev - scale * d r / d z_t (no clipping; the norm, not its square, is DPS's normalisation).
//   PSLD (Rout et al. 2023): adds the "gluing" term ||x0 - s E(A^T y + (I - A^T A) D(x0 / s))||_2 with
//     weight gamma to omega * r, and steps by the plain gradient of the sum.
// s is the VAE's scaling_factor (0.18215 for SD-1.5). PSLD's encoder term uses the posterior mean
// (deterministic; the reference samples it). Both decoder VJPs of PSLD share one decoder backward.

import type { Scalar } from '../../engine/step-value.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { add, scale, scaleAdd, sub } from '../../engine/ops/elementwise.js';
import type { AutoencoderKL } from '../../models/vae/autoencoder.js';
import { decodeVjp, encodeMeanVjp } from '../../models/vae/vjp.js';
import type { Degradation } from '../degradations/types.js';
import { denoise, disposeDenoised, x0Vjp, type DiffusionPrior } from './denoiser.js';
import { residualNorm } from './residual.js';
import { guidedStep, type GuidedStep, type LatentMeasurement } from './guided.js';

export interface LatentDpsOptions {
  /** Step size on d r / d z_t (DPS's scale; 1.0 in the golden dps_step). */
  scale: number;
}

export interface PsldOptions {
  /** Weight of the measurement residual ||y - A(D(x0))|| (PSLD's omega). */
  omega: number;
  /** Weight of the gluing residual (PSLD's gamma). */
  gamma: number;
}

function checkMeasurement(A: Degradation, y: Tensor): void {
  assertArg(y.rank === 4 && y.shape[0] === 1, `${A.name}: the measurement y must be [1, C, H, W]`);
}

/** y_hat = A(D(x0 / s)) with the decoded image. */
function decodeAndDegrade(rec: Recorder, vae: AutoencoderKL, A: Degradation, x0: Tensor): { u: Tensor; decoded: Tensor; yHat: Tensor } {
  const u = scale(rec, x0, 1 / vae.scalingFactor);
  const decoded = vae.decode(rec, u, { tiling: 'off' });
  const yHat = rec.scope('degradation', () => A.apply(rec, decoded));
  return { u, decoded, yHat };
}

/** Latent-DPS's measurement A(D(x0 / s)) and its reverse pass (1/s) J_D^T A^T. */
export function pixelMeasurement(vae: AutoencoderKL, A: Degradation): LatentMeasurement {
  return {
    name: 'latent_dps',
    forward: (rec, x0) => {
      const { u, decoded, yHat } = decodeAndDegrade(rec, vae, A, x0);
      u.dispose();
      return { estimate: yHat, extras: { decoded } };
    },
    vjp: (rec, x0, g) =>
      rec.engine.tidy(() => {
        const u = scale(rec, x0, 1 / vae.scalingFactor);
        const gDecoded = rec.scope('degradation_adjoint', () => A.adjoint(rec, g, [u.shape[0]!, vae.config.outChannels, u.shape[2]! * vae.downFactor, u.shape[3]! * vae.downFactor]));
        return scale(rec, decodeVjp(rec, vae, u, gDecoded), 1 / vae.scalingFactor);
      }),
  };
}

export function latentDpsStep(
  rec: Recorder,
  prior: DiffusionPrior,
  vae: AutoencoderKL,
  A: Degradation,
  y: Tensor,
  zt: Tensor,
  t: Scalar,
  noise: Tensor | undefined,
  opts: LatentDpsOptions,
): GuidedStep {
  checkMeasurement(A, y);
  return guidedStep(rec, prior, pixelMeasurement(vae, A), y, zt, t, noise, { eta: opts.scale, gradClamp: Infinity });
}

export interface PsldStep extends GuidedStep {
  /** The gluing residual ||x0 - s E(glued)||_2, shape [1]. */
  glueNorm: Tensor;
}

export function psldStep(
  rec: Recorder,
  prior: DiffusionPrior,
  vae: AutoencoderKL,
  A: Degradation,
  y: Tensor,
  zt: Tensor,
  t: Scalar,
  noise: Tensor | undefined,
  opts: PsldOptions,
): PsldStep {
  checkMeasurement(A, y);
  const s = vae.scalingFactor;
  return rec.scope('psld_step', () =>
    rec.engine.tidy(() => {
      const d = denoise(rec, prior, zt, t, noise);
      const { u, decoded, yHat } = decodeAndDegrade(rec, vae, A, d.x0);
      const r = residualNorm(rec, y, yHat, 'psld_residual');
      // glued = A^T y + (I - A^T A) D(x0 / s): the measured content, the decoder's estimate elsewhere.
      const shape = decoded.shape;
      const project = (v: Tensor) => sub(rec, v, A.adjoint(rec, A.apply(rec, v), shape), { op: 'orthogonal_projection' });
      const glued = rec.scope('glue', () => add(rec, A.adjoint(rec, y, shape), project(decoded)));
      const post = vae.encode(rec, glued, { tiling: 'off' });
      const encoded = scale(rec, post.mean, s);
      const g = residualNorm(rec, encoded, d.x0, 'psld_glue');
      // dL/dx0 = gamma dg/dx0 + (1/s) J_D^T [omega A^T dr/dy_hat + (I - A^T A) J_E^T (-gamma s dg/dx0)]
      const gEncoded = scale(rec, g.grad, -opts.gamma * s);
      const gGlued = encodeMeanVjp(rec, vae, glued, gEncoded);
      const gDecoded = add(rec, scale(rec, A.adjoint(rec, r.grad, shape), opts.omega), project(gGlued));
      const gX0 = scaleAdd(rec, g.grad, opts.gamma, decodeVjp(rec, vae, u, gDecoded), 1 / s, { op: 'psld_grad_x0' });
      const grad = rec.scope('unet_vjp', () => x0Vjp(rec, prior, d, gX0));
      const zPrev = scaleAdd(rec, d.prev, 1, grad, -1, { op: 'psld_update' });
      disposeDenoised(d, [d.eps, d.x0, d.prev]);
      return { zPrev, eps: d.eps, x0: d.x0, prev: d.prev, estimate: yHat, residualNorm: r.norm, glueNorm: g.norm, grad, extras: { decoded } };
    }),
  );
}
