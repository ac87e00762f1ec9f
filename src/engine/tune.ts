// Measures an op's kernel variants on the adapter in use and records the fastest in the engine's tuning
// table (tuning.ts). Each variant runs the same random problem `reps` times; its time is the median of
// the GPU time from timestamp queries, or of the wall time where the adapter has none.

import type { Engine } from './device.js';
import { runProgram } from './recorder.js';
import { randomNormal } from './ops/random.js';
import { conv2d, conv3x3Key, conv3x3Path, conv3x3Variants, convCaps, convTranspose2d, type Conv3x3Variant } from './ops/conv2d.js';
import { MATMUL_VARIANTS, defaultMatmulVariant, matmul, matmulKey } from './ops/matmul.js';
import type { Tensor } from './tensor.js';
import { assertArg } from './errors.js';

/** A 3x3 / stride 1 / padding 1 convolution: forward, or transposed (the input gradient of one). */
export interface Conv3x3Shape {
  n: number;
  cin: number;
  h: number;
  w: number;
  cout: number;
  transposed: boolean;
}

/** A product [batches, m, k] x [batches, k, n] (rank 2 when batches is 1; B stored [n, k] when transB), n % 4 == 0. */
export interface MatmulShape {
  batches: number;
  m: number;
  k: number;
  n: number;
  transB?: boolean;
}

export interface TuneResult {
  op: string;
  shape: string;
  /** Median ms per variant, in the order measured. */
  timings: { variant: string; ms: number }[];
  chosen: string;
  /** The variant the engine uses without a table entry. */
  fallback: string;
}

