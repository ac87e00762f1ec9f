// Mixed precision: every kernel that reads parameters (weights, biases, affine, embedding tables) takes them
// in f16 next to f32 activations and gradients, against the plain CPU references on the f16-rounded
// parameters, on awkward shapes. The arithmetic is f32 in both, so f32 tolerances hold.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import type { Tensor } from '../src/engine/tensor.js';
import { f16BitsToF32, f32ToF16Bits } from '../src/engine/dtype.js';
import { runProgram } from '../src/engine/recorder.js';
import { conv2d, convTuning } from '../src/engine/ops/conv2d.js';
import { conv2dBackward } from '../src/engine/ops/conv2d-backward.js';
import { linear, matmul } from '../src/engine/ops/matmul.js';
import { linearBackward, matmulBackward } from '../src/engine/ops/matmul-backward.js';
import { groupNorm, layerNorm } from '../src/engine/ops/norm.js';
import { groupNormBackward } from '../src/engine/ops/norm-backward.js';
import { add } from '../src/engine/ops/elementwise.js';
import { gatherRows } from '../src/engine/ops/gather.js';
import { ArgumentError } from '../src/engine/errors.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';
import { conv2dRef } from './ref/conv2d.js';
import { conv2dBackwardRef } from './ref/conv2d-backward.js';
import { matmulRef } from './ref/matmul.js';
import { matmulBackwardRef } from './ref/matmul-backward.js';
import { groupNormRef, layerNormRef } from './ref/norm.js';
import { groupNormSpec, rowNormBackwardRef } from './ref/norm-backward.js';
import { broadcastRef } from './ref/elementwise.js';
import { gatherRowsRef } from './ref/gather.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// f32 accumulation over at most a few thousand O(1) terms, as the f32 kernel tests.
const TOL = { atol: 2e-5, rtol: 2e-5 };

const r16 = (v: Float32Array) => v.map((x) => f16BitsToF32(f32ToF16Bits(x)));

function needsF16(ctx: { skip: (note?: string) => void }): void {
  if (!engine.hasF16) ctx.skip('this adapter has no shader-f16: f16 parameters need f16 storage');
}

/** Uploads `values` rounded to f16 as an f16 tensor, and returns the rounded values for the reference. */
function param(values: Float32Array, shape: number[], owned: Tensor[]): { t: Tensor; v: Float32Array } {
  const t = engine.tensor(values, shape, 'f16', 'param');
  owned.push(t);
  return { t, v: r16(values) };
}

function act(values: Float32Array, shape: number[], owned: Tensor[]): Tensor {
  const t = engine.tensor(values, shape, 'f32', 'act');
  owned.push(t);
  return t;
}

async function run(f: (rec: Parameters<Parameters<typeof runProgram>[2]>[0]) => Tensor | Tensor[]): Promise<Float32Array[]> {
  const { result } = await runProgram(engine, 'mixed', f);
  const list = Array.isArray(result) ? result : [result];
  const out: Float32Array[] = [];
  for (const t of list) {
    expect(t.dtype).toBe('f32');
    out.push(await t.read());
    t.dispose();
  }
  return out;
}

