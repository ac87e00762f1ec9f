// diffusers' DDPMScheduler (v0.27): ancestral sampling with the posterior mean
//   prev = c_x0 * x0 + c_t * x_t + sqrt(variance) * noise   (noise only when t > 0)
// where the previous timestep is t - num_train_timesteps // num_inference_steps and, past the end
// (prev_t < 0), alpha_prod_prev is 1 (diffusers' `self.one`).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { ArgumentError } from '../../engine/errors.js';
import type { SchedulerConfig } from './config.js';
import { mapScalar, scalarValue, type Scalar } from '../../engine/step-value.js';
import { Scheduler, f32, sqrtF32, linearCombination, type StepCoefficients, type StepOptions, type StepResult } from './scheduler.js';

export interface DdpmCoefficients extends StepCoefficients {
  currentAlphaT: number;
  currentBetaT: number;
  /** prev mean = predOriginalSampleCoeff * x0 + currentSampleCoeff * sample. */
  predOriginalSampleCoeff: number;
  currentSampleCoeff: number;
}

export class DDPMScheduler extends Scheduler {
  constructor(config: SchedulerConfig | Record<string, unknown>) {
    super('ddpm', config);
  }

  previousTimestep(t: number): number {
    const steps = this.numInferenceSteps ?? this.config.numTrainTimesteps;
    return t - Math.floor(this.config.numTrainTimesteps / steps);
  }

  private alphaProdPrev(prevT: number): number {
    return prevT >= 0 ? this.alphasCumprod[prevT]! : 1;
  }

  /** diffusers' _get_variance(t) for the configured variance_type (float32). */
  getVariance(t: number): number {
    const prevT = this.previousTimestep(t);
    const a = this.alphaProd(t, '_get_variance');
    const aPrev = this.alphaProdPrev(prevT);
    const currentBeta = f32(1 - f32(a / aPrev));
    let variance = f32(f32(f32(1 - aPrev) / f32(1 - a)) * currentBeta);
    variance = Math.max(variance, f32(1e-20));
    switch (this.config.varianceType) {
      case 'fixed_small':
        return variance;
      case 'fixed_small_log':
        return f32(Math.exp(f32(0.5 * f32(Math.log(variance)))));
      case 'fixed_large':
        return currentBeta;
    }
  }

  stepCoefficients(t: number): DdpmCoefficients {
    const prevT = this.previousTimestep(t);
    const a = this.alphaProd(t);
    const aPrev = this.alphaProdPrev(prevT);
    const betaProdT = f32(1 - a);
    const betaProdTPrev = f32(1 - aPrev);
    const currentAlphaT = f32(a / aPrev);
    const currentBetaT = f32(1 - currentAlphaT);
    const variance = this.getVariance(t);
    // fixed_small_log's _get_variance is already a standard deviation; the others are variances.
    const std = this.config.varianceType === 'fixed_small_log' ? variance : sqrtF32(variance);
    return {
      t,
      prevT,
      alphaProdT: a,
      alphaProdTPrev: aPrev,
      betaProdT,
      betaProdTPrev,
      currentAlphaT,
      currentBetaT,
      variance,
      noiseStd: t > 0 ? std : 0,
      predOriginalSampleCoeff: f32(f32(sqrtF32(aPrev) * currentBetaT) / betaProdT),
      currentSampleCoeff: f32(f32(sqrtF32(currentAlphaT) * betaProdTPrev) / betaProdT),
      ...this.x0Coefficients(a, betaProdT),
    };
  }

  /** One ancestral step, recorded into `rec`; `opts.noise` (N(0,1), the sample's shape) is required when t > 0. */
  step(rec: Recorder, modelOutput: Tensor, t: Scalar, sample: Tensor, opts: StepOptions = {}): StepResult {
    this.checkShapes(modelOutput, sample, opts.noise);
    const c = this.stepCoefficients(scalarValue(t));
    if (c.noiseStd !== 0 && !opts.noise) {
      throw new ArgumentError(`ddpm step at t=${c.t}: the step adds sqrt(variance) * noise, pass opts.noise (N(0,1) of the sample's shape)`);
    }
    // Each coefficient follows a replay's t when t is a StepValue; whether noise is added does not.
    const k = (pick: (c: DdpmCoefficients) => number) => mapScalar(t, (tt) => pick(this.stepCoefficients(tt)));
    return rec.scope('ddpm', () => {
      const predOriginalSample = this.predictOriginal(rec, c, modelOutput, sample, t);
      const terms: [Tensor, Scalar][] = [
        [predOriginalSample, k((q) => q.predOriginalSampleCoeff)],
        [sample, k((q) => q.currentSampleCoeff)],
      ];
      if (c.noiseStd !== 0) terms.push([opts.noise!, k((q) => q.noiseStd)]);
      const prevSample = linearCombination(rec, terms, 'prev_sample');
      return { prevSample, predOriginalSample };
    });
  }
}
