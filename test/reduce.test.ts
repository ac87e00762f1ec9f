import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import * as red from '../src/engine/ops/reduce.js';
import { getEngine, randomData } from './helpers/engine.js';
import { l2NormRef, maxAbsRef, nonFiniteRef, sumAbsRef, sumRef } from './ref/reduce.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// Tolerances. The kernels accumulate in f32 with a near-pairwise order (16 sequential terms per thread,
// then trees), so the error is a few f32 ulps of sum |x|, independent of n: we allow 2e-6 * sum|x| for
// the sums and 2e-6 relative for the L2 norm (a sum of positive terms). max |x| and counts are exact.
// f16 inputs are read back after rounding and used as the reference's inputs, so f16 storage changes
// nothing in the accumulation and the same tolerances apply.
const SUM_RTOL = 2e-6;

type Reduced = { sum: number; mean: number; l2: number; maxAbs: number; count: number };

async function reduceAll(data: Float32Array, shape: number[], dtype: 'f32' | 'f16' = 'f32'): Promise<{ got: Reduced; input: Float32Array; dispatches: number }> {
  const x = engine.tensor(data, shape, dtype);
  const input = dtype === 'f32' ? data : await x.read();
  const { result, report } = await runProgram(engine, 'reduce', (rec) => ({
    sum: red.sum(rec, x),
    mean: red.mean(rec, x),
    l2: red.l2Norm(rec, x),
    maxAbs: red.maxAbs(rec, x),
    count: red.nonFiniteCount(rec, x),
  }));
  const got = {} as Reduced;
  for (const [k, t] of Object.entries(result)) {
    expect(t.shape).toEqual([1]);
    expect(t.dtype).toBe('f32');
    got[k as keyof Reduced] = (await t.read())[0]!;
    t.dispose();
  }
  x.dispose();
  return { got, input, dispatches: report.dispatches };
}

function expectReductions(got: Reduced, x: Float32Array, what: string): void {
  const n = x.length;
  const abs = sumAbsRef(x);
  expect(Math.abs(got.sum - sumRef(x)), `${what}: sum ${got.sum} vs ${sumRef(x)}`).toBeLessThanOrEqual(SUM_RTOL * abs + 1e-30);
  expect(Math.abs(got.mean - sumRef(x) / n), `${what}: mean`).toBeLessThanOrEqual((SUM_RTOL * abs) / n + 1e-30);
  const l2 = l2NormRef(x);
  expect(Math.abs(got.l2 - l2), `${what}: l2 ${got.l2} vs ${l2}`).toBeLessThanOrEqual(SUM_RTOL * l2);
  expect(got.maxAbs, `${what}: maxAbs`).toBe(Math.fround(maxAbsRef(x)));
  expect(got.count, `${what}: nonFiniteCount`).toBe(0);
}