describe('f16 parameters with f32 activations', () => {
  const convCases = [
    { what: 'general 5x3 stride 2, groups 2', n: 2, cin: 6, h: 11, w: 9, cout: 10, k: [5, 3] as [number, number], stride: [2, 1] as [number, number], padding: [2, 1] as [number, number], groups: 2 },
    { what: '3x3 px8 path', n: 1, cin: 5, h: 8, w: 16, cout: 7, k: [3, 3] as [number, number], stride: [1, 1] as [number, number], padding: [1, 1] as [number, number], groups: 1 },
    { what: '3x3 Winograd path', n: 1, cin: 12, h: 10, w: 14, cout: 9, k: [3, 3] as [number, number], stride: [1, 1] as [number, number], padding: [1, 1] as [number, number], groups: 1, winograd: true },
  ];
  for (const c of convCases) {
    it(`conv2d ${c.what}: f16 weight and bias, and the input gradient through the f16 weight`, async (ctx) => {
      needsF16(ctx);
      const owned: Tensor[] = [];
      const saved = convTuning.winogradMinChannels;
      if (c.winograd) convTuning.winogradMinChannels = 8;
      try {
        const xShape = [c.n, c.cin, c.h, c.w];
        const wShape = [c.cout, c.cin / c.groups, ...c.k];
        const bound = 1 / Math.sqrt((c.cin / c.groups) * c.k[0] * c.k[1]);
        const xv = randomData(xShape.reduce((p, d) => p * d, 1), 11);
        const w = param(randomData(wShape.reduce((p, d) => p * d, 1), 12, -bound, bound), wShape, owned);
        const b = param(randomData(c.cout, 13, -bound, bound), [c.cout], owned);
        const x = act(xv, xShape, owned);
        const opts = { stride: c.stride, padding: c.padding, groups: c.groups };
        const ref = conv2dRef(xv, xShape, w.v, wShape, b.v, { ...opts, act: 'silu' });
        const [y] = await run((rec) => conv2d(rec, x, w.t, b.t, { ...opts, act: 'silu' }));
        expectClose(y!, ref.out, TOL, `conv2d ${c.what}`);
        const gv = randomData(ref.out.length, 14);
        const g = act(gv, ref.shape, owned);
        const gref = conv2dBackwardRef(xv, xShape, w.v, wShape, gv, opts);
        const [dx] = await run((rec) => conv2dBackward(rec, x, w.t, g, { ...opts, needs: { x: true, weight: false } }).gradX!);
        expectClose(dx!, gref.gradX, TOL, `conv2d backward x ${c.what}`);
      } finally {
        convTuning.winogradMinChannels = saved;
        owned.forEach((t) => t.dispose());
      }
    });
  }

  it('linear (f16 weight and bias; N not a multiple of 4) and its input and weight gradients', async (ctx) => {
    needsF16(ctx);
    const owned: Tensor[] = [];
    try {
      for (const [rows, inF, outF] of [[7, 13, 10], [5, 24, 20]] as const) {
        const xv = randomData(rows * inF, 21);
        const w = param(randomData(outF * inF, 22, -0.3, 0.3), [outF, inF], owned);
        const b = param(randomData(outF, 23), [outF], owned);
        const x = act(xv, [rows, inF], owned);
        const ref = matmulRef(xv, [rows, inF], w.v, [outF, inF], { transB: true, bias: b.v });
        const [y] = await run((rec) => linear(rec, x, w.t, b.t));
        expectClose(y!, ref.out, TOL, `linear ${rows}x${inF}->${outF}`);
        const gv = randomData(rows * outF, 24);
        const g = act(gv, [rows, outF], owned);
        const gref = matmulBackwardRef(xv, [rows, inF], w.v, [outF, inF], gv, { transB: true });
        const [dx, dw] = await run((rec) => {
          const gr = linearBackward(rec, x, w.t, g, { needs: { x: true, weight: true } });
          return [gr.gradX!, gr.gradWeight!];
        });
        expectClose(dx!, gref.gradA, TOL, `linear dx ${rows}x${inF}->${outF}`);
        expectClose(dw!, gref.gradB, TOL, `linear dW ${rows}x${inF}->${outF}`);
      }
    } finally {
      owned.forEach((t) => t.dispose());
    }
  });

  it('matmul with f16 weights on the left (W x, transposed a) and the gradient of its activation operand', async (ctx) => {
    needsF16(ctx);
    const owned: Tensor[] = [];
    try {
      // VaeAttention's layouts: o = W h [C, C] x [N, C, L]; q = h^T W^T with h stored [N, C, L] (transA, transB).
      const [N, C, L] = [2, 12, 19];
      const w = param(randomData(C * C, 31, -0.3, 0.3), [C, C], owned);
      const hv = randomData(N * C * L, 32);
      const h = act(hv, [N, C, L], owned);
      const ref1 = matmulRef(w.v, [C, C], hv, [N, C, L]);
      const ref2 = matmulRef(hv, [N, C, L], w.v, [C, C], { transA: true, transB: true });
      const [o, q] = await run((rec) => [matmul(rec, w.t, h), matmul(rec, h, w.t, { transA: true, transB: true })]);
      expectClose(o!, ref1.out, TOL, 'W h');
      expectClose(q!, ref2.out, TOL, 'h^T W^T');
      const gv = randomData(N * L * C, 33);
      const g = act(gv, [N, L, C], owned);
      const gref = matmulBackwardRef(hv, [N, C, L], w.v, [C, C], gv, { transA: true, transB: true });
      const [dh] = await run((rec) => matmulBackward(rec, h, w.t, g, { transA: true, transB: true, needs: { a: true, b: false } }).gradA!);
      expectClose(dh!, gref.gradA, TOL, 'd h of h^T W^T');
    } finally {
      owned.forEach((t) => t.dispose());
    }
  });

  it('group norm and layer norm with f16 affine parameters, and the group norm backward', async (ctx) => {
    needsF16(ctx);
    const owned: Tensor[] = [];
    try {
      const shape = [2, 6, 5, 3];
      const xv = randomData(2 * 6 * 15, 41, -2, 2);
      const x = act(xv, shape, owned);
      const w = param(randomData(6, 42, 0.5, 1.5), [6], owned);
      const b = param(randomData(6, 43), [6], owned);
      const [y] = await run((rec) => groupNorm(rec, x, 3, w.t, b.t, { act: 'silu' }));
      expectClose(y!, groupNormRef(xv, shape, 3, w.v, b.v, 1e-5, 'silu'), TOL, 'group norm + SiLU');
      const gv = randomData(xv.length, 44);
      const g = act(gv, shape, owned);
      const gref = rowNormBackwardRef(xv, gv, groupNormSpec(shape, 3, 1e-5, true), w.v, b.v);
      const [dx, dw, db] = await run((rec) => {
        const gr = groupNormBackward(rec, x, g, 3, w.t, b.t, { act: 'silu' });
        return [gr.dx, gr.dWeight!, gr.dBias!];
      });
      expectClose(dx!, gref.dx, TOL, 'group norm dx');
      expectClose(dw!, gref.dw, TOL, 'group norm dWeight');
      expectClose(db!, gref.db, TOL, 'group norm dBias');
      const lx = act(randomData(7 * 10, 45), [7, 10], owned);
      const lw = param(randomData(10, 46, 0.5, 1.5), [10], owned);
      const [ly] = await run((rec) => layerNorm(rec, lx, [10], lw.t));
      expectClose(ly!, layerNormRef(await lx.read(), 10, lw.v), TOL, 'layer norm, weight only');
    } finally {
      owned.forEach((t) => t.dispose());
    }
  });

  it('a bias add and an embedding lookup from f16 parameters give f32', async (ctx) => {
    needsF16(ctx);
    const owned: Tensor[] = [];
    try {
      const xv = randomData(3 * 5 * 7, 51);
      const x = act(xv, [3, 5, 7], owned);
      const b = param(randomData(5, 52), [5, 1], owned);
      const table = param(randomData(9 * 6, 53), [9, 6], owned);
      const ids = act(Float32Array.from([3, 0, 8, 3, 5]), [5], owned);
      const [y, e] = await run((rec) => [add(rec, x, b.t), gatherRows(rec, table.t, ids, { dtype: 'f32' })]);
      expectClose(y!, broadcastRef(xv, [3, 5, 7], b.v, [5, 1], (p, q) => p + q).out, TOL, 'x + f16 bias');
      expectClose(e!, gatherRowsRef(table.v, 9, 6, [3, 0, 8, 3, 5]), { atol: 0, rtol: 0 }, 'f16 table rows as f32');
    } finally {
      owned.forEach((t) => t.dispose());
    }
  });

  it('refuses f32 parameters under f16 activations, naming the op', async (ctx) => {
    needsF16(ctx);
    const owned: Tensor[] = [];
    try {
      const x = engine.tensor(randomData(8, 61), [2, 4], 'f16', 'x');
      owned.push(x);
      const w = act(randomData(12, 62), [3, 4], owned);
      await expect(runProgram(engine, 'bad', (rec) => linear(rec, x, w))).rejects.toThrow(ArgumentError);
      await expect(runProgram(engine, 'bad', (rec) => linear(rec, x, w))).rejects.toThrow(/linear: weight: f32 parameters with f16 activations/);
      const img = engine.tensor(randomData(2 * 3 * 4 * 4, 63), [2, 3, 4, 4], 'f16', 'img');
      owned.push(img);
      const k = act(randomData(5 * 3 * 9, 64), [5, 3, 3, 3], owned);
      await expect(runProgram(engine, 'bad', (rec) => conv2d(rec, img, k))).rejects.toThrow(/conv2d: weight: f32 parameters with f16 activations/);
    } finally {
      owned.forEach((t) => t.dispose());
    }
  });
});
