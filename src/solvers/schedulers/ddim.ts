// diffusers' DDIMScheduler (v0.27):
//   prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev - sigma^2) * eps + sigma * noise,
//   sigma = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
// Past the last step (prev_t < 0) a_prev is final_alpha_cumprod: 1 with set_alpha_to_one, else
// alphas_cumprod[0] (SD-1.5's config), unlike DDPM's 1.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { ArgumentError, SiloError } from '../../engine/errors.js';
import type { SchedulerConfig } from './config.js';
import { Scheduler, f32, sqrtF32, linearCombination, type StepCoefficients, type StepOptions, type StepResult } from './scheduler.js';

export interface DdimCoefficients extends StepCoefficients {
  eta: number;
  /** sigma_t = eta * sqrt(variance). */
  stdDevT: number;
  /** prev = sqrtAlphaProdTPrev * x0 + directionCoeff * eps + noiseStd * noise. */
  sqrtAlphaProdTPrev: number;
  directionCoeff: number;
}

export class DDIMScheduler extends Scheduler {
  constructor(config: SchedulerConfig | Record<string, unknown>) {
    super('ddim', config);
  }

  get finalAlphaCumprod(): number {
    return this.config.setAlphaToOne ? 1 : this.alphasCumprod[0]!;
  }

  previousTimestep(t: number): number {
    if (this.numInferenceSteps === null) {
      throw new SiloError("ddim: number of inference steps is unset, call setTimesteps() before step()");
    }
    return t - Math.floor(this.config.numTrainTimesteps / this.numInferenceSteps);
  }

  private alphaProdPrev(prevT: number): number {
    return prevT >= 0 ? this.alphasCumprod[prevT]! : this.finalAlphaCumprod;
  }

  /** diffusers' _get_variance(t, prev_t) (float32). */
  getVariance(t: number, prevT = this.previousTimestep(t)): number {
    const a = this.alphaProd(t, '_get_variance');
    const aPrev = this.alphaProdPrev(prevT);
    return f32(f32(f32(1 - aPrev) / f32(1 - a)) * f32(1 - f32(a / aPrev)));
  }

  stepCoefficients(t: number, opts: StepOptions = {}): DdimCoefficients {
    const eta = opts.eta ?? 0;
    if (!(eta >= 0) || !Number.isFinite(eta)) throw new ArgumentError(`ddim step: eta must be a finite number >= 0, got ${eta}`);
    const prevT = this.previousTimestep(t);
    const a = this.alphaProd(t);
    const aPrev = this.alphaProdPrev(prevT);
    const betaProdT = f32(1 - a);
    const variance = this.getVariance(t, prevT);
    const stdDevT = f32(eta * sqrtF32(variance));
    return {
      t,
      prevT,
      alphaProdT: a,
      alphaProdTPrev: aPrev,
      betaProdT,
      betaProdTPrev: f32(1 - aPrev),
      variance,
      eta,
      stdDevT,
      noiseStd: eta > 0 ? stdDevT : 0,
      sqrtAlphaProdTPrev: sqrtF32(aPrev),
      directionCoeff: sqrtF32(f32(f32(1 - aPrev) - f32(stdDevT * stdDevT))),
      ...this.x0Coefficients(a, betaProdT),
    };
  }

  /** One DDIM step, recorded into `rec`; `opts.noise` (N(0,1)) is required when eta > 0. */
  step(rec: Recorder, modelOutput: Tensor, t: number, sample: Tensor, opts: StepOptions = {}): StepResult {
    this.checkShapes(modelOutput, sample, opts.noise);
    const c = this.stepCoefficients(t, opts);
    if (c.noiseStd !== 0 && !opts.noise) {
      throw new ArgumentError(`ddim step at t=${t} with eta ${c.eta}: pass opts.noise (the variance noise, N(0,1) of the sample's shape)`);
    }
    return rec.scope('ddim', () =>
      rec.engine.tidy(() => {
        const predOriginalSample = this.predictOriginal(rec, c, modelOutput, sample);
        const sa = sqrtF32(c.alphaProdT);
        const sb = sqrtF32(c.betaProdT);
        // eps as a combination of tensors already at hand.
        let eps: [Tensor, number][];
        const pred = this.config.predictionType;
        if (pred === 'sample' || opts.useClippedModelOutput) eps = [[sample, 1 / sb], [predOriginalSample, -sa / sb]];
        else if (pred === 'epsilon') eps = [[modelOutput, 1]];
        else eps = [[modelOutput, sa], [sample, sb]];
        // prev = sqrt(a_prev) * x0 + dir * eps + sigma * noise, with eps's terms merged in.
        const terms: [Tensor, number][] = [[predOriginalSample, c.sqrtAlphaProdTPrev]];
        for (const [x, k] of eps) {
          const same = terms.find((term) => term[0] === x);
          if (same) same[1] += c.directionCoeff * k;
          else terms.push([x, c.directionCoeff * k]);
        }
        if (c.noiseStd !== 0) terms.push([opts.noise!, c.noiseStd]);
        const prevSample = linearCombination(rec, terms, 'prev_sample');
        return { prevSample, predOriginalSample };
      }),
    );
  }
}