export interface TuneOptions {
  /** Runs per variant (median); default 3. */
  reps?: number;
  log?: (line: string) => void;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The variants a shape may use on this engine and the one it uses untuned. */
export function conv3x3Candidates(engine: Engine, s: Conv3x3Shape): { variants: Conv3x3Variant[]; fallback: Conv3x3Variant } {
  const g = { kh: 3, kw: 3, groups: 1, h: s.h, w: s.w, n: s.n, cin: s.cin };
  const max = engine.limits.maxStorageBufferBindingSize;
  const out: [number, number] = [s.h, s.w];
  const one: [number, number] = [1, 1];
  const caps = convCaps(engine);
  return { variants: conv3x3Variants(g, s.cout, out, one, one, max, caps), fallback: conv3x3Path(g, s.cout, out, one, one, max, undefined, caps) ?? 'general' };
}

/**
 * Runs `run` (one program) for each variant set in engine.tuning under op/key, reps times after an
 * untimed compile run, and keeps the fastest in the table; on an error the previous choice is restored.
 */
async function timeVariants(
  engine: Engine,
  op: string,
  key: string,
  variants: readonly string[],
  reps: number,
  run: (rec: Parameters<Parameters<typeof runProgram>[2]>[0]) => Tensor,
): Promise<{ variant: string; ms: number }[]> {
  const timings: { variant: string; ms: number }[] = [];
  const saved = engine.tuning.get(op, key);
  try {
    for (const v of variants) {
      engine.tuning.set(op, key, v);
      const times: number[] = [];
      for (let r = -1; r < reps; r++) {
        await engine.queue.onSubmittedWorkDone();
        const t0 = performance.now();
        const { result, report } = await runProgram(engine, `tune/${op}/${key}/${v}`, run, { wait: true, profile: engine.hasTimestamps });
        const wall = performance.now() - t0;
        result.dispose();
        if (r >= 0) times.push(report.profiledMs ?? wall);
      }
      timings.push({ variant: v, ms: median(times) });
    }
  } catch (e) {
    if (saved) engine.tuning.set(op, key, saved);
    else engine.tuning.delete(op, key);
    throw e;
  }
  const best = timings.reduce((a, b) => (b.ms < a.ms ? b : a));
  engine.tuning.set(op, key, best.variant);
  return timings;
}

function checkReps(reps: number): void {
  assertArg(Number.isInteger(reps) && reps >= 1, `tune: reps must be a positive integer, got ${reps}`);
}

function report(op: string, key: string, timings: { variant: string; ms: number }[], fallback: string, opts: TuneOptions): TuneResult {
  const best = timings.reduce((a, b) => (b.ms < a.ms ? b : a));
  opts.log?.(`${op} ${key}: ${timings.map((t) => `${t.variant} ${t.ms.toFixed(2)} ms`).join(', ')} -> ${best.variant}${best.variant === fallback ? '' : ` (default ${fallback})`}`);
  return { op, shape: key, timings, chosen: best.variant, fallback };
}

/** Times each variant of each shape and sets the fastest in engine.tuning. */
export async function tuneConv3x3(engine: Engine, shapes: readonly Conv3x3Shape[], opts: TuneOptions = {}): Promise<TuneResult[]> {
  const reps = opts.reps ?? 3;
  checkReps(reps);
  const results: TuneResult[] = [];
  for (const s of shapes) {
    assertArg([s.n, s.cin, s.h, s.w, s.cout].every((d) => Number.isInteger(d) && d >= 1), `tune: invalid conv 3x3 shape ${JSON.stringify(s)}`);
    const key = conv3x3Key(s.n, s.cin, s.h, s.w, s.cout, s.transposed);
    const { variants, fallback } = conv3x3Candidates(engine, s);
    const inputs = await runProgram(engine, 'tune/inputs', (rec) => ({
      x: randomNormal(rec, [s.n, s.cin, s.h, s.w], 1, { name: 'x' }),
      // Forward: [cout, cin, 3, 3]; transposed: [cin, cout, 3, 3] (ConvTranspose2d's layout).
      wt: randomNormal(rec, s.transposed ? [s.cin, s.cout, 3, 3] : [s.cout, s.cin, 3, 3], 2, { std: 0.05, name: 'weight' }),
    }));
    const { x, wt } = inputs.result;
    try {
      const timings = await timeVariants(engine, 'conv3x3', key, variants, reps, (rec) =>
        s.transposed ? convTranspose2d(rec, x, wt, undefined, { stride: 1, padding: 1 }) : conv2d(rec, x, wt, undefined, { stride: 1, padding: 1 }),
      );
      results.push(report('conv3x3', key, timings, fallback, opts));
    } finally {
      x.dispose();
      wt.dispose();
    }
  }
  return results;
}

/** Times matmul_nn4 and matmul_tiled on each product and sets the faster in engine.tuning. */
export async function tuneMatmul(engine: Engine, shapes: readonly MatmulShape[], opts: TuneOptions = {}): Promise<TuneResult[]> {
  const reps = opts.reps ?? 3;
  checkReps(reps);
  const results: TuneResult[] = [];
  for (const s of shapes) {
    assertArg([s.batches, s.m, s.k, s.n].every((d) => Number.isInteger(d) && d >= 1) && s.n % 4 === 0, `tune: invalid matmul shape ${JSON.stringify(s)} (n must be a multiple of 4)`);
    const transB = !!s.transB && s.k > 1 && s.n > 1;
    const key = matmulKey(s.batches, s.m, s.k, s.n, transB);
    const lead = s.batches > 1 ? [s.batches] : [];
    const inputs = await runProgram(engine, 'tune/inputs', (rec) => ({
      a: randomNormal(rec, [...lead, s.m, s.k], 1, { name: 'a' }),
      b: randomNormal(rec, [...lead, ...(transB ? [s.n, s.k] : [s.k, s.n])], 2, { std: 0.05, name: 'b' }),
    }));
    const { a, b } = inputs.result;
    try {
      const timings = await timeVariants(engine, 'matmul', key, MATMUL_VARIANTS, reps, (rec) => matmul(rec, a, b, { transB }));
      results.push(report('matmul', key, timings, defaultMatmulVariant(engine), opts));
    } finally {
      a.dispose();
      b.dispose();
    }
  }
  return results;
}
