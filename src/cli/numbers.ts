// Strict parsing of numeric command-line values. Number() accepts '' (0), '0x10' (16), ' 5 ' (5) and
// 'Infinity', and parseInt/parseFloat ignore trailing text ('0x1' -> 0, '5px' -> 5): a typo must be an
// error, never a different run, so only plain decimal spellings pass.

import { SiloError } from '../engine/errors.js';

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** A bad numeric flag value; the message names the flag, the value and what was expected. */
export class NumberArgError extends SiloError {}

export interface NumberRule {
  /** Integers only (no fraction, no exponent). */
  integer?: boolean;
  /** Bounds; `min`/`max` inclusive, `above` exclusive. */
  min?: number;
  max?: number;
  above?: number;
  /** What the value means, for the message (e.g. 'a number of steps'). */
  what?: string;
}

function describe(rule: NumberRule): string {
  const kind = rule.what ?? (rule.integer ? 'an integer' : 'a number');
  const bounds: string[] = [];
  if (rule.above !== undefined) bounds.push(`> ${rule.above}`);
  if (rule.min !== undefined && rule.max !== undefined) bounds.push(`in ${rule.min}..${rule.max}`);
  else if (rule.min !== undefined) bounds.push(`>= ${rule.min}`);
  else if (rule.max !== undefined) bounds.push(`<= ${rule.max}`);
  return bounds.length ? `${kind} ${bounds.join(' and ')}` : kind;
}

/** Parses `text` as the value of `--flag` under `rule`; NumberArgError otherwise. */
export function parseNumberArg(flag: string, text: string, rule: NumberRule = {}): number {
  const expected = describe(rule);
  const shown = JSON.stringify(text);
  if (!(rule.integer ? INTEGER : DECIMAL).test(text)) throw new NumberArgError(`--${flag} ${shown}: expected ${expected}`);
  const n = Number(text);
  if (!Number.isFinite(n)) throw new NumberArgError(`--${flag} ${shown}: expected a finite number`);
  if (rule.integer && !Number.isSafeInteger(n)) throw new NumberArgError(`--${flag} ${shown}: expected ${expected} (at most ${Number.MAX_SAFE_INTEGER})`);
  const inRange = (rule.min === undefined || n >= rule.min) && (rule.max === undefined || n <= rule.max) && (rule.above === undefined || n > rule.above);
  if (!inRange) throw new NumberArgError(`--${flag} ${text}: expected ${expected}`);
  return n;
}
