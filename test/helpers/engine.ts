// Shared test helpers: one engine per test file on the adapter chosen by VK_ICD_FILENAMES, closeness
// checks with stated tolerances, and seeded test data.

import { Engine } from '../../src/engine/device.js';
import { expect } from 'vitest';

let enginePromise: Promise<Engine> | null = null;

export function getEngine(): Promise<Engine> {
  if (!enginePromise) {
    enginePromise = Engine.create({ log: (l) => console.log(`[engine] ${l}`) }).catch((e) => {
      // An absent adapter must fail the suite loudly, never skip it.
      throw new Error(`no usable WebGPU adapter (VK_ICD_FILENAMES=${process.env['VK_ICD_FILENAMES'] ?? 'unset'}): ${(e as Error).message}`);
    });
  }
  return enginePromise;
}

/** Deterministic pseudo-random data (mulberry32), uniform in [lo, hi). */
export function randomData(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = lo + (hi - lo) * u;
  }
  return out;
}

export interface Tolerance {
  atol: number;
  rtol: number;
}

/** Element-wise |x - ref| <= atol + rtol * |ref|; reports the worst element on failure. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, what: string): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  let worst = -1;
  let worstExcess = 0;
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    const d = Math.abs(a - e);
    if (!Number.isFinite(a) && a !== e) {
      worst = i;
      worstExcess = Infinity;
      break;
    }
    maxAbs = Math.max(maxAbs, d);
    const excess = d - (tol.atol + tol.rtol * Math.abs(e));
    if (excess > worstExcess) {
      worstExcess = excess;
      worst = i;
    }
  }
  if (worst >= 0) {
    expect.fail(
      `${what}: element ${worst} is ${actual[worst]} but expected ${expected[worst]} (atol ${tol.atol}, rtol ${tol.rtol}; max abs diff ${maxAbs})`,
    );
  }
}

export const F32_TOL: Tolerance = { atol: 1e-5, rtol: 1e-5 };