describe('reductions (f32)', () => {
  for (const n of [1, 7, 1031, 65536, 65537, 1_000_003]) {
    it(`sum, mean, l2Norm, maxAbs, nonFiniteCount on ${n} elements`, async () => {
      const data = randomData(n, 100 + n, -3, 2);
      const { got } = await reduceAll(data, [n]);
      expectReductions(got, data, `n=${n}`);
    });
  }

  it('positive data over 1e6 elements: relative error of the sum ~1e-7, not ~n * eps', async () => {
    const n = 1_048_583;
    const data = randomData(n, 77, 0, 1);
    const { got } = await reduceAll(data, [n]);
    const ref = sumRef(data);
    const rel = Math.abs(got.sum - ref) / ref;
    console.log(`sum of ${n} positive values: relative error ${rel.toExponential(2)}`);
    expect(rel).toBeLessThan(1e-6);
    expect(Math.abs(got.mean - ref / n) / (ref / n)).toBeLessThan(1e-6);
  });

  it('16.8M elements (the size of an f32 512x512x64 activation), two stages, still ~1e-6 relative', async () => {
    const n = 4096 * 4096 + 4097;
    const data = randomData(n, 5, 0, 1);
    const { got, dispatches } = await reduceAll(data, [n]);
    expect(dispatches).toBe(5 * 2);
    const ref = sumRef(data);
    expect(Math.abs(got.sum - ref) / ref).toBeLessThan(1e-6);
    expect(Math.abs(got.l2 - l2NormRef(data)) / l2NormRef(data)).toBeLessThan(1e-6);
    expect(got.maxAbs).toBe(Math.fround(maxAbsRef(data)));
    expect(got.count).toBe(0);
  });

  it('several partial stages (one element per thread: 70001 -> 274 -> 2 -> 1)', async () => {
    const n = 70_001;
    const data = randomData(n, 41, -2, 3);
    data[n - 1] = 1e6; // the largest value sits in the last partial of every stage
    const bad = data.slice();
    const bits = new Uint32Array(bad.buffer);
    bits[7] = 0x7fc00000;
    bits[n - 2] = 0xff800000;
    const x = engine.tensor(data, [n]);
    const xb = engine.tensor(bad, [n]);
    const { result, report } = await runProgram(engine, 'stages', (rec) => [
      ...(['sum', 'l2', 'maxabs'] as const).map((k) => red.reduceTensor(rec, x, k, { per: 1 })),
      red.reduceTensor(rec, xb, 'count', { per: 1 }),
    ]);
    expect(report.dispatches).toBe(4 * 3);
    const [s, l2, m, c] = await Promise.all(result.map(async (t) => (await t.read())[0]!));
    expect(Math.abs(s! - sumRef(data))).toBeLessThanOrEqual(SUM_RTOL * sumAbsRef(data));
    expect(Math.abs(l2! - l2NormRef(data)) / l2NormRef(data)).toBeLessThan(SUM_RTOL);
    expect(m).toBe(1e6);
    expect(c).toBe(2);
    x.dispose();
    xb.dispose();
  });

  it('multi-dimensional input reduces over everything', async () => {
    const shape = [2, 320, 3, 5];
    const data = randomData(2 * 320 * 15, 12);
    const { got } = await reduceAll(data, shape);
    expectReductions(got, data, '[2, 320, 3, 5]');
  });

  it('l2Norm does not overflow or underflow (values whose squares leave the f32 range)', async () => {
    for (const s of [1e30, 1e-30]) {
      const data = randomData(5000, 8).map((v) => v * s);
      const { got } = await reduceAll(data, [5000]);
      const ref = l2NormRef(data);
      expect(Number.isFinite(got.l2) && got.l2 > 0, `l2 at scale ${s}: ${got.l2}`).toBe(true);
      expect(Math.abs(got.l2 - ref) / ref, `l2 at scale ${s}`).toBeLessThan(SUM_RTOL);
    }
    const { got } = await reduceAll(new Float32Array([3e30, -4e30]), [2]);
    expect(Math.abs(got.l2 - 5e30) / 5e30).toBeLessThan(1e-6);
    const zeros = await reduceAll(new Float32Array(9), [9]);
    expect(zeros.got.l2).toBe(0);
    expect(zeros.got.maxAbs).toBe(0);
  });
});

