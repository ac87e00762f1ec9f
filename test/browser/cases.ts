// Kernel checks that run inside headless Chromium (the esbuild bundle of this file and the engine),
// each compared with the same CPU references the Node suite uses.

import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import * as ew from '../../src/engine/ops/elementwise.js';
import { unaryRef, broadcastRef, gegluRef } from '../ref/elementwise.js';

export interface CaseResult {
  name: string;
  ok: boolean;
  maxAbsDiff: number;
  worst: string;
  ms: number;
}

interface Case {
  name: string;
  atol: number;
  rtol: number;
  run: (engine: Engine) => Promise<{ actual: Float32Array; expected: Float32Array }>;
}

function data(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = lo + ((hi - lo) * s) / 4294967296;
  }
  return out;
}

export const CASES: Case[] = [
  {
    name: 'silu 1031',
    atol: 1e-6,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(1031, 1, -6, 6);
      const t = engine.tensor(x, [1031]);
      const { result } = await runProgram(engine, 'silu', (rec) => ew.silu(rec, t));
      return { actual: await result.read(), expected: unaryRef(x, 'silu') };
    },
  },
  {
    name: 'gelu (erf) 777',
    atol: 1e-6,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(777, 2, -6, 6);
      const t = engine.tensor(x, [777]);
      const { result } = await runProgram(engine, 'gelu', (rec) => ew.gelu(rec, t));
      return { actual: await result.read(), expected: unaryRef(x, 'gelu') };
    },
  },
  {
    name: 'broadcast add [2,320,3,5] + [1,320,1,1]',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const a = data(2 * 320 * 15, 3);
      const b = data(320, 4);
      const ta = engine.tensor(a, [2, 320, 3, 5]);
      const tb = engine.tensor(b, [1, 320, 1, 1]);
      const { result } = await runProgram(engine, 'add', (rec) => ew.add(rec, ta, tb));
      return { actual: await result.read(), expected: broadcastRef(a, [2, 320, 3, 5], b, [1, 320, 1, 1], (p, q) => p + q).out };
    },
  },
  {
    name: 'geglu 77x(2*40)',
    atol: 1e-6,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(77 * 80, 5, -4, 4);
      const t = engine.tensor(x, [77, 80]);
      const { result } = await runProgram(engine, 'geglu', (rec) => ew.geglu(rec, t));
      return { actual: await result.read(), expected: gegluRef(x, 77, 40) };
    },
  },
];

export async function runCases(engine: Engine, only?: string[]): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  for (const c of CASES) {
    if (only && !only.includes(c.name)) continue;
    const t0 = performance.now();
    try {
      const { actual, expected } = await c.run(engine);
      let ok = actual.length === expected.length;
      let maxAbsDiff = 0;
      let worst = ok ? '' : `length ${actual.length} vs ${expected.length}`;
      for (let i = 0; ok && i < expected.length; i++) {
        const d = Math.abs(actual[i]! - expected[i]!);
        if (!(d <= c.atol + c.rtol * Math.abs(expected[i]!))) {
          ok = false;
          worst = `element ${i}: ${actual[i]} vs ${expected[i]}`;
        }
        if (d > maxAbsDiff) maxAbsDiff = d;
      }
      results.push({ name: c.name, ok, maxAbsDiff, worst, ms: performance.now() - t0 });
    } catch (e) {
      results.push({ name: c.name, ok: false, maxAbsDiff: NaN, worst: String((e as Error).stack ?? e), ms: performance.now() - t0 });
    }
  }
  return results;
}
