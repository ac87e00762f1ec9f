import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { matmul, linear, matmulNaive, defaultMatmulVariant, type MatmulOptions, type MatmulVariant } from '../src/engine/ops/matmul.js';
import type { Activation } from '../src/engine/ops/elementwise.js';
import * as ew from '../src/engine/ops/elementwise.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { matmulRef, type MatmulRefOptions } from './ref/matmul.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// f32: the kernel sums in another order than the f64 reference; the rounding error of a K-term dot
// product of values in [-1, 1] grows like sqrt(K), hence an absolute term scaled by sqrt(K).
const f32Tol = (K: number): Tolerance => ({ atol: 2e-6 * Math.sqrt(K), rtol: 1e-5 });
// f16 storage: inputs are rounded before the reference sees them (it reads them back), accumulation
// is f32, and the output is rounded once to 11 significant bits (relative 2^-11 ~ 4.9e-4).
const f16Tol = (K: number): Tolerance => ({ atol: 1e-4 + 2e-6 * Math.sqrt(K), rtol: 1e-3 });

const size = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

/** Stored shapes of a and b for logical [..., M, K] x [..., K, N] with the given transposes. */
function stored(batchA: number[], batchB: number[], M: number, K: number, N: number, o: { transA?: boolean; transB?: boolean }) {
  return {
    aShape: [...batchA, ...(o.transA ? [K, M] : [M, K])],
    bShape: [...batchB, ...(o.transB ? [N, K] : [K, N])],
  };
}

async function check(
  aShape: number[],
  bShape: number[],
  opts: MatmulRefOptions & { withBias?: boolean; dtype?: 'f32' | 'f16'; variant?: MatmulVariant } = {},
  what = '',
): Promise<void> {
  const dtype = opts.dtype ?? 'f32';
  const seed = size(aShape) * 7 + size(bShape);
  const a = engine.tensor(randomData(size(aShape), seed), aShape, dtype, 'a');
  const b = engine.tensor(randomData(size(bShape), seed + 1), bShape, dtype, 'b');
  const N = opts.transB ? bShape[bShape.length - 2]! : bShape[bShape.length - 1]!;
  const K = opts.transA ? aShape[aShape.length - 2]! : aShape[aShape.length - 1]!;
  const bias = opts.withBias ? engine.tensor(randomData(N, seed + 2, -2, 2), [N], dtype, 'bias') : undefined;
  const mOpts: MatmulOptions = {
    transA: opts.transA,
    transB: opts.transB,
    bias,
    act: opts.act as Activation | undefined,
    alpha: opts.alpha,
    scale: opts.scale,
    variant: opts.variant,
  };
  const { result, report } = await runProgram(engine, 'matmul', (rec) => matmul(rec, a, b, mOpts));
  // One dispatch; a transposed B takes one more (its row-major copy) unless N or K is 1 or matmul_tiled
  // reads it in place.
  const tiled = N % 4 === 0 && (opts.variant ?? defaultMatmulVariant(engine)) === 'matmul_tiled';
  expect(report.dispatches).toBe(opts.transB && N > 1 && K > 1 && !tiled ? 2 : 1);
  // f16: the reference takes the rounded values actually stored.
  const ref = matmulRef(await a.read(), aShape, await b.read(), bShape, { ...opts, bias: bias ? await bias.read() : undefined });
  expect(result.shape).toEqual(ref.shape);
  expect(result.dtype).toBe(dtype);
  const label = `${what} a${JSON.stringify(aShape)} b${JSON.stringify(bShape)} ${JSON.stringify({ ...opts, dtype })}`;
  expectClose(await result.read(), ref.out, dtype === 'f16' ? f16Tol(K) : f32Tol(K), label);
  for (const t of [a, b, bias, result]) t?.dispose();
}

const TRANSPOSES = [
  { transA: false, transB: false },
  { transA: false, transB: true },
  { transA: true, transB: false },
  { transA: true, transB: true },
];

