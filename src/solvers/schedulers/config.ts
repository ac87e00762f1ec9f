// The configuration of diffusers' DDPMScheduler / DDIMScheduler (v0.27), read from a
// scheduler_config.json object the way `from_config` does: known keys override the class defaults,
// unknown keys (SD-1.5's file is a PNDMScheduler config: skip_prk_steps, _class_name, ...) are ignored.
// Options this port does not implement are rejected by name instead of being silently ignored.

import { SiloError } from '../../engine/errors.js';

export class SchedulerConfigError extends SiloError {}

export type SchedulerKind = 'ddpm' | 'ddim';
export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';
export type PredictionType = 'epsilon' | 'sample' | 'v_prediction';
/** DDPM's posterior variance choices that need no learned variance channel. */
export type VarianceType = 'fixed_small' | 'fixed_small_log' | 'fixed_large';

export interface SchedulerConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  /** Explicit betas (replace the schedule); stored as float32 like torch.tensor(..., float32). */
  trainedBetas: number[] | null;
  stepsOffset: number;
  timestepSpacing: TimestepSpacing;
  predictionType: PredictionType;
  clipSample: boolean;
  clipSampleRange: number;
  /** DDIM only: alpha of the step after the last one is 1 (true) or alphas_cumprod[0] (false). */
  setAlphaToOne: boolean;
  /** DDPM only. */
  varianceType: VarianceType;
}

type Json = Record<string, unknown>;

/** diffusers' `__init__` defaults of each class (not SD-1.5's values). */
export function defaultSchedulerConfig(kind: SchedulerKind): SchedulerConfig {
  return {
    numTrainTimesteps: 1000,
    betaStart: 0.0001,
    betaEnd: 0.02,
    betaSchedule: 'linear',
    trainedBetas: null,
    stepsOffset: 0,
    timestepSpacing: 'leading',
    predictionType: 'epsilon',
    clipSample: true,
    clipSampleRange: 1.0,
    setAlphaToOne: kind === 'ddim',
    varianceType: 'fixed_small',
  };
}

function pick<T>(cfg: Json, key: string, dflt: T, check: (v: unknown) => boolean, what: string): T {
  const v = cfg[key];
  if (v === undefined) return dflt;
  if (!check(v)) throw new SchedulerConfigError(`scheduler config: ${key} must be ${what}, got ${JSON.stringify(v)}`);
  return v as T;
}

const isBool = (v: unknown) => typeof v === 'boolean';
const isNum = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
const isInt = (min: number) => (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= min;
const oneOf = (values: readonly string[]) => (v: unknown) => typeof v === 'string' && values.includes(v);

/**
 * Resolves a scheduler_config.json object for `kind`. Rejected: thresholding (dynamic thresholding needs
 * a per-sample quantile), rescale_betas_zero_snr, learned variances, and any unknown enum value.
 */
export function parseSchedulerConfig(json: Json, kind: SchedulerKind): SchedulerConfig {
  const d = defaultSchedulerConfig(kind);
  const schedules = ['linear', 'scaled_linear', 'squaredcos_cap_v2'] as const;
  const spacings = ['leading', 'trailing', 'linspace'] as const;
  const predictions = ['epsilon', 'sample', 'v_prediction'] as const;
  const variances = ['fixed_small', 'fixed_small_log', 'fixed_large'] as const;
  const cfg: SchedulerConfig = {
    numTrainTimesteps: pick(json, 'num_train_timesteps', d.numTrainTimesteps, isInt(1), 'an integer >= 1'),
    betaStart: pick(json, 'beta_start', d.betaStart, isNum, 'a number'),
    betaEnd: pick(json, 'beta_end', d.betaEnd, isNum, 'a number'),
    betaSchedule: pick(json, 'beta_schedule', d.betaSchedule, oneOf(schedules), `one of ${schedules.join(', ')}`),
    trainedBetas: null,
    stepsOffset: pick(json, 'steps_offset', d.stepsOffset, isInt(0), 'an integer >= 0'),
    timestepSpacing: pick(json, 'timestep_spacing', d.timestepSpacing, oneOf(spacings), `one of ${spacings.join(', ')}`),
    predictionType: pick(json, 'prediction_type', d.predictionType, oneOf(predictions), `one of ${predictions.join(', ')}`),
    clipSample: pick(json, 'clip_sample', d.clipSample, isBool, 'a boolean'),
    clipSampleRange: pick(json, 'clip_sample_range', d.clipSampleRange, (v) => isNum(v) && (v as number) > 0, 'a positive number'),
    setAlphaToOne: pick(json, 'set_alpha_to_one', d.setAlphaToOne, isBool, 'a boolean'),
    varianceType: d.varianceType,
  };
  if (kind === 'ddpm') {
    const v = json['variance_type'];
    if (v !== undefined && v !== null) {
      if (!oneOf(variances)(v)) {
        throw new SchedulerConfigError(
          `scheduler config: variance_type ${JSON.stringify(v)} is not supported (supported: ${variances.join(', ')}; learned variances need a model with a variance output)`,
        );
      }
      cfg.varianceType = v as VarianceType;
    }
  }
  const tb = json['trained_betas'];
  if (tb !== undefined && tb !== null) {
    if (!Array.isArray(tb) || tb.length === 0 || !tb.every(isNum)) {
      throw new SchedulerConfigError('scheduler config: trained_betas must be null or a non-empty list of numbers');
    }
    cfg.trainedBetas = tb as number[];
  }
  if (json['thresholding'] === true) throw new SchedulerConfigError('scheduler config: thresholding (dynamic thresholding) is not supported');
  if (json['rescale_betas_zero_snr'] === true) throw new SchedulerConfigError('scheduler config: rescale_betas_zero_snr is not supported');
  return cfg;
}

/**
 * Stable Diffusion 1.5's scheduler/scheduler_config.json (runwayml/stable-diffusion-v1-5): scaled_linear
 * betas 0.00085..0.012, 1000 training steps, leading spacing with steps_offset 1, no clipping.
 */
export const SD15_SCHEDULER_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  trained_betas: null,
  steps_offset: 1,
  timestep_spacing: 'leading',
  prediction_type: 'epsilon',
  clip_sample: false,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  variance_type: 'fixed_small',
});
