// One interface for every restoration method. The loop (loop.ts) asks a sampler what it needs (an
// operator, the latent measurement E(y)) and records one guided step per timestep through it; the
// registry (registry.ts) lists the samplers by name. A new method is one file implementing Sampler
// plus one registry line.

import type { Scalar } from '../engine/step-value.js';
import type { Recorder } from '../engine/recorder.js';
import type { Tensor } from '../engine/tensor.js';
import type { AutoencoderKL } from '../models/vae/autoencoder.js';
import type { DegradationModel } from '../models/silo/cnn.js';
import type { PreserveDegradationNetwork } from '../models/silo/preserve.js';
import type { AggregationNetwork } from '../models/silo/readout.js';
import type { Degradation } from '../solvers/degradations/types.js';
import type { DiffusionPrior } from '../solvers/samplers/denoiser.js';
import type { GuidedStep } from '../solvers/samplers/guided.js';
import type { SiloOperator } from '../solvers/samplers/silo.js';

/** The operators a method may need from RestoreModels ('cnn': models.cnn or models.preserve). */
export type OperatorKind = 'cnn' | 'readout';

/** What a step records from: the prior, the measurement in both spaces, and the method's settings. */
export interface StepInputs {
  prior: DiffusionPrior;
  vae: AutoencoderKL;
  A: Degradation;
  /** The measurement y, [1, 3, h, w] in [-1, 1]. */
  y: Tensor;
  /** w = E(y) * s (clamped unless clampW is false), for latent-space samplers. */
  w?: Tensor;
  /** The latent operator (latent-space samplers). */
  operator?: SiloOperator;
  /** The step size (undefined for samplers without one). */
  eta?: number;
  gradClamp?: number;
  psldOmega?: number;
  psldGamma?: number;
}

/** The operator models a sampler may use (a subset of RestoreModels). */
export interface OperatorModels {
  cnn?: DegradationModel;
  /** SILO's preserve CNN (LatentDegradationNetwork), the other 'cnn' kind: at most one of cnn / preserve. */
  preserve?: PreserveDegradationNetwork;
  readout?: AggregationNetwork;
  readoutMask?: Tensor;
}

export interface Sampler {
  /** The name users pass (--method). */
  readonly method: string;
  /** The name in messages and reports (e.g. "Latent-DPS"). */
  readonly label: string;
  /** One line for help texts. */
  readonly summary: string;
  /**
   * 'latent': the residual lives in latent space (E(y) once before the loop, no autoencoder inside it);
   * 'pixel': the residual lives in pixel space (the decoder, and for some the encoder, in every step).
   */
  readonly space: 'latent' | 'pixel';
  /** The operator the models must hold; undefined: none. */
  readonly operator?: OperatorKind;
  /** Whether the method takes a step size eta (PSLD steps with its own omega and gamma). */
  readonly usesEta: boolean;
  /**
   * The latent operator for the loop, from the models, e_sigma (UNet-embedded; undefined when the
   * operator takes none) and the measurement noise sigma (latent-space samplers only). Tensors it
   * creates (the preserve CNN's noise embedding) belong to the caller: see operatorTensors.
   */
  makeOperator?(models: OperatorModels, sigmaEmb: Tensor | undefined, sigma: number): SiloOperator;
  /** Records one guided step from z_t; the caller owns every tensor of the result. */
  step(rec: Recorder, inputs: StepInputs, zt: Tensor, t: Scalar, noise: Tensor | undefined): GuidedStep;
}

/** The model of a sampler's operator kind, if the models hold it ('cnn': the DegradationModel or the preserve CNN). */
export function operatorModel(models: OperatorModels, kind: OperatorKind): DegradationModel | PreserveDegradationNetwork | AggregationNetwork | undefined {
  return kind === 'cnn' ? (models.cnn ?? models.preserve) : models.readout;
}

/** Tensors makeOperator created for the operator (not the models' or the caller's), to free after the loop. */
export function operatorTensors(op: SiloOperator | undefined): Tensor[] {
  return op?.kind === 'preserve' ? [op.noiseEmb] : [];
}