describe('nonFiniteCount and checkFinite', () => {
  // Bit patterns: +Inf, -Inf, quiet NaN, negative signalling NaN, a NaN with a low payload.
  const BAD = [0x7f800000, 0xff800000, 0x7fc00000, 0xff800001, 0x7f800001];
  for (const n of [1, 7, 1031, 1_000_003]) {
    it(`counts NaN/Inf bit patterns at the first, last, middle and chunk-boundary positions (n=${n})`, async () => {
      const data = randomData(n, n);
      const bits = new Uint32Array(data.buffer);
      const chunk = red.reduceChunk(engine);
      const spots = [...new Set([0, n - 1, n >> 1, chunk - 1, chunk, 2 * chunk - 1].filter((i) => i < n))];
      spots.forEach((i, k) => (bits[i] = BAD[k % BAD.length]!));
      // Huge finite values (f32 max) and denormals are not counted.
      if (n > 20) {
        bits[3] = 0x7f7fffff;
        bits[5] = 0x00000001;
      }
      const x = engine.tensor(data, [n]);
      const { result } = await runProgram(engine, 'count', (rec) => red.nonFiniteCount(rec, x));
      expect((await result.read())[0]).toBe(spots.length);
      expect(nonFiniteRef(data)).toBe(spots.length);
      await expect(red.checkFinite(engine, x, 'unet/out')).rejects.toThrow(new RegExp(`unet/out: ${spots.length} of ${n} elements`));
      x.dispose();
    });
  }

  for (const dtype of ['f32', 'f16'] as const) {
    it(`nonFiniteCountInto counts a ${dtype} tensor larger than one binding range by range (binding limit lowered to 4 KiB)`, async (ctx) => {
      if (dtype === 'f16' && !engine.hasF16) {
        console.log('SKIP f16 ranged count: this adapter has no shader-f16');
        ctx.skip();
      }
      const limits = engine.limits as { maxStorageBufferBindingSize: number };
      const saved = limits.maxStorageBufferBindingSize;
      const n = 10_007; // 40 KB in f32, 20 KB in f16: several ranges, the last one partial
      const data = randomData(n, 5);
      const spots = [0, 1023, 1024, 2047, 2048, 5000, n - 1];
      for (const i of spots) data[i] = i % 2 ? NaN : -Infinity;
      const x = engine.tensor(data, [n], dtype);
      const counts = engine.tensor(new Float32Array(3), [3]);
      limits.maxStorageBufferBindingSize = 4096;
      try {
        await runProgram(engine, 'ranged_count', (rec) => {
          red.nonFiniteCountInto(rec, x, counts, 1);
          return counts;
        });
      } finally {
        limits.maxStorageBufferBindingSize = saved;
      }
      expect(Array.from(await counts.read())).toEqual([0, spots.length, 0]);
      x.dispose();
      counts.dispose();
    });
  }

  it('checkFinite resolves for finite tensors', async () => {
    const x = engine.tensor(randomData(1031, 3, -1e30, 1e30), [1031]);
    await expect(red.checkFinite(engine, x, 'latent')).resolves.toBeUndefined();
    x.dispose();
  });
});

describe('f16 storage', () => {
  it('reductions over f16 inputs (f32 accumulation)', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 reductions: this adapter has no shader-f16');
      ctx.skip();
    }
    for (const n of [1, 7, 1031, 1_000_003]) {
      const { got, input } = await reduceAll(randomData(n, n + 3, -4, 4), [n], 'f16');
      expectReductions(got, input, `f16 n=${n}`);
    }
  });

  it('nonFiniteCount on f16 at even and odd positions (both halves of a 32-bit word)', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 nonFiniteCount: this adapter has no shader-f16');
      ctx.skip();
    }
    for (const n of [1, 7, 1031, 1_000_003]) {
      const data = randomData(n, n + 1);
      const spots = [...new Set([0, n - 1, n >> 1, (n >> 1) + 1, red.reduceChunk(engine)].filter((i) => i < n))];
      // NaN, +-Inf, and 1e5, which overflows f16 to Inf on upload.
      spots.forEach((i, k) => (data[i] = [NaN, Infinity, -Infinity, 1e5][k % 4]!));
      if (n > 20) data[3] = 65504; // f16 max is finite
      const x = engine.tensor(data, [n], 'f16');
      const { result } = await runProgram(engine, 'count16', (rec) => red.nonFiniteCount(rec, x));
      expect((await result.read())[0], `f16 n=${n}`).toBe(spots.length);
      await expect(red.checkFinite(engine, x, 'f16 tensor')).rejects.toThrow(/f16 tensor: \d+ of/);
      x.dispose();
    }
  });
});

