// What DDPM and DDIM share: the config and noise tables, set_timesteps, timestep checks, x0 prediction,
// add_noise, and recording linear combinations of tensors. A step records a few elementwise dispatches
// into the caller's program; every coefficient is computed on the CPU from the float32 tables with
// float32 roundings as diffusers' 0-d torch tensors do, so the GPU never reads anything back.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { ArgumentError, assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { clamp, copy, scale, scaleAdd } from '../../engine/ops/elementwise.js';
import { mapScalar, type Scalar } from '../../engine/step-value.js';
import { parseSchedulerConfig, type SchedulerConfig, type SchedulerKind } from './config.js';
import { inferenceTimesteps, noiseSchedule } from './schedule.js';

export const f32 = Math.fround;
/** torch's `x ** 0.5` on a float32 scalar (sqrt, correctly rounded). */
export const sqrtF32 = (x: number) => f32(Math.sqrt(x));

export interface StepOptions {
  /** Gaussian noise of the sample's shape: DDPM's variance noise (needed when t > 0), DDIM's variance_noise (needed when eta > 0). */
  noise?: Tensor;
  /** DDIM only: weight of the stochastic part (0 deterministic DDIM, 1 DDPM-like). */
  eta?: number;
  /** DDIM only: recompute eps from the clipped x0 (diffusers' use_clipped_model_output). */
  useClippedModelOutput?: boolean;
}

export interface StepResult {
  prevSample: Tensor;
  predOriginalSample: Tensor;
}

/** The scalars of one step, as diffusers computes them (float32). */
export interface StepCoefficients {
  t: number;
  prevT: number;
  alphaProdT: number;
  alphaProdTPrev: number;
  betaProdT: number;
  betaProdTPrev: number;
  /** The scheduler's _get_variance for this step (DDPM: the configured variance_type; DDIM: sigma_t^2 / eta^2). */
  variance: number;
  /** Coefficient of the noise in prev_sample (0 when the step adds none). */
  noiseStd: number;
  /** x0 = x0FromSample * sample + x0FromModel * model_output (before clipping). */
  x0FromSample: number;
  x0FromModel: number;
}

/** Records sum_i c_i * x_i into a fresh tensor (one dispatch per term after the first two). */
export function linearCombination(rec: Recorder, terms: [Tensor, Scalar][], op: string): Tensor {
  assertArg(terms.length > 0, `${op}: no terms`);
  if (terms.length === 1) {
    const [x, c] = terms[0]!;
    return c === 1 ? copy(rec, x) : scale(rec, x, c);
  }
  return rec.engine.tidy(() => {
    let acc = scaleAdd(rec, terms[0]![0], terms[0]![1], terms[1]![0], terms[1]![1], { op });
    for (const [x, c] of terms.slice(2)) acc = scaleAdd(rec, acc, 1, x, c, { op });
    return acc;
  });
}

export abstract class Scheduler {
  readonly config: SchedulerConfig;
  readonly betas: Float32Array;
  readonly alphas: Float32Array;
  readonly alphasCumprod: Float32Array;
  /** Standard deviation of the initial noise (1 for DDPM/DDIM). */
  readonly initNoiseSigma = 1;
  numInferenceSteps: number | null = null;
  timesteps: number[];

  constructor(
    readonly kind: SchedulerKind,
    config: SchedulerConfig | Record<string, unknown>,
  ) {
    this.config = 'numTrainTimesteps' in config ? (config as SchedulerConfig) : parseSchedulerConfig(config, kind);
    const s = noiseSchedule(this.config);
    this.betas = s.betas;
    this.alphas = s.alphas;
    this.alphasCumprod = s.alphasCumprod;
    // diffusers' initial timesteps: every training timestep, last first.
    this.timesteps = Array.from({ length: this.config.numTrainTimesteps }, (_, i) => this.config.numTrainTimesteps - 1 - i);
  }

