import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { concatChannels, sliceChannels } from '../src/engine/ops/layout.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { concatRef, sliceRef } from './ref/layout.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// Pure copies: exact in every dtype.
const EXACT: Tolerance = { atol: 0, rtol: 0 };

const size = (s: number[]) => s.reduce((p, d) => p * d, 1);

describe('concatChannels', () => {
  const cases: Array<{ batch: number; cs: number[]; inner: number[] }> = [
    { batch: 2, cs: [3, 5, 1], inner: [3, 5] },
    { batch: 1, cs: [7], inner: [2, 2] },
    { batch: 2, cs: [320, 640], inner: [2, 3] }, // SD skip concat, small spatial
    { batch: 2, cs: [1280, 1280, 640], inner: [1, 1] },
    { batch: 2, cs: [3, 1], inner: [] }, // rank 2: [B, C]
    { batch: 3, cs: [2, 3, 4], inner: [2, 1, 3] }, // rank 5
  ];
  for (const { batch, cs, inner } of cases) {
    it(`batch ${batch}, channels ${cs.join('+')}, inner ${JSON.stringify(inner)}`, async () => {
      const n = size(inner);
      const parts = cs.map((c, i) => ({ data: randomData(batch * c * n, 100 + i + c), c }));
      const ts = parts.map((p) => engine.tensor(p.data, [batch, p.c, ...inner]));
      const { result } = await runProgram(engine, 'concat', (rec) => concatChannels(rec, ts));
      expect(result.shape).toEqual([batch, cs.reduce((s, c) => s + c, 0), ...inner]);
      expectClose(await result.read(), concatRef(parts, batch, n), EXACT, 'concat');
      for (const t of [...ts, result]) t.dispose();
    });
  }

  it('rejects inputs that do not agree outside dim 1', async () => {
    const a = engine.zeros([2, 3, 4, 4]);
    const b = engine.zeros([1, 3, 4, 4]);
    const c = engine.zeros([2, 3, 4, 5]);
    const d = engine.zeros([2, 3, 4]);
    const e = engine.zeros([5]);
    await expect(runProgram(engine, 'bad', (rec) => concatChannels(rec, [a, b]))).rejects.toThrow(
      /concatChannels: shapes must agree except in dim 1 \(got \[2, 3, 4, 4\], \[1, 3, 4, 4\]\)/,
    );
    await expect(runProgram(engine, 'bad', (rec) => concatChannels(rec, [a, c]))).rejects.toThrow(/concatChannels: shapes must agree/);
    await expect(runProgram(engine, 'bad', (rec) => concatChannels(rec, [a, d]))).rejects.toThrow(/concatChannels: shapes must agree/);
    await expect(runProgram(engine, 'bad', (rec) => concatChannels(rec, [e]))).rejects.toThrow(/concatChannels: inputs need rank >= 2/);
    await expect(runProgram(engine, 'bad', (rec) => concatChannels(rec, []))).rejects.toThrow(/concatChannels: no inputs/);
    expect(engine.activeRecorder).toBeNull();
    for (const t of [a, b, c, d, e]) t.dispose();
  });
});

describe('sliceChannels', () => {
  const cases: Array<{ shape: number[]; start: number; count: number }> = [
    { shape: [2, 7, 3, 3], start: 2, count: 4 },
    { shape: [2, 7, 3, 3], start: 0, count: 7 },
    { shape: [2, 7, 3, 3], start: 6, count: 1 },
    { shape: [2, 2560], start: 1280, count: 1280 }, // rank 2 (e.g. a chunked time embedding)
    { shape: [1, 1280, 2, 2], start: 320, count: 640 },
  ];
  for (const { shape, start, count } of cases) {
    it(`${JSON.stringify(shape)} [${start}, ${start + count})`, async () => {
      const data = randomData(size(shape), start + count);
      const x = engine.tensor(data, shape);
      const { result } = await runProgram(engine, 'slice', (rec) => sliceChannels(rec, x, start, count));
      expect(result.shape).toEqual([shape[0], count, ...shape.slice(2)]);
      expectClose(await result.read(), sliceRef(data, shape[0]!, shape[1]!, size(shape.slice(2)), start, count), EXACT, 'slice');
      x.dispose();
      result.dispose();
    });
  }

  it('slice undoes concat', async () => {
    const a = engine.tensor(randomData(2 * 3 * 4, 1), [2, 3, 4]);
    const b = engine.tensor(randomData(2 * 5 * 4, 2), [2, 5, 4]);
    const { result } = await runProgram(engine, 'roundtrip', (rec) => {
      const cat = concatChannels(rec, [a, b]);
      return [sliceChannels(rec, cat, 0, 3), sliceChannels(rec, cat, 3, 5)];
    });
    expectClose(await result[0]!.read(), await a.read(), EXACT, 'first');
    expectClose(await result[1]!.read(), await b.read(), EXACT, 'second');
  });

  it('rejects channel ranges outside the input', async () => {
    const x = engine.zeros([2, 7, 3]);
    await expect(runProgram(engine, 'bad', (rec) => sliceChannels(rec, x, 5, 3))).rejects.toThrow(
      /sliceChannels: channels \[5, 8\) are outside the 7 channels of \[2, 7, 3\]/,
    );
    await expect(runProgram(engine, 'bad', (rec) => sliceChannels(rec, x, -1, 2))).rejects.toThrow(/sliceChannels: channels/);
    const flat = engine.zeros([7]);
    await expect(runProgram(engine, 'bad', (rec) => sliceChannels(rec, flat, 0, 1))).rejects.toThrow(/sliceChannels: input needs rank >= 2/);
    expect(engine.activeRecorder).toBeNull();
  });
});

describe('layout f16', () => {
  it('concat and slice in f16 (needs shader-f16)', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 layout: this adapter has no shader-f16');
      ctx.skip();
    }
    // Odd element counts per channel exercise neighbouring 16-bit writes from different threads.
    const parts = [3, 5, 1].map((c, i) => ({ data: randomData(2 * c * 5, 7 + i), c }));
    const ts = parts.map((p) => engine.tensor(p.data, [2, p.c, 5], 'f16'));
    const stored = await Promise.all(ts.map((t) => t.read()));
    const { result } = await runProgram(engine, 'f16 layout', (rec) => {
      const cat = concatChannels(rec, ts);
      return [cat, sliceChannels(rec, cat, 1, 7)];
    });
    expect(result[0]!.dtype).toBe('f16');
    const ref = concatRef(parts.map((p, i) => ({ data: stored[i]!, c: p.c })), 2, 5);
    expectClose(await result[0]!.read(), ref, EXACT, 'concat f16');
    expectClose(await result[1]!.read(), sliceRef(ref, 2, 9, 5, 1, 7), EXACT, 'slice f16');
    const mixed = engine.zeros([2, 1, 5]);
    await expect(runProgram(engine, 'bad', (rec) => concatChannels(rec, [ts[0]!, mixed]))).rejects.toThrow(/concatChannels: dtypes differ \(f16, f32\)/);
  });
});
