// The noise schedule (betas, alphas, alphas_cumprod) and the inference timesteps, computed with the
// same roundings as diffusers v0.27 on PyTorch's CPU float32 kernels and numpy's float64, so that the
// tables match diffusers bit for bit, not just closely:
// - torch.linspace(float32) on an AVX2 CPU: 16 elements per vectorised iteration as two 8-lane
//   vectors, each vector starting from `start + step * idx` (or `end - step * (steps - idx - 1)` past
//   half way) evaluated with a fused multiply-add; a scalar tail for the rest.
// - torch.cumprod on the CPU accumulates in double (acc_type<float> is double) and rounds each output.
// - numpy.linspace / arange / round (half to even) for the timesteps.

import type { SchedulerConfig } from './config.js';
import { SchedulerConfigError } from './config.js';

const f32 = Math.fround;
const F32_BUF = new Float32Array(1);
const I32_VIEW = new Int32Array(F32_BUF.buffer);

/** The float32 neighbour of float32 `x` in the direction of `dir`'s sign. */
function nextF32(x: number, dir: number): number {
  if (x === 0) return dir > 0 ? 2 ** -149 : -(2 ** -149);
  F32_BUF[0] = x;
  I32_VIEW[0]! += (x > 0) === (dir > 0) ? 1 : -1;
  return F32_BUF[0]!;
}

/** Single-rounded float32 a * b + c (the product of two floats is exact in double; fix double rounding at ties). */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  // Two-sum error of s = p + c: the part double rounding lost.
  const bb = s - p;
  const err = p - (s - bb) + (c - bb);
  const r = f32(s);
  if (err !== 0 && s !== r) {
    const other = s > r ? nextF32(r, 1) : nextF32(r, -1);
    if (Math.abs(s - r) === Math.abs(other - s) && Math.sign(err) === Math.sign(other - s)) return other;
  }
  return r;
}

/** torch.linspace(start, end, steps, dtype=float32) as PyTorch's AVX2 CPU kernel rounds it. */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  const at = (idx: number) => (idx < halfway ? fmaF32(step, idx, s) : fmaF32(-step, steps - idx - 1, e));
  const LANES = 8;
  const vectorised = Math.floor(steps / (2 * LANES)) * 2 * LANES;
  for (let base = 0; base < vectorised; base += LANES) {
    const b = at(base);
    for (let i = 0; i < LANES; i++) out[base + i] = fmaF32(i, step, b);
  }
  for (let idx = vectorised; idx < steps; idx++) out[idx] = at(idx);
  return out;
}

/** diffusers' betas_for_alpha_bar (cosine schedule), in float64, then stored as float32. */
function cosineBetas(n: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta);
  return out;
}

export interface NoiseSchedule {
  betas: Float32Array;
  alphas: Float32Array;
  alphasCumprod: Float32Array;
}

export function noiseSchedule(cfg: SchedulerConfig): NoiseSchedule {
  const n = cfg.numTrainTimesteps;
  let betas: Float32Array;
  if (cfg.trainedBetas) {
    if (cfg.trainedBetas.length !== n) {
      throw new SchedulerConfigError(`scheduler config: trained_betas has ${cfg.trainedBetas.length} values but num_train_timesteps is ${n}`);
    }
    betas = Float32Array.from(cfg.trainedBetas);
  } else if (cfg.betaSchedule === 'linear') {
    betas = torchLinspaceF32(cfg.betaStart, cfg.betaEnd, n);
  } else if (cfg.betaSchedule === 'scaled_linear') {
    // linspace of the square roots (Python float64 ** 0.5, then float32), squared in float32.
    betas = torchLinspaceF32(cfg.betaStart ** 0.5, cfg.betaEnd ** 0.5, n).map((b) => f32(b * b));
  } else {
    betas = cosineBetas(n);
  }
  const alphas = betas.map((b) => f32(1 - b));
  const alphasCumprod = new Float32Array(n);
  let acc = 1;
  for (let i = 0; i < n; i++) {
    acc *= alphas[i]!;
    alphasCumprod[i] = acc;
  }
  return { betas, alphas, alphasCumprod };
}

/** numpy's round (half to even) of a float64. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** numpy.arange(start, stop, step) for floats: length ceil((stop - start) / step), values start + i * delta. */
function numpyArange(start: number, stop: number, step: number): number[] {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  if (len === 0) return [];
  if (len === 1) return [start];
  // numpy fills from the first two values: delta = (start + step) - start.
  const second = start + step;
  const delta = second - start;
  const out = [start, second];
  for (let i = 2; i < len; i++) out.push(start + i * delta);
  return out;
}

/** numpy.linspace(start, stop, num) (endpoint included). */
function numpyLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out: number[] = [];
  for (let i = 0; i < num; i++) out.push(i * step + start);
  out[num - 1] = stop;
  return out;
}

/** The timesteps of set_timesteps(num) (identical in DDPMScheduler and DDIMScheduler v0.27), first to last. */
export function inferenceTimesteps(cfg: SchedulerConfig, num: number): number[] {
  const n = cfg.numTrainTimesteps;
  if (!Number.isInteger(num) || num < 1) throw new SchedulerConfigError(`set_timesteps: num_inference_steps must be an integer >= 1, got ${num}`);
  if (num > n) {
    throw new SchedulerConfigError(
      `set_timesteps: num_inference_steps (${num}) cannot be larger than num_train_timesteps (${n}), the largest number of steps the model was trained with`,
    );
  }
  if (cfg.timestepSpacing === 'linspace') {
    return numpyLinspace(0, n - 1, num).map(roundHalfEven).reverse();
  }
  if (cfg.timestepSpacing === 'leading') {
    const ratio = Math.floor(n / num);
    const out: number[] = [];
    for (let i = num - 1; i >= 0; i--) out.push(i * ratio + cfg.stepsOffset);
    return out;
  }
  const ratio = n / num;
  return numpyArange(n, 0, -ratio).map((t) => roundHalfEven(t) - 1);
}
