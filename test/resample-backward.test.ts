import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { upsampleNearest2xBackward, resizeBilinearBackward } from '../src/engine/ops/resample-backward.js';
import { concatChannelsBackward, sliceChannelsBackward } from '../src/engine/ops/layout-backward.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { nearest2xBackwardRef, bilinearBackwardRef, placeChannelsRef } from './ref/resample-backward.js';
import { nearest2xRef, bilinearRef } from './ref/resample.js';
import { sliceRef, concatRef } from './ref/layout.js';
import { dot } from './ref/elementwise-backward.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// Sums of a few O(1) terms (4 for nearest; bilinear up to ~(2 in/out)^2 weighted terms) in f32:
// ~1e-7 relative each. The weights are recomputed in f32 exactly as the forward does, and the
// reference uses the same f32 source coordinates, so 1e-5 covers the upsampling-by-4 cases.
const TOL: Tolerance = { atol: 1e-5, rtol: 1e-5 };
// Layout gradients are copies: exact.
const EXACT: Tolerance = { atol: 0, rtol: 0 };

describe('upsampleNearest2x backward', () => {
  for (const shape of [[1, 1, 1, 1], [2, 3, 5, 7], [1, 2, 16, 9]]) {
    it(`input ${shape.join('x')}`, async () => {
      const [n, c, h, w] = shape as [number, number, number, number];
      const gd = randomData(n * c * 4 * h * w, h * w);
      const g = engine.tensor(gd, [n, c, 2 * h, 2 * w]);
      const { result } = await runProgram(engine, 'upb', (rec) => upsampleNearest2xBackward(rec, g, shape));
      expect(result.shape).toEqual(shape);
      expectClose(await result.read(), nearest2xBackwardRef(gd, n * c, h, w), TOL, `nearest ${shape.join('x')}`);
      g.dispose();
      result.dispose();
    });
  }
});

const BILINEAR: Array<[number[], number, number]> = [
  [[1, 1, 1, 1], 1, 1],
  [[2, 3, 5, 7], 10, 14], // x2
  [[1, 2, 5, 7], 3, 4], // down, non-integer
  [[2, 1, 4, 4], 17, 9], // up, non-integer, mixed
  [[1, 1, 1, 6], 7, 2], // from one row
  [[1, 2, 13, 11], 13, 11], // identity size
  [[1, 1, 64, 40], 8, 5], // down by 8
  [[1, 1, 6, 5], 24, 20], // up by 4
];

describe('resizeBilinear backward', () => {
  for (const [shape, oh, ow] of BILINEAR) {
    it(`input ${shape.join('x')} -> ${oh}x${ow}`, async () => {
      const [n, c, h, w] = shape as [number, number, number, number];
      const gd = randomData(n * c * oh * ow, oh * 31 + ow);
      const g = engine.tensor(gd, [n, c, oh, ow]);
      const { result } = await runProgram(engine, 'rbb', (rec) => resizeBilinearBackward(rec, g, shape));
      expect(result.shape).toEqual(shape);
      expectClose(await result.read(), bilinearBackwardRef(gd, n * c, h, w, oh, ow), TOL, `bilinear ${shape.join('x')} -> ${oh}x${ow}`);
      g.dispose();
      result.dispose();
    });
  }

  it('rejects a gradOut whose batch or channels differ from the input', async () => {
    const g = engine.tensor(randomData(8, 1), [1, 2, 2, 2]);
    await expect(runProgram(engine, 'bad', (rec) => resizeBilinearBackward(rec, g, [1, 3, 4, 4]))).rejects.toThrow(/gradOut \[1, 2, 2, 2\] must be \[1, 3, 2, 2\]/);
    g.dispose();
  });
});

