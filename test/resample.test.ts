import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { upsampleNearest2x, resizeBilinear } from '../src/engine/ops/resample.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { nearest2xRef, bilinearRef } from './ref/resample.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// Nearest is a copy: exact. Bilinear: two f32 lerps of values in [-1, 1] with f32 weights
// (the reference is f64 with the same f32 scale): 1e-6 absolute + relative.
const EXACT: Tolerance = { atol: 0, rtol: 0 };
const TOL: Tolerance = { atol: 1e-6, rtol: 1e-6 };
// f16: inputs stored in f16 (the reference uses the stored values), one f16 rounding of the output.
const F16_TOL: Tolerance = { atol: 1e-3, rtol: 2e-3 };

describe('upsampleNearest2x', () => {
  for (const shape of [[2, 3, 5, 7], [1, 1, 1, 1], [2, 320, 4, 3]]) {
    it(`${JSON.stringify(shape)}`, async () => {
      const [n, c, h, w] = shape as [number, number, number, number];
      const data = randomData(n * c * h * w, h * 31 + w);
      const x = engine.tensor(data, shape);
      const { result } = await runProgram(engine, 'nearest', (rec) => upsampleNearest2x(rec, x));
      expect(result.shape).toEqual([n, c, 2 * h, 2 * w]);
      expectClose(await result.read(), nearest2xRef(data, n * c, h, w), EXACT, 'nearest');
      x.dispose();
      result.dispose();
    });
  }
});

describe('resizeBilinear (torch align_corners=False, antialias=False)', () => {
  it("matches torch's known 2x2 -> 4x4 and 4x4 -> 2x2 outputs", async () => {
    const a = engine.tensor([0, 1, 2, 3], [1, 1, 2, 2]);
    const b = engine.tensor(Array.from({ length: 16 }, (_, i) => i), [1, 1, 4, 4]);
    const { result } = await runProgram(engine, 'bilinear literal', (rec) => [resizeBilinear(rec, a, 4, 4), resizeBilinear(rec, b, 2, 2)]);
    // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=(4, 4), mode='bilinear')
    const up = [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3];
    expectClose(await result[0]!.read(), up, EXACT, '2x2 -> 4x4');
    expectClose(await result[1]!.read(), [2.5, 4.5, 10.5, 12.5], EXACT, '4x4 -> 2x2');
  });

  const cases: Array<[number[], number, number]> = [
    [[2, 3, 5, 7], 8, 3],
    [[2, 2, 3, 3], 64, 64],
    [[2, 3, 64, 64], 7, 9],
    [[1, 1, 1, 1], 4, 5],
    [[2, 1, 6, 5], 1, 1],
    [[2, 3, 6, 5], 6, 5], // same size: a copy
    [[2, 4, 9, 9], 3, 3], // exact 1/3
    [[2, 640, 4, 4], 8, 8], // SD channel count, exact 2x
    [[1, 1280, 3, 2], 5, 7],
  ];
  for (const [shape, oh, ow] of cases) {
    it(`${JSON.stringify(shape)} -> ${oh}x${ow}`, async () => {
      const [n, c, h, w] = shape as [number, number, number, number];
      const data = randomData(n * c * h * w, oh * 13 + ow + h);
      const x = engine.tensor(data, shape);
      const { result } = await runProgram(engine, 'bilinear', (rec) => resizeBilinear(rec, x, oh, ow));
      expect(result.shape).toEqual([n, c, oh, ow]);
      expectClose(await result.read(), bilinearRef(data, n * c, h, w, oh, ow), TOL, `bilinear ${shape} -> ${oh}x${ow}`);
      x.dispose();
      result.dispose();
    });
  }

  it('f16 storage (needs shader-f16)', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 resample: this adapter has no shader-f16');
      ctx.skip();
    }
    const x = engine.tensor(randomData(2 * 3 * 5 * 7, 77, -4, 4), [2, 3, 5, 7], 'f16');
    const xr = await x.read();
    const { result } = await runProgram(engine, 'f16 resample', (rec) => [resizeBilinear(rec, x, 8, 3), upsampleNearest2x(rec, x)]);
    expect(result[0]!.dtype).toBe('f16');
    expectClose(await result[0]!.read(), bilinearRef(xr, 6, 5, 7, 8, 3), F16_TOL, 'bilinear f16');
    expectClose(await result[1]!.read(), nearest2xRef(xr, 6, 5, 7), EXACT, 'nearest f16');
  });

  it('rejects bad arguments with clear messages', async () => {
    const flat = engine.zeros([2, 3, 5]);
    const x = engine.zeros([1, 1, 2, 2]);
    await expect(runProgram(engine, 'bad', (rec) => upsampleNearest2x(rec, flat))).rejects.toThrow(/upsampleNearest2x: expected an NCHW tensor, got shape \[2, 3, 5\]/);
    await expect(runProgram(engine, 'bad', (rec) => resizeBilinear(rec, flat, 2, 2))).rejects.toThrow(/resizeBilinear: expected an NCHW tensor/);
    await expect(runProgram(engine, 'bad', (rec) => resizeBilinear(rec, x, 0, 2))).rejects.toThrow(/resizeBilinear: output size must be positive integers, got 0x2/);
    expect(engine.activeRecorder).toBeNull();
  });
});