// NaN/Inf propagation. Expected values are IEEE/PyTorch semantics written out by hand: torch.sum,
// torch.linalg.vector_norm and x.abs().max() all return NaN when any element is NaN, and +Inf when
// an element is +-Inf and none is NaN (sum: Inf + -Inf = NaN).
describe('reductions propagate NaN and Inf', () => {
  const cases: { name: string; data: number[]; sum: number; l2: number; maxAbs: number; count: number }[] = [
    { name: '[3, NaN, 4]', data: [3, NaN, 4], sum: NaN, l2: NaN, maxAbs: NaN, count: 1 },
    { name: 'all NaN', data: [NaN, NaN, NaN, NaN, NaN], sum: NaN, l2: NaN, maxAbs: NaN, count: 5 },
    { name: '[1, +Inf]', data: [1, Infinity], sum: Infinity, l2: Infinity, maxAbs: Infinity, count: 1 },
    { name: '[1, -Inf, 2]', data: [1, -Infinity, 2], sum: -Infinity, l2: Infinity, maxAbs: Infinity, count: 1 },
    { name: '[+Inf, -Inf]', data: [Infinity, -Infinity], sum: NaN, l2: Infinity, maxAbs: Infinity, count: 2 },
    { name: '[Inf, NaN, 5]', data: [Infinity, NaN, 5], sum: NaN, l2: NaN, maxAbs: NaN, count: 2 },
    { name: '[NaN, Inf, 5] (NaN first)', data: [NaN, Infinity, 5], sum: NaN, l2: NaN, maxAbs: NaN, count: 2 },
  ];
  for (const c of cases) {
    it(`sum, mean, l2Norm, maxAbs, nonFiniteCount of ${c.name}`, async () => {
      const { got } = await reduceAll(new Float32Array(c.data), [c.data.length]);
      expect(got.sum, 'sum').toBe(c.sum);
      expect(got.mean, 'mean').toBe(c.sum / c.data.length);
      expect(got.l2, 'l2Norm').toBe(c.l2);
      expect(got.maxAbs, 'maxAbs').toBe(c.maxAbs);
      expect(got.count, 'nonFiniteCount').toBe(c.count);
    });
  }

  // One element per thread makes 70001 elements three partial stages; the bad value sits in the very
  // last element, so it travels through the last workgroup of every stage. A negative-signed NaN and
  // one with a low payload are NaNs too.
  for (const [name, bitsOf, expectNaN] of [
    ['quiet NaN', 0x7fc00000, true],
    ['negative NaN with payload 1', 0xff800001, true],
    ['-Inf', 0xff800000, false],
  ] as const) {
    it(`${name} in the last element of a multi-stage reduction`, async () => {
      const n = 70_001;
      const data = randomData(n, 17, -2, 2);
      new Uint32Array(data.buffer)[n - 1] = bitsOf;
      const x = engine.tensor(data, [n]);
      const { result, report } = await runProgram(engine, 'stages-nan', (rec) =>
        (['sum', 'l2', 'maxabs', 'count'] as const).map((k) => red.reduceTensor(rec, x, k, { per: 1 })),
      );
      expect(report.dispatches).toBe(4 * 3);
      const [s, l2, m, c] = await Promise.all(result.map(async (t) => (await t.read())[0]!));
      expect(s).toBe(expectNaN ? NaN : -Infinity);
      expect(l2).toBe(expectNaN ? NaN : Infinity);
      expect(m).toBe(expectNaN ? NaN : Infinity);
      expect(c).toBe(1);
      result.forEach((t) => t.dispose());
      x.dispose();
    });
  }

  it('NaN in the first element of a default (PER 256) two-stage reduction over 1M elements', async () => {
    const n = 1_000_003;
    const data = randomData(n, 23, -1, 1);
    data[0] = NaN;
    data[n - 1] = Infinity;
    const { got } = await reduceAll(data, [n]);
    expect(got).toEqual({ sum: NaN, mean: NaN, l2: NaN, maxAbs: NaN, count: 2 });
  });

  it('f16 inputs: NaN, +-Inf and values that overflow f16 propagate', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 NaN/Inf propagation: this adapter has no shader-f16');
      ctx.skip();
    }
    const withNaN = await reduceAll(new Float32Array([3, NaN, 4]), [3], 'f16');
    expect(withNaN.got).toEqual({ sum: NaN, mean: NaN, l2: NaN, maxAbs: NaN, count: 1 });
    // 1e5 overflows f16 to +Inf on upload.
    const withInf = await reduceAll(new Float32Array([1, 1e5, -2]), [3], 'f16');
    expect(withInf.got).toEqual({ sum: Infinity, mean: Infinity, l2: Infinity, maxAbs: Infinity, count: 1 });
    const n = 70_001;
    const data = randomData(n, 29, -2, 2);
    data[n - 1] = -Infinity;
    const big = await reduceAll(data, [n], 'f16');
    expect(big.got).toEqual({ sum: -Infinity, mean: -Infinity, l2: Infinity, maxAbs: Infinity, count: 1 });
  });
});