  setTimesteps(numInferenceSteps: number): void {
    this.timesteps = inferenceTimesteps(this.config, numInferenceSteps);
    this.numInferenceSteps = numInferenceSteps;
  }

  /** alphas_cumprod[t], refusing what diffusers' indexing would raise on (or silently wrap, for t < 0). */
  alphaProd(t: number, what = 'step'): number {
    const n = this.config.numTrainTimesteps;
    if (!Number.isInteger(t) || t < 0 || t >= n) {
      throw new ArgumentError(
        `${this.kind} ${what}: timestep ${t} is out of range for alphas_cumprod (0..${n - 1}); diffusers raises an IndexError here ` +
          `(set_timesteps(${n}) with leading spacing and steps_offset ${this.config.stepsOffset} starts at ${n - 1 + this.config.stepsOffset})`,
      );
    }
    return this.alphasCumprod[t]!;
  }

  /** The x0 prediction's coefficients for the configured prediction_type. */
  protected x0Coefficients(alphaProdT: number, betaProdT: number): { x0FromSample: number; x0FromModel: number } {
    const sa = sqrtF32(alphaProdT);
    const sb = sqrtF32(betaProdT);
    switch (this.config.predictionType) {
      case 'epsilon':
        return { x0FromSample: 1 / sa, x0FromModel: -sb / sa };
      case 'sample':
        return { x0FromSample: 0, x0FromModel: 1 };
      case 'v_prediction':
        return { x0FromSample: sa, x0FromModel: -sb };
    }
  }

  protected checkShapes(modelOutput: Tensor, sample: Tensor, noise?: Tensor): void {
    const same = (a: Tensor, b: Tensor) => a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
    assertArg(same(modelOutput, sample), `${this.kind} step: model_output ${shapeString(modelOutput.shape)} and sample ${shapeString(sample.shape)} differ in shape`);
    if (noise) assertArg(same(noise, sample), `${this.kind} step: noise ${shapeString(noise.shape)} and sample ${shapeString(sample.shape)} differ in shape`);
  }

  /** Records x0 (clipped when clip_sample is set). */
  protected predictOriginal(rec: Recorder, c: StepCoefficients, modelOutput: Tensor, sample: Tensor, t: Scalar = c.t): Tensor {
    // The coefficients follow a replay's t when t is a StepValue (the prediction type fixes which are 0).
    const fromSample = mapScalar(t, (tt) => this.stepCoefficients(tt).x0FromSample);
    const fromModel = mapScalar(t, (tt) => this.stepCoefficients(tt).x0FromModel);
    return rec.engine.tidy(() => {
      const terms: [Tensor, Scalar][] = c.x0FromSample === 0 ? [[modelOutput, fromModel]] : [[sample, fromSample], [modelOutput, fromModel]];
      const x0 = linearCombination(rec, terms, `${this.kind}/pred_original_sample`);
      if (!this.config.clipSample) return x0;
      const r = this.config.clipSampleRange;
      return clamp(rec, x0, -r, r);
    });
  }

  /** diffusers' add_noise: sqrt(alphas_cumprod[t]) * original + sqrt(1 - alphas_cumprod[t]) * noise. */
  addNoise(rec: Recorder, original: Tensor, noise: Tensor, t: number): Tensor {
    const a = this.alphaProd(t, 'add_noise');
    return scaleAdd(rec, original, sqrtF32(a), noise, sqrtF32(f32(1 - a)), { op: `${this.kind}/add_noise` });
  }

  /** Model input scaling (identity for DDPM/DDIM; kept for a uniform sampler loop). */
  scaleModelInput(sample: Tensor): Tensor {
    return sample;
  }

  abstract previousTimestep(t: number): number;
  abstract stepCoefficients(t: number, opts?: StepOptions): StepCoefficients;
  abstract step(rec: Recorder, modelOutput: Tensor, t: number, sample: Tensor, opts?: StepOptions): StepResult;
}