describe('matmul shapes x all transposes (f32)', () => {
  // [M, K, N]: size 1, odd sizes, sizes off the 8- and 16-row / 8-column tile grids; some with N % 4 == 0 so the
  // vec4 variant meets ragged edges too; an SD-1.5 channel count.
  const shapes: Array<[number, number, number]> = [
    [1, 1, 1],
    [3, 5, 7],
    [5, 12, 36],
    [33, 17, 65],
    [33, 20, 68],
    [77, 130, 45],
    [77, 132, 45],
    [2, 8, 520],
    [64, 320, 320],
  ];
  for (const [M, K, N] of shapes) {
    it(`${M}x${K}x${N}`, async () => {
      for (const t of TRANSPOSES) {
        const { aShape, bShape } = stored([], [], M, K, N, t);
        await check(aShape, bShape, t);
      }
    });
  }
});

describe('batched matmul with broadcast batch dims', () => {
  const cases: Array<{ batchA: number[]; batchB: number[]; mkn: [number, number, number] }> = [
    { batchA: [2], batchB: [], mkn: [33, 20, 68] }, // shared weights, folded into one M
    { batchA: [2], batchB: [1], mkn: [9, 12, 17] },
    { batchA: [2], batchB: [2], mkn: [7, 16, 12] },
    { batchA: [1], batchB: [3], mkn: [5, 8, 12] }, // a broadcast over b's batch
    { batchA: [2, 3], batchB: [3], mkn: [7, 13, 9] },
    { batchA: [2, 3], batchB: [2, 3], mkn: [17, 16, 40] }, // rank 4, attention-like
    { batchA: [2, 1, 2, 1], batchB: [1, 2, 1, 3], mkn: [3, 4, 5] }, // rank 6, 4 batch dims
  ];
  for (const { batchA, batchB, mkn } of cases) {
    it(`${JSON.stringify(batchA)} x ${JSON.stringify(batchB)}, M K N = ${mkn.join(' ')}`, async () => {
      const [M, K, N] = mkn;
      for (const t of TRANSPOSES) {
        const { aShape, bShape } = stored(batchA, batchB, M, K, N, t);
        await check(aShape, bShape, t);
      }
    });
  }

  it('more than 65535 row tiles or batches (workgroups spill from y into z)', async () => {
    // 16 rows per workgroup in matmul_nn4 (N % 4 == 0), 8 in matmul_any: 65535 * 16 + 20 and
    // 65535 * 8 + 20 rows need a second z layer.
    await check([65535 * 16 + 20, 3], [3, 4], {}, 'tall');
    await check([3, 65535 * 8 + 20], [3, 5], { transA: true }, 'tall transA');
    // 70000 batches of 1-row tiles; the transposed B's copy also spills (70000 * 8 rows of 8 threads).
    await check([70000, 1, 8], [70000, 4, 8], { transB: true }, 'many batches');
  });
});

describe('fused bias, scale and activation', () => {
  const acts = ['none', 'relu', 'silu', 'gelu', 'gelu_tanh', 'quick_gelu', 'leaky_relu', 'sigmoid'] as const;
  for (const act of acts) {
    it(`bias + ${act} on every variant`, async () => {
      // [13, 20] x [20, 24] (vec4 epilogue), x [24, 20]ᵀ (copied row-major), x [20, 19] (scalar).
      await check([13, 20], [20, 24], { withBias: true, act, alpha: 0.2 }, 'nn4');
      await check([13, 20], [24, 20], { transB: true, withBias: true, act, alpha: 0.2 }, 'nt');
      await check([13, 20], [20, 19], { withBias: true, act, alpha: 0.2 }, 'any');
      await check([20, 13], [19, 20], { transA: true, transB: true, withBias: true, act, alpha: 0.2 }, 'any tt');
    });
  }

  it('scale before bias (attention-style), batched', async () => {
    await check([2, 3, 9, 8], [2, 3, 11, 8], { transB: true, scale: 1 / Math.sqrt(8) }, 'scale');
    await check([2, 9, 8], [8, 12], { withBias: true, scale: 0.5, act: 'silu' }, 'scale + bias');
  });
});

/** [rows, cols] row-major as [cols, rows]. */
function transposeRef(v: Float32Array, rows: number, cols: number): Float32Array {
  return Float32Array.from({ length: v.length }, (_, i) => v[(i % rows) * cols + Math.floor(i / rows)]!);
}

