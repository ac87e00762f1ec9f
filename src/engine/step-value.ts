// Values that change from one replay of a captured program to the next (a sampler step's timestep and
// the schedule coefficients derived from it, the noise stream). An op that takes a StepValue uses its
// `value` when recording, like a plain number; a capturing recorder also notes where the value went (a
// uniform member, an upload) and how to recompute it from the replay's parameters, so a replay writes
// the new values there and re-encodes nothing else. See replay.ts.

import { SiloError } from './errors.js';

/** The parameters a replay is given (e.g. { t: 981, step: 2 }). */
export type StepParams = Readonly<Record<string, number>>;

export interface StepValue {
  /** The value for the recording (the capture's own parameters). */
  readonly value: number;
  /** The value for another replay's parameters. */
  readonly at: (p: StepParams) => number;
}

/** A number, or a value that follows the replay's parameters. */
export type Scalar = number | StepValue;

export function isStepValue(v: unknown): v is StepValue {
  return typeof v === 'object' && v !== null && typeof (v as StepValue).at === 'function' && typeof (v as StepValue).value === 'number';
}

export function scalarValue(s: Scalar): number {
  return typeof s === 'number' ? s : s.value;
}

/** The parameter `name` itself, `value` in this recording. */
export function stepParam(name: string, value: number): StepValue {
  return {
    value,
    at: (p) => {
      const v = p[name];
      if (typeof v !== 'number') throw new SiloError(`replay: parameter "${name}" was not given (got ${Object.keys(p).join(', ') || 'none'})`);
      return v;
    },
  };
}

/** f(s): a StepValue when s is one, else the number f(s). */
export function mapScalar(s: Scalar, f: (x: number) => number): Scalar {
  if (typeof s === 'number') return f(s);
  return { value: f(s.value), at: (p) => f(s.at(p)) };
}

/** A uniform member that follows the replay's parameters: its value(s) from them. */
export type DynamicUniform = (p: StepParams) => number | readonly number[];

/** The dynamic members among `members` (undefined when all are plain numbers). */
export function dynamicUniforms(members: Record<string, Scalar | undefined>): Record<string, DynamicUniform> | undefined {
  let out: Record<string, DynamicUniform> | undefined;
  for (const [k, v] of Object.entries(members)) {
    if (v !== undefined && typeof v !== 'number') (out ??= {})[k] = v.at;
  }
  return out;
}
