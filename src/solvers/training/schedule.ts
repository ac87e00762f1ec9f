// Learning-rate schedules for Adam's `lr` (a function of the step t = 1, 2, ...), as diffusers'
// optimization.py defines them (the `LambdaLR` multiplier times the base rate, evaluated at t - 1 steps
// taken): constant with an optional linear warm-up, linear decay and cosine decay after the warm-up.

import { assertArg } from '../../engine/errors.js';

export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface ScheduleOptions {
  kind: ScheduleKind;
  /** The base learning rate. */
  lr: number;
  /** Warm-up steps (the rate rises linearly from 0). */
  warmup?: number;
  /** Total training steps (linear and cosine decay to 0 at this step). */
  total?: number;
}

/** lr(t) for t = 1, 2, ...: the rate the t-th optimizer step uses. */
export function learningRateSchedule(o: ScheduleOptions): (step: number) => number {
  const warmup = o.warmup ?? 0;
  assertArg(Number.isFinite(o.lr) && o.lr >= 0, `schedule: learning rate ${o.lr} must be finite and >= 0`);
  assertArg(Number.isInteger(warmup) && warmup >= 0, `schedule: warm-up ${warmup} must be an integer >= 0`);
  assertArg(['constant', 'linear', 'cosine'].includes(o.kind), `schedule: unknown kind ${String(o.kind)} (constant, linear or cosine)`);
  if (o.kind !== 'constant') {
    assertArg(o.total !== undefined && Number.isInteger(o.total) && o.total > warmup, `schedule: ${o.kind} decay needs total steps (an integer above the warm-up ${warmup}), got ${o.total}`);
  }
  const total = o.total ?? 0;
  return (t: number) => {
    const s = t - 1; // steps already taken, LambdaLR's current_step
    if (s < warmup) return (o.lr * s) / Math.max(1, warmup);
    if (o.kind === 'constant') return o.lr;
    const progress = (s - warmup) / Math.max(1, total - warmup);
    if (o.kind === 'linear') return o.lr * Math.max(0, (total - s) / Math.max(1, total - warmup));
    return o.lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
  };
}
