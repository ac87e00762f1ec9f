import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { softmax, SOFTMAX_THREAD_MAX_COLS } from '../src/engine/ops/softmax.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';
import { describeReductions } from './helpers/reductions.js';
import { softmaxRef } from './ref/softmax.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// f32: outputs are in [0, 1]; exp has a few ulps of error and the row sum adds ~log2(cols) more.
const F32_SOFTMAX = { atol: 1e-7, rtol: 2e-6 };
// f16 storage: the output is rounded to 11 significant bits (relative 2^-11 = 4.9e-4); the reference
// takes the f16-rounded inputs, so input rounding is not part of the error. atol covers f16 subnormals.
const F16_SOFTMAX = { atol: 1e-6, rtol: 1e-3 };

type Layout = 'auto' | 'thread' | 'group';

async function run(data: Float32Array, shape: number[], scale?: number, dtype: 'f32' | 'f16' = 'f32', layout: Layout = 'auto') {
  const x = engine.tensor(data, shape, dtype);
  const input = dtype === 'f32' ? data : await x.read();
  const { result } = await runProgram(engine, 'softmax', (rec) => softmax(rec, x, scale === undefined ? { layout } : { scale, layout }));
  expect(result.shape).toEqual(shape);
  expect(result.dtype).toBe(dtype);
  const out = await result.read();
  x.dispose();
  result.dispose();
  return { out, input };
}

function expectRowsSumToOne(out: Float32Array, cols: number, tol: number, what: string): void {
  for (let base = 0; base < out.length; base += cols) {
    let s = 0;
    for (let j = 0; j < cols; j++) s += out[base + j]!;
    expect(Math.abs(s - 1), `${what}: row ${base / cols} sums to ${s}`).toBeLessThan(tol);
  }
}

// Every kernel test runs with both workgroup-reduction forms (tree and subgroups).
describeReductions(() => {
  describe('softmax over the last dimension', () => {
    // Both layouts run on every shape (the automatic choice depends on the adapter): one thread per row,
    // and one workgroup per row (64 threads up to 1024 columns, 256 beyond).
    const shapes: number[][] = [
      [1],
      [3, 1],
      [2, 5, 7],
      [2, 3, 77],
      [5, SOFTMAX_THREAD_MAX_COLS],
      [5, SOFTMAX_THREAD_MAX_COLS + 1],
      [2, 320],
      [3, 1025],
      [2, 2, 4096],
    ];
    for (const shape of shapes) {
      it(`shape ${JSON.stringify(shape)} with and without scale, both layouts`, async () => {
        const n = shape.reduce((p, d) => p * d, 1);
        const cols = shape[shape.length - 1]!;
        const data = randomData(n, n + cols, -6, 6);
        for (const layout of ['auto', 'thread', 'group'] as const) {
          for (const scale of [undefined, 0.125, 1 / Math.sqrt(40)]) {
            const { out } = await run(data, shape, scale, 'f32', layout);
            expectClose(out, softmaxRef(data, cols, scale ?? 1), F32_SOFTMAX, `softmax ${JSON.stringify(shape)} ${layout} scale ${scale}`);
          }
        }
      });
    }

    it('large-magnitude logits (+-1e4) are stable: no NaN, rows sum to 1', async () => {
      for (const [cols, layout] of [[7, 'thread'], [7, 'group'], [77, 'thread'], [77, 'group'], [4096, 'thread'], [4096, 'group']] as const) {
        const rows = 3;
        const data = randomData(rows * cols, cols, -1e4, 1e4);
        // a row of equal huge values, and one where a single logit dominates by far
        for (let j = 0; j < cols; j++) data[j] = 1e4;
        data[cols + (cols >> 1)] = 3e4;
        const { out } = await run(data, [rows, cols], undefined, 'f32', layout);
        expect(out.some((v) => Number.isNaN(v)), `NaN in softmax of large logits, cols ${cols}`).toBe(false);
        expectClose(out, softmaxRef(data, cols), F32_SOFTMAX, `large logits cols ${cols}`);
        expectRowsSumToOne(out, cols, 1e-5, `large logits cols ${cols}`);
        expect(out[0]).toBeCloseTo(1 / cols, 7);
        expect(out[cols + (cols >> 1)]).toBe(1);
        // large negative logits with a scale (masked attention written as -1e4 before scaling)
        const neg = data.map((v) => -Math.abs(v));
        const r = await run(neg, [rows, cols], 0.125, 'f32', layout);
        expect(r.out.some((v) => Number.isNaN(v))).toBe(false);
        expectClose(r.out, softmaxRef(neg, cols, 0.125), F32_SOFTMAX, `large negative logits cols ${cols}`);
      }
    });

    it('more rows than one grid dimension of workgroups (2-D launch, workgroup per row)', async () => {
      const rows = 65535 + 7;
      const cols = 5;
      const data = randomData(rows * cols, 99, -3, 3);
      const { out } = await run(data, [rows, cols], undefined, 'f32', 'group');
      expectClose(out, softmaxRef(data, cols), F32_SOFTMAX, 'many rows');
    });

    it('more threads than one grid row of workgroups (2-D launch, thread per row)', async () => {
      const rows = 65535 * 64 + 9;
      const cols = 1;
      const { out } = await run(randomData(rows, 7), [rows, cols], undefined, 'f32', 'thread');
      expect(out.every((v) => v === 1)).toBe(true);
    });

    it('rejects a non-finite scale', async () => {
      const x = engine.zeros([2, 3]);
      await expect(runProgram(engine, 'bad', (rec) => softmax(rec, x, { scale: NaN }))).rejects.toThrow(/softmax: scale/);
      expect(engine.activeRecorder).toBeNull();
      x.dispose();
    });
  });

  describe('f16 storage', () => {
    it('softmax in f16 on rows of 7, 77 and 4096 (needs shader-f16)', async (ctx) => {
      if (!engine.hasF16) {
        console.log('SKIP f16 softmax: this adapter has no shader-f16');
        ctx.skip();
      }
      for (const [rows, cols] of [[4, 7], [3, 77], [2, 4096]] as const) {
        for (const layout of ['thread', 'group'] as const) {
          const { out, input } = await run(randomData(rows * cols, cols + 1, -8, 8), [rows, cols], 0.5, 'f16', layout);
          expectClose(out, softmaxRef(input, cols, 0.5), F16_SOFTMAX, `f16 softmax ${rows}x${cols} ${layout}`);
        }
      }
    });
  });
});