describe('linear (nn.Linear layout)', () => {
  const cases: Array<{ x: number[]; out: number; act?: Activation }> = [
    { x: [2, 7, 40], out: 24 },
    { x: [5, 37], out: 9, act: 'gelu' }, // in % 4 != 0: scalar path
    { x: [40], out: 3 }, // rank-1 input
    { x: [2, 8, 320], out: 2560 }, // SD-1.5 GEGLU projection width
    { x: [16, 1280], out: 320, act: 'silu' },
  ];
  for (const { x: xShape, out, act } of cases) {
    it(`x ${JSON.stringify(xShape)} -> ${out}${act ? ` + ${act}` : ''}`, async () => {
      const inF = xShape[xShape.length - 1]!;
      const xd = randomData(size(xShape), inF + out);
      const wd = randomData(out * inF, inF * out, -0.2, 0.2);
      const bd = randomData(out, out);
      const x = engine.tensor(xd, xShape);
      const w = engine.tensor(wd, [out, inF]);
      const b = engine.tensor(bd, [out]);
      const { result } = await runProgram(engine, 'linear', (rec) => linear(rec, x, w, b, { act }));
      expect(result.shape).toEqual([...xShape.slice(0, -1), out]);
      const ref = matmulRef(xd, [size(xShape) / inF, inF], wd, [out, inF], { transB: true, bias: bd, act });
      expectClose(await result.read(), ref.out, f32Tol(inF), `linear ${JSON.stringify(xShape)}`);
      for (const t of [x, w, b, result]) t.dispose();
    });
  }

  it('a weight held transposed ([in, out], Linear on CPU adapters) gives the same bits as [out, in]', async () => {
    for (const [xShape, out] of [[[2, 7, 40], 24], [[5, 37], 9], [[40], 3], [[3, 8, 320], 1280]] as const) {
      const inF = xShape[xShape.length - 1]!;
      const xd = randomData(size([...xShape]), inF);
      const wd = randomData(out * inF, out, -0.2, 0.2);
      const x = engine.tensor(xd, [...xShape]);
      const w = engine.tensor(wd, [out, inF]);
      const wt = engine.tensor(transposeRef(wd, out, inF), [inF, out]);
      const b = engine.tensor(randomData(out, 3), [out]);
      const r = engine.tensor(randomData(size([...xShape.slice(0, -1), out]), 4), [...xShape.slice(0, -1), out]);
      const { result } = await runProgram(engine, 'linear', (rec) => [
        linear(rec, x, w, b, { act: 'silu', residual: r }),
        linear(rec, x, wt, b, { act: 'silu', residual: r, transposed: true }),
      ]);
      expect(result[1]!.shape).toEqual([...xShape.slice(0, -1), out]);
      expect(Array.from(await result[1]!.read()), `linear ${JSON.stringify(xShape)} held [in, out]`).toEqual(Array.from(await result[0]!.read()));
      for (const t of [x, w, wt, b, r, ...result]) t.dispose();
    }
    const x = engine.zeros([4, 5]);
    const wt = engine.zeros([6, 3]);
    await expect(runProgram(engine, 'bad', (rec) => linear(rec, x, wt, undefined, { transposed: true }))).rejects.toThrow(
      /linear: x \[4, 5\] has 5 input features but weight \[6, 3\] \(held as \[in, out\]\) expects 6/,
    );
    x.dispose();
    wt.dispose();
  });

  it('without bias', async () => {
    const xd = randomData(3 * 8, 1);
    const wd = randomData(5 * 8, 2);
    const x = engine.tensor(xd, [3, 8]);
    const w = engine.tensor(wd, [5, 8]);
    const { result } = await runProgram(engine, 'linear', (rec) => linear(rec, x, w));
    expectClose(await result.read(), matmulRef(xd, [3, 8], wd, [5, 8], { transB: true }).out, f32Tol(8), 'linear no bias');
  });
});

