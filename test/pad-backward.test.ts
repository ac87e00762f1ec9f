// pad2dBackward (reflect / replicate / zeros) against the scatter-form CPU reference on awkward shapes,
// and the adjoint identity <pad(x), g> == <x, pad^T(g)> with the forward pad2d.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { pad2d, type PadMode } from '../src/engine/ops/pad.js';
import { pad2dBackward } from '../src/engine/ops/pad-backward.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { pad2dBackwardRef } from './ref/pad-backward.js';
import { dot } from './ref/elementwise-backward.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// Each input element sums at most 9 (reflect) or (pad + 1)^2 (replicate corners) values in [-1, 1];
// f32 accumulation in a different order from the f64 reference: a few ulps of a sum of <= 100 terms.
const TOL: Tolerance = { atol: 2e-6, rtol: 1e-6 };

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

describe('pad2d backward', () => {
  const cases: Array<[PadMode, number[], [number, number, number, number]]> = [
    ['reflect', [2, 3, 7, 5], [3, 2, 4, 1]],
    ['reflect', [1, 1, 2, 9], [1, 1, 8, 0]], // largest reflect pads: every border row folds onto an edge neighbour
    ['reflect', [1, 3, 37, 29], [12, 12, 12, 12]], // SILO's blur support radius on an odd image
    ['reflect', [1, 2, 1, 6], [0, 0, 5, 2]], // H = 1 (no vertical pad allowed)
    ['replicate', [2, 2, 1, 3], [2, 3, 4, 5]], // H = 1: every row of the output reads the single row
    ['replicate', [1, 1, 4, 1], [6, 1, 0, 7]],
    ['zeros', [1, 3, 5, 6], [1, 0, 2, 3]],
  ];
  for (const [mode, shape, pad] of cases) {
    it(`${mode}: [${shape.join(', ')}] padded by [${pad.join(', ')}]`, async () => {
      const outShape = [shape[0]!, shape[1]!, shape[2]! + pad[0] + pad[1], shape[3]! + pad[2] + pad[3]];
      const gd = randomData(size(outShape), 100 + size(shape));
      const xd = randomData(size(shape), 7 + pad[0]);
      const tg = engine.tensor(gd, outShape);
      const tx = engine.tensor(xd, shape);
      const { result } = await runProgram(engine, 'pad backward', (rec) => [pad2dBackward(rec, tg, shape, pad, mode), pad2d(rec, tx, pad, mode)]);
      const [gx, px] = result;
      expect(gx!.shape).toEqual(shape);
      const gxd = await gx!.read();
      expectClose(gxd, pad2dBackwardRef(gd, shape, pad, mode), TOL, `${mode} pad backward`);
      // <pad(x), g> vs <x, pad^T g>: f64 dots of f32 values; the only error is pad^T's f32 sums
      // (relative ~1e-7 per element), so 1e-6 of ||x|| ||pad^T g|| bounds the difference.
      const lhs = dot(await px!.read(), gd);
      const rhs = dot(xd, gxd);
      let nx = 0;
      let ng = 0;
      for (const v of xd) nx += v * v;
      for (const v of gxd) ng += v * v;
      expect(Math.abs(lhs - rhs)).toBeLessThanOrEqual(1e-6 * Math.sqrt(nx * ng));
      for (const t of [tg, tx, gx!, px!]) t.dispose();
    });
  }

  it('rejects a gradient of the wrong size and a reflect pad as large as the axis, naming the shapes', async () => {
    const tg = engine.tensor(new Float32Array(2 * 3 * 9 * 9), [2, 3, 9, 9]);
    await expect(runProgram(engine, 'bad', (rec) => pad2dBackward(rec, tg, [2, 3, 5, 5], 1))).rejects.toThrow(
      /gradOut \[2, 3, 9, 9\] must be \[2, 3, 7, 7\] for input \[2, 3, 5, 5\]/,
    );
    await expect(runProgram(engine, 'bad', (rec) => pad2dBackward(rec, tg, [2, 3, 3, 3], 3))).rejects.toThrow(/smaller than the input \[2, 3, 3, 3\]/);
    tg.dispose();
  });
});
