import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { softmax } from '../src/engine/ops/softmax.js';
import { softmaxBackward } from '../src/engine/ops/softmax-backward.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { describeReductions } from './helpers/reductions.js';
import { softmaxBackwardRef, softmaxForward64 } from './ref/softmax-backward.js';
import { dot } from './ref/elementwise-backward.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// GPU vs the f64 VJP evaluated on the same f32 y: dx = scale * y * (g - <g, y>) with |g| <= 1 and
// y a probability: the f32 dot (blocked or a tree, relative ~1e-7 of sum |g y| <= 1) and the products
// give absolute errors ~1e-7 * |scale|: 2e-6 absolute covers scale up to 4.
const TOL: Tolerance = { atol: 2e-6, rtol: 1e-5 };
const LAYOUTS = ['thread', 'group'] as const;

async function check(shape: number[], scale: number, seed: number, what: string): Promise<void> {
  const n = shape.reduce((p, d) => p * d, 1);
  const cols = shape[shape.length - 1]!;
  const yd = Float32Array.from(softmaxForward64(randomData(n, seed, -3, 3), cols, scale));
  const gd = randomData(n, seed + 1);
  const y = engine.tensor(yd, shape);
  const g = engine.tensor(gd, shape);
  const ref = softmaxBackwardRef(yd, gd, cols, scale);
  for (const layout of LAYOUTS) {
    const { result } = await runProgram(engine, 'smb', (rec) => softmaxBackward(rec, y, g, { scale, layout }));
    expect(result.shape).toEqual(shape);
    expectClose(await result.read(), ref, TOL, `${what} (${layout})`);
    result.dispose();
  }
  y.dispose();
  g.dispose();
}

// Every kernel test runs with both workgroup-reduction forms (tree and subgroups).
describeReductions(() => {
  describe('softmax backward', () => {
    it('last dim 1, 7, 77, 1031 with batch dims, scales 1, 0.125, -2.5', async () => {
      await check([3, 1], 1, 1, '[3, 1]');
      await check([2, 5, 7], 0.125, 2, '[2, 5, 7] scale 0.125');
      await check([2, 3, 77], 1, 3, '[2, 3, 77]');
      await check([2, 1031], -2.5, 4, '[2, 1031] scale -2.5');
      await check([1], 1, 5, '[1]');
    });

    it('chains with the forward: gradient of <v, softmax(scale x)> through softmax(x) output', async () => {
      const shape = [4, 9];
      const xd = randomData(36, 7, -2, 2);
      const vd = randomData(36, 8);
      const x = engine.tensor(xd, shape);
      const v = engine.tensor(vd, shape);
      const { result } = await runProgram(engine, 'chain', (rec) => {
        const y = softmax(rec, x, { scale: 0.5 });
        return softmaxBackward(rec, y, v, { scale: 0.5 });
      });
      expectClose(await result.read(), softmaxBackwardRef(softmaxForward64(xd, 9, 0.5), vd, 9, 0.5), TOL, 'forward then backward');
      for (const t of [x, v, result]) t.dispose();
    });

    it('rejects shape mismatches and f16', async () => {
      const y = engine.tensor(randomData(6, 1), [2, 3]);
      const g = engine.tensor(randomData(6, 2), [3, 2]);
      await expect(runProgram(engine, 'bad', (rec) => softmaxBackward(rec, y, g))).rejects.toThrow(/\[2, 3\] and gradOut \[3, 2\]/);
      y.dispose();
      g.dispose();
    });
  });

  describe('softmax reference VJP', () => {
    it('is the adjoint of the f64 forward (central differences)', () => {
      // f64 central differences, h = 1e-5: truncation ~h^2, cancellation ~1e-16 / h.
      const h = 1e-5;
      for (const [cols, scale] of [[1, 1], [7, 0.3], [77, -2]] as const) {
        const n = 3 * cols;
        const x = randomData(n, cols, -3, 3);
        const v = randomData(n, cols + 1);
        const u = randomData(n, cols + 2);
        const dx = softmaxBackwardRef(softmaxForward64(x, cols, scale), v, cols, scale);
        const fd =
          (dot(v, softmaxForward64(Float64Array.from(x, (e, i) => e + h * u[i]!), cols, scale)) -
            dot(v, softmaxForward64(Float64Array.from(x, (e, i) => e - h * u[i]!), cols, scale))) /
          (2 * h);
        expect(Math.abs(fd - dot(dx, u)), `cols ${cols}`).toBeLessThan(1e-8 * (1 + Math.abs(fd)));
      }
    });
  });
});
