// pad2d (reflect / replicate / zeros) against the CPU reference on odd shapes; a pure copy, so exact.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { pad2d, type PadMode } from '../src/engine/ops/pad.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';
import { pad2dRef } from './ref/pad.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const EXACT = { atol: 0, rtol: 0 };

describe('pad2d', () => {
  const cases: Array<[PadMode, number[], [number, number, number, number]]> = [
    ['reflect', [2, 3, 7, 5], [3, 2, 4, 1]],
    ['reflect', [1, 1, 2, 9], [1, 1, 8, 0]], // the largest reflect pad for H = 2 / W = 9
    ['reflect', [1, 3, 33, 31], [30, 30, 30, 30]], // SILO's blur pad on an odd image
    ['replicate', [2, 2, 1, 3], [2, 3, 4, 5]], // H = 1
    ['zeros', [1, 3, 5, 6], [1, 0, 2, 3]],
  ];
  for (const [mode, shape, pad] of cases) {
    it(`${mode} pads [${shape.join(', ')}] by [${pad.join(', ')}]`, async () => {
      const x = randomData(shape.reduce((a, b) => a * b, 1), shape.length + pad[0]);
      const tx = engine.tensor(x, shape);
      const { result } = await runProgram(engine, 'pad', (rec) => pad2d(rec, tx, pad, mode));
      expect(result.shape).toEqual([shape[0], shape[1], shape[2]! + pad[0] + pad[1], shape[3]! + pad[2] + pad[3]]);
      expectClose(await result.read(), pad2dRef(x, shape, pad, mode), EXACT, `${mode} pad`);
      tx.dispose();
      result.dispose();
    });
  }

  it('f16 reflect pad is exact', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP pad2d f16: adapter has no shader-f16');
      ctx.skip();
    }
    const shape = [1, 2, 5, 4];
    const x = Float32Array.from(randomData(40, 9), (v) => Math.round(v * 64) / 64); // exact in f16
    const tx = engine.tensor(x, shape, 'f16');
    const { result } = await runProgram(engine, 'pad f16', (rec) => pad2d(rec, tx, [2, 1, 3, 3], 'reflect'));
    expectClose(await result.read(), pad2dRef(x, shape, [2, 1, 3, 3], 'reflect'), EXACT, 'f16 reflect');
    tx.dispose();
    result.dispose();
  });

  it('rejects a reflect pad as large as the axis, naming the shape', async () => {
    const tx = engine.tensor(new Float32Array(12), [1, 1, 3, 4]);
    await expect(runProgram(engine, 'bad pad', (rec) => pad2d(rec, tx, [3, 0, 0, 0]))).rejects.toThrow(/smaller than the input \[1, 1, 3, 4\]/);
    tx.dispose();
  });
});
