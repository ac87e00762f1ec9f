// SILO's guidance step (the loop body of SILO's StableDiffusionPipeline.__call__ with do_dps):
//   CNN operator:     w_hat = H(x0, e_sigma), differentiated through H, the x0 formula and the UNet
//   preserve CNN:     the same with H(x0, sigma) conditioned on the raw measurement sigma
//                     (`operator(x0_pred, torch.tensor([sigma] * B))`), not on a UNet embedding
//   readout operator: w_hat = R(UNet readout features of the same call, e_sigma), differentiated
//                     through R and the UNet up to those features
// then g = d ||w - w_hat||_2 / d z_t and z_{t-1} = prev - eta * clamp(g, -1, 1). Everything is recorded
// into the caller's program: no read-back and no autoencoder kernel.

import type { Scalar } from '../../engine/step-value.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import type { DegradationModel } from '../../models/silo/cnn.js';
import { degradationModelVjp } from '../../models/silo/cnn-vjp.js';
import type { AggregationNetwork } from '../../models/silo/readout.js';
import { aggregationVjp } from '../../models/silo/readout-vjp.js';
import type { PreserveDegradationNetwork } from '../../models/silo/preserve.js';
import { preserveNetworkVjp } from '../../models/silo/preserve-vjp.js';
import { denoise, disposeDenoised, readoutVjp, type DiffusionPrior } from './denoiser.js';
import { checkGuidedOptions, guidedStep, guidedUpdate, type GuidedStep, type GuidedStepOptions, type LatentMeasurement } from './guided.js';
import { residualNorm } from './residual.js';

export interface SiloCnnOperator {
  kind: 'cnn';
  model: DegradationModel;
  /** e_sigma [1, 1280] (the UNet's time embedding at sigmaTimestep(sigma)); omit for unconditioned operators. */
  sigmaEmb?: Tensor;
}

export interface SiloReadoutOperator {
  kind: 'readout';
  model: AggregationNetwork;
  sigmaEmb?: Tensor;
  /** The inpainting mask at latent resolution [1, 1, 64, 64] for cond_inpaint networks. */
  mask?: Tensor;
}

export interface SiloPreserveOperator {
  kind: 'preserve';
  model: PreserveDegradationNetwork;
  /** model.embedNoise([sigma] * B) for the batch of x0 the step evaluates. */
  noiseEmb: Tensor;
}

export type SiloOperator = SiloCnnOperator | SiloReadoutOperator | SiloPreserveOperator;

/** The UNet-derived sigma embedding an operator takes (the preserve CNN embeds sigma itself). */
export function operatorSigmaEmb(op: SiloOperator | undefined): Tensor | undefined {
  return op && op.kind !== 'preserve' ? op.sigmaEmb : undefined;
}

/** SILO's CNN operator as a latent measurement. */
export function cnnMeasurement(op: SiloCnnOperator): LatentMeasurement {
  return {
    name: 'silo_cnn',
    forward: (rec, x0) => ({ estimate: op.model.forward(rec, x0, op.sigmaEmb) }),
    vjp: (rec, x0, g) => degradationModelVjp(rec, op.model, x0, op.sigmaEmb, g),
  };
}

/** SILO's preserve CNN operator as a latent measurement. */
export function preserveMeasurement(op: SiloPreserveOperator): LatentMeasurement {
  return {
    name: 'silo_preserve',
    forward: (rec, x0) => ({ estimate: op.model.forward(rec, x0, op.noiseEmb) }),
    vjp: (rec, x0, g) => preserveNetworkVjp(rec, op.model, x0, op.noiseEmb, g),
  };
}

export function siloStep(
  rec: Recorder,
  prior: DiffusionPrior,
  operator: SiloOperator,
  w: Tensor,
  zt: Tensor,
  t: Scalar,
  noise: Tensor | undefined,
  opts: GuidedStepOptions,
): GuidedStep {
  if (operator.kind === 'cnn') return guidedStep(rec, prior, cnnMeasurement(operator), w, zt, t, noise, opts);
  if (operator.kind === 'preserve') return guidedStep(rec, prior, preserveMeasurement(operator), w, zt, t, noise, opts);
  checkGuidedOptions(opts);
  return rec.scope('silo_rg_step', () => rec.engine.tidy(() => readoutStep(rec, prior, operator, w, zt, t, noise, opts)));
}

function readoutStep(rec: Recorder, prior: DiffusionPrior, op: SiloReadoutOperator, w: Tensor, zt: Tensor, t: Scalar, noise: Tensor | undefined, opts: GuidedStepOptions): GuidedStep {
  const d = denoise(rec, prior, zt, t, noise, { readout: true });
  const features = d.readout!;
  const estimate = rec.scope('measurement', () => op.model.forward(rec, features, op.sigmaEmb, op.mask));
  const r = residualNorm(rec, w, estimate, 'silo_rg_residual');
  const vjp = rec.scope('measurement_vjp', () => aggregationVjp(rec, op.model, features, op.sigmaEmb, r.grad, op.mask));
  vjp.output.dispose();
  const grad = rec.scope('model_vjp', () => readoutVjp(rec, prior, d, vjp.gradFeatures));
  const zPrev = guidedUpdate(rec, d.prev, grad, opts);
  disposeDenoised(d, [d.eps, d.x0, d.prev]);
  return { zPrev, eps: d.eps, x0: d.x0, prev: d.prev, estimate, residualNorm: r.norm, grad, extras: {} };
}