describe('channel layout backward', () => {
  it('concat: slices of gradOut for [2, c, 3, 5] with c = 1, 4, 0, 3', async () => {
    const channels = [1, 4, 0, 3];
    const inner = 15;
    const gd = randomData(2 * 8 * inner, 3);
    const g = engine.tensor(gd, [2, 8, 3, 5]);
    const { result } = await runProgram(engine, 'catb', (rec) => concatChannelsBackward(rec, g, channels));
    let off = 0;
    for (const [i, c] of channels.entries()) {
      expect(result[i]!.shape).toEqual([2, c, 3, 5]);
      expectClose(await result[i]!.read(), sliceRef(gd, 2, 8, inner, off, c), EXACT, `concat part ${i}`);
      off += c;
      result[i]!.dispose();
    }
    g.dispose();
  });

  it('slice: zero-padded placement, rank 2 and 4, first, middle and last channels', async () => {
    for (const [shape, start, count] of [
      [[3, 7], 0, 2],
      [[2, 5, 3, 3], 2, 3],
      [[1, 4, 1, 7], 3, 1],
    ] as Array<[number[], number, number]>) {
      const inner = shape.slice(2).reduce((p, d) => p * d, 1);
      const gShape = shape.slice();
      gShape[1] = count;
      const gd = randomData(shape[0]! * count * inner, start + 1);
      const g = engine.tensor(gd, gShape);
      const { result } = await runProgram(engine, 'sliceb', (rec) => sliceChannelsBackward(rec, g, shape, start));
      expect(result.shape).toEqual(shape);
      expectClose(await result.read(), placeChannelsRef(gd, shape[0]!, shape[1]!, inner, start, count), EXACT, `slice ${shape.join('x')} @${start}`);
      g.dispose();
      result.dispose();
    }
  });

  it('rejects channel counts that do not add up, and slices that do not fit', async () => {
    const g = engine.tensor(randomData(12, 1), [2, 3, 2]);
    await expect(runProgram(engine, 'bad', (rec) => concatChannelsBackward(rec, g, [1, 1]))).rejects.toThrow(/do not add up to the 3 channels/);
    await expect(runProgram(engine, 'bad', (rec) => sliceChannelsBackward(rec, g, [2, 4, 2], 2))).rejects.toThrow(/at channel 2 does not fit/);
    g.dispose();
  });
});

describe('reference VJPs are the adjoints of the forward references', () => {
  // The ops are linear: <v, F u> = <F^T v, u> exactly, up to the f32 rounding of the forward
  // references' outputs (~6e-8 relative per element): 1e-6 * (1 + |value|) is generous.
  const close = (a: number, b: number, what: string) => expect(Math.abs(a - b), `${what}: ${a} vs ${b}`).toBeLessThan(1e-6 * (1 + Math.abs(a)));

  it('nearest, bilinear, slice and concat', () => {
    const u = randomData(2 * 3 * 5 * 7, 1);
    const v2 = randomData(2 * 3 * 10 * 14, 2);
    close(dot(v2, nearest2xRef(u, 6, 5, 7)), dot(nearest2xBackwardRef(v2, 6, 5, 7), u), 'nearest');
    for (const [shape, oh, ow] of BILINEAR) {
      const [n, c, h, w] = shape as [number, number, number, number];
      const x = randomData(n * c * h * w, 3);
      const v = randomData(n * c * oh * ow, 4);
      close(dot(v, bilinearRef(x, n * c, h, w, oh, ow)), dot(bilinearBackwardRef(v, n * c, h, w, oh, ow), x), `bilinear ${shape.join('x')} -> ${oh}x${ow}`);
    }
    const x = randomData(2 * 5 * 9, 5);
    const vs = randomData(2 * 3 * 9, 6);
    close(dot(vs, sliceRef(x, 2, 5, 9, 1, 3)), dot(placeChannelsRef(vs, 2, 5, 9, 1, 3), x), 'slice');
    const a = randomData(2 * 2 * 9, 7);
    const b = randomData(2 * 3 * 9, 8);
    const vc = randomData(2 * 5 * 9, 9);
    const cat = concatRef([{ data: a, c: 2 }, { data: b, c: 3 }], 2, 9);
    close(dot(vc, cat), dot(sliceRef(vc, 2, 5, 9, 0, 2), a) + dot(sliceRef(vc, 2, 5, 9, 2, 3), b), 'concat');
  });
});