describe('matmul_tiled (the workgroup-memory GPU variant) on shapes off its 64 x 64 x 16 tiles', () => {
  // M and K off the 64-row block and 16-deep slab, N % 4 == 0 but off the 64-column block, a single
  // slab, broadcast batches, transposed operands (B goes through its row-major copy), bias + activation.
  it('every transpose, odd sizes, batches, bias and activation (f32)', async () => {
    for (const t of TRANSPOSES) {
      for (const [M, K, N] of [[1, 1, 4], [65, 17, 68], [130, 40, 132], [7, 300, 36], [64, 16, 64]] as const) {
        const { aShape, bShape } = stored([], [], M, K, N, t);
        await check(aShape, bShape, { ...t, variant: 'matmul_tiled' }, 'tiled');
      }
    }
    await check([3, 70, 33], [33, 20], { variant: 'matmul_tiled', withBias: true, act: 'gelu', scale: 0.5 }, 'tiled folded batch');
    await check([2, 1, 45, 19], [3, 19, 8], { variant: 'matmul_tiled', withBias: true, act: 'silu' }, 'tiled broadcast batch');
    await check([2, 3, 9, 16], [2, 3, 13, 16], { variant: 'matmul_tiled', transB: true, withBias: true }, 'tiled nt batch');
  });

  it('f16 storage (needs shader-f16)', async (ctx) => {
    if (!engine.hasF16) ctx.skip('this adapter has no shader-f16');
    await check([77, 132], [132, 48], { dtype: 'f16', variant: 'matmul_tiled', withBias: true, act: 'silu' }, 'tiled f16');
  });
});

describe('residual epilogue (act(scale a b + bias) + r in the same dispatch)', () => {
  it('every variant, transposed B, batches; the residual must match the output', async () => {
    const cases: [number[], number[], MatmulOptions & { variant?: MatmulVariant }][] = [
      [[7, 13], [13, 20], {}], // matmul_nn4
      [[7, 13], [13, 9], {}], // matmul_any (N % 4 != 0)
      [[2, 70, 33], [33, 68], { variant: 'matmul_tiled' }],
      [[5, 24], [36, 24], { transB: true }], // nn.Linear's layout through the transposed copy
      [[5, 24], [36, 24], { transB: true, variant: 'matmul_tiled' }], // read in place
    ];
    for (const [aShape, bShape, o] of cases) {
      const a = randomData(size(aShape), 31);
      const b = randomData(size(bShape), 32, -0.3, 0.3);
      const bias = randomData(o.transB ? bShape[0]! : bShape[bShape.length - 1]!, 33);
      const ref = matmulRef(a, aShape, b, bShape, { transB: o.transB, bias, act: 'gelu', scale: 0.5 });
      const r = randomData(ref.out.length, 34);
      const ta = engine.tensor(a, aShape), tb = engine.tensor(b, bShape), tbias = engine.tensor(bias, [bias.length]), tr = engine.tensor(r, ref.shape);
      const { result, report } = await runProgram(engine, 'mm residual', (rec) => matmul(rec, ta, tb, { ...o, bias: tbias, act: 'gelu', scale: 0.5, residual: tr }));
      const tiled = (o.variant ?? defaultMatmulVariant(engine)) === 'matmul_tiled' && ref.shape[ref.shape.length - 1]! % 4 === 0;
      expect(report.dispatches).toBe(o.transB && !tiled ? 2 : 1); // no add of its own
      expectClose(await result.read(), ref.out.map((v, i) => v + r[i]!), f32Tol(aShape[aShape.length - 1]!), `residual ${JSON.stringify({ aShape, bShape, ...o })}`);
      const bad = engine.tensor(r.subarray(0, r.length - 1), [r.length - 1]);
      await expect(runProgram(engine, 'bad residual', (rec) => matmul(rec, ta, tb, { ...o, residual: bad }))).rejects.toThrow(/residual f32 \[\d+\] must be the output's f32 \[/);
      for (const t of [ta, tb, tbias, tr, bad, result]) t.dispose();
    }
  });

  it('linear with a residual equals linear plus add, bit for bit', async () => {
    const x = engine.tensor(randomData(2 * 9 * 40, 41), [2, 9, 40]);
    const w = engine.tensor(randomData(24 * 40, 42, -0.2, 0.2), [24, 40]);
    const bias = engine.tensor(randomData(24, 43), [24]);
    const r = engine.tensor(randomData(2 * 9 * 24, 44), [2, 9, 24]);
    const { result } = await runProgram(engine, 'lin', (rec) => [linear(rec, x, w, bias, { residual: r }), ew.add(rec, r, linear(rec, x, w, bias))]);
    expect(Array.from(await result[0]!.read())).toEqual(Array.from(await result[1]!.read()));
    for (const t of [x, w, bias, r, ...result]) t.dispose();
  });
});

describe('f16 storage, f32 accumulation', () => {
  it('every variant, transposes, batch, bias + activation (needs shader-f16)', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 matmul: this adapter has no shader-f16');
      ctx.skip();
    }
    for (const t of TRANSPOSES) {
      for (const [M, K, N] of [[33, 20, 68], [77, 132, 45], [64, 320, 320]] as const) {
        const { aShape, bShape } = stored([], [], M, K, N, t);
        await check(aShape, bShape, { ...t, dtype: 'f16' }, 'f16');
      }
    }
    await check([2, 9, 16], [16, 24], { dtype: 'f16', withBias: true, act: 'gelu' }, 'f16 batch');
    await check([2, 3, 9, 16], [2, 3, 13, 16], { dtype: 'f16', transB: true, withBias: true, act: 'silu' }, 'f16 nt');
  });

  it('linear in f16', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 linear: this adapter has no shader-f16');
      ctx.skip();
    }
    const x = engine.tensor(randomData(2 * 5 * 64, 3), [2, 5, 64], 'f16');
    const w = engine.tensor(randomData(48 * 64, 4, -0.3, 0.3), [48, 64], 'f16');
    const b = engine.tensor(randomData(48, 5), [48], 'f16');
    const { result } = await runProgram(engine, 'linear', (rec) => linear(rec, x, w, b, { act: 'gelu' }));
    const ref = matmulRef(await x.read(), [10, 64], await w.read(), [48, 64], { transB: true, bias: await b.read(), act: 'gelu' });
    expect(result.dtype).toBe('f16');
    expectClose(await result.read(), ref.out, f16Tol(64), 'linear f16');
  });
});

describe('naive baseline', () => {
  it('matches the reference on odd sizes', async () => {
    for (const [M, K, N] of [[1, 1, 1], [33, 17, 65], [64, 64, 64]] as const) {
      const ad = randomData(M * K, M);
      const bd = randomData(K * N, N);
      const a = engine.tensor(ad, [M, K]);
      const b = engine.tensor(bd, [K, N]);
      const { result } = await runProgram(engine, 'naive', (rec) => matmulNaive(rec, a, b));
      expectClose(await result.read(), matmulRef(ad, [M, K], bd, [K, N]).out, f32Tol(K), `naive ${M}x${K}x${N}`);
    }
  });
});

describe('argument errors', () => {
  it('names the op and the shapes', async () => {
    const a = engine.zeros([4, 5]);
    const b = engine.zeros([6, 3]);
    const bad = (fn: Parameters<typeof runProgram>[2]) => expect(runProgram(engine, 'bad', fn)).rejects;
    await bad((rec) => matmul(rec, a, b)).toThrow(/matmul: a \[4, 5\] x b \[6, 3\]: inner dimensions differ \(K = 5 for a, 6 for b\)/);
    await bad((rec) => matmul(rec, a, b, { transA: true, transB: true })).toThrow(/K = 4 for a, 3 for b/);
    await bad((rec) => linear(rec, a, b)).toThrow(/linear: x \[4, 5\] has 5 input features but weight \[6, 3\] expects 3/);
    await bad((rec) => matmul(rec, a, engine.zeros([5, 3]), { bias: engine.zeros([4]) })).toThrow(/bias must be \[3\], got \[4\]/);
    await bad((rec) => matmul(rec, engine.zeros([5]), b)).toThrow(/rank >= 2/);
    await bad((rec) => matmul(rec, engine.zeros([2, 4, 5]), engine.zeros([3, 5, 2]))).toThrow(/batch dims: shapes \[2\] and \[3\] do not broadcast/);
    await bad((rec) => matmulNaive(rec, a, b)).toThrow(/matmulNaive: .*inner dimensions differ/);
    if (engine.hasF16) {
      // An f16 operand next to an f32 one is mixed precision (f16 parameters, f32 result); linear says which is the weight.
      await bad((rec) => linear(rec, engine.zeros([4, 5], 'f16'), engine.zeros([3, 5]))).toThrow(/linear: weight: f32 parameters with f16 activations/);
      await bad((rec) => matmul(rec, a, engine.zeros([5, 3], 'f16'), { bias: engine.zeros([3]) })).toThrow(/bias dtype f32 differs from b's f16/);
    }
    expect(engine.activeRecorder).toBeNull();
  });
});
