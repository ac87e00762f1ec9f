import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import type { DType } from '../src/engine/dtype.js';
import { runProgram } from '../src/engine/recorder.js';
import { conv2d, convTranspose2d, conv2dNaive, conv3x3Key, conv3x3Path, convCaps, convTuning } from '../src/engine/ops/conv2d.js';
import type { Activation } from '../src/engine/ops/elementwise.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { conv2dRef, convTranspose2dRef } from './ref/conv2d.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// Weights are scaled like PyTorch's default init (uniform +-1/sqrt(fan_in)), so outputs are O(1) and
// f32 accumulation over K terms errs by about 6e-8 * sqrt(K) (K <= 5760 here): 1e-5 is ample.
const F32 = { atol: 1e-5, rtol: 1e-5 };
// f16 storage: the reference takes the f16-rounded inputs (read back), so the only extra error is the
// final rounding of the O(1) output to 11 significant bits (2^-11 relative): 1e-3.
const F16 = { atol: 1e-3, rtol: 1e-3 };

interface Case {
  n: number;
  cin: number;
  h: number;
  w: number;
  cout: number;
  k: [number, number];
  stride?: [number, number];
  padding?: [number, number];
  groups?: number;
  bias?: boolean;
  act?: Activation;
  alpha?: number;
}

function label(c: Case): string {
  return (
    `x[${c.n},${c.cin},${c.h},${c.w}] -> ${c.cout}, k${c.k.join('x')}` +
    (c.stride ? ` s${c.stride.join('x')}` : '') +
    (c.padding ? ` p${c.padding.join('x')}` : '') +
    (c.groups ? ` g${c.groups}` : '') +
    (c.bias ? ' +bias' : '') +
    (c.act ? ` ${c.act}` : '')
  );
}

function data(c: Case, transposed: boolean, seed: number) {
  const g = c.groups ?? 1;
  const wShape = transposed ? [c.cin, c.cout / g, c.k[0], c.k[1]] : [c.cout, c.cin / g, c.k[0], c.k[1]];
  const fanIn = (c.cin / g) * c.k[0] * c.k[1];
  const bound = 1 / Math.sqrt(fanIn);
  const xShape = [c.n, c.cin, c.h, c.w];
  return {
    xShape,
    wShape,
    x: randomData(c.n * c.cin * c.h * c.w, seed),
    w: randomData(wShape.reduce((p, d) => p * d, 1), seed + 1, -bound, bound),
    b: c.bias ? randomData(c.cout, seed + 2, -bound, bound) : null,
  };
}

async function checkConv(c: Case, seed: number, dtype: DType = 'f32', tol: Tolerance = F32): Promise<void> {
  const d = data(c, false, seed);
  const x = engine.tensor(d.x, d.xShape, dtype, 'x');
  const w = engine.tensor(d.w, d.wShape, dtype, 'w');
  const b = d.b ? engine.tensor(d.b, [c.cout], dtype, 'b') : undefined;
  const { result } = await runProgram(engine, 'conv', (rec) =>
    conv2d(rec, x, w, b, { stride: c.stride, padding: c.padding, groups: c.groups, act: c.act, alpha: c.alpha }),
  );
  // The reference takes exactly what the GPU holds (f16-rounded for f16).
  const ref = conv2dRef(await x.read(), d.xShape, await w.read(), d.wShape, b ? await b.read() : null, {
    stride: c.stride,
    padding: c.padding,
    groups: c.groups,
    act: c.act,
    alpha: c.alpha,
  });
  expect(result.shape, label(c)).toEqual(ref.shape);
  expect(result.dtype).toBe(dtype);
  expectClose(await result.read(), ref.out, tol, `conv2d ${dtype} ${label(c)}`);
  for (const t of [x, w, b, result]) t?.dispose();
}

async function checkConvT(c: Case & { outputPadding?: [number, number] }, seed: number, dtype: DType = 'f32', tol: Tolerance = F32): Promise<void> {
  const d = data(c, true, seed);
  const x = engine.tensor(d.x, d.xShape, dtype, 'x');
  const w = engine.tensor(d.w, d.wShape, dtype, 'w');
  const b = d.b ? engine.tensor(d.b, [c.cout], dtype, 'b') : undefined;
  const opts = { stride: c.stride, padding: c.padding, outputPadding: c.outputPadding, groups: c.groups, act: c.act, alpha: c.alpha };
  const { result } = await runProgram(engine, 'convT', (rec) => convTranspose2d(rec, x, w, b, opts));
  const ref = convTranspose2dRef(await x.read(), d.xShape, await w.read(), d.wShape, b ? await b.read() : null, opts);
  const tag = `${label(c)}${c.outputPadding ? ` op${c.outputPadding.join('x')}` : ''}`;
  expect(result.shape, tag).toEqual(ref.shape);
  expectClose(await result.read(), ref.out, tol, `convTranspose2d ${dtype} ${tag}`);
  for (const t of [x, w, b, result]) t?.dispose();
}

// Winograd needs convTuning.winogradMinChannels channels (256); tests lower it to run it on small shapes.
async function withWinograd<T>(minChannels: number, f: () => Promise<T> | T): Promise<T> {
  const saved = convTuning.winogradMinChannels;
  convTuning.winogradMinChannels = minChannels;
  try {
    return await f();
  } finally {
    convTuning.winogradMinChannels = saved;
  }
}

describe('conv2d', () => {
  const small: Case[] = [
    { n: 1, cin: 1, h: 1, w: 1, cout: 1, k: [1, 1] },
    { n: 1, cin: 5, h: 7, w: 5, cout: 3, k: [1, 1] },
    { n: 1, cin: 5, h: 7, w: 5, cout: 3, k: [3, 3] },
    { n: 1, cin: 5, h: 7, w: 5, cout: 3, k: [3, 3], padding: [1, 1] },
    { n: 1, cin: 5, h: 7, w: 5, cout: 3, k: [3, 3], padding: [2, 2], stride: [2, 2] },
    { n: 1, cin: 5, h: 7, w: 5, cout: 3, k: [5, 3], padding: [2, 1] },
    { n: 1, cin: 5, h: 7, w: 5, cout: 3, k: [5, 3], padding: [1, 0], stride: [2, 1] },
    { n: 1, cin: 3, h: 9, w: 8, cout: 7, k: [3, 3], padding: [1, 1], stride: [2, 2] },
    { n: 1, cin: 4, h: 8, w: 8, cout: 4, k: [3, 3], padding: [0, 0], stride: [3, 3] },
    // More pixels than one workgroup's 256 and more channels than one tile of 8, both ragged.
    { n: 2, cin: 6, h: 17, w: 19, cout: 20, k: [3, 3], padding: [1, 1] },
    { n: 2, cin: 6, h: 17, w: 19, cout: 13, k: [3, 3], padding: [1, 1], stride: [2, 2] },
  ];
  for (const [i, c] of small.entries()) it(label(c), () => checkConv(c, 100 + i));

  it('bias with fused activations', async () => {
    const base: Case = { n: 2, cin: 5, h: 6, w: 7, cout: 11, k: [3, 3], padding: [1, 1], bias: true };
    await checkConv(base, 200);
    await checkConv({ ...base, act: 'silu' }, 201);
    await checkConv({ ...base, act: 'relu' }, 202);
    await checkConv({ ...base, act: 'gelu' }, 203);
    await checkConv({ ...base, act: 'leaky_relu', alpha: 0.2 }, 204);
  });

  it('groups 2, groups 3 with ragged channel tiles, depthwise and depthwise x2', async () => {
    await checkConv({ n: 2, cin: 8, h: 9, w: 7, cout: 6, k: [3, 3], padding: [1, 1], groups: 2, bias: true }, 300);
    await checkConv({ n: 1, cin: 6, h: 5, w: 5, cout: 30, k: [3, 1], padding: [1, 0], groups: 3 }, 301);
    await checkConv({ n: 2, cin: 7, h: 9, w: 11, cout: 7, k: [3, 3], padding: [1, 1], groups: 7, bias: true, act: 'silu' }, 302);
    await checkConv({ n: 1, cin: 5, h: 8, w: 6, cout: 10, k: [5, 5], padding: [2, 2], stride: [2, 2], groups: 5 }, 303);
  });

  it('3x3, stride 1, padding 1: which kernel takes it', async () => {
    expect(convTuning.winogradMinChannels).toBe(256);
    const g = (n: number, h: number, w: number, groups = 1, cin = 8) => ({ kh: 3, kw: 3, groups, n, cin, h, w });
    const big = 2 ** 27;
    expect(conv3x3Path(g(1, 16, 16, 1, 320), 320, [16, 16], [1, 1], [1, 1], big)).toBe('winograd');
    expect(conv3x3Path(g(1, 16, 16, 1, 128), 320, [16, 16], [1, 1], [1, 1], big)).toBe('px8'); // too few input channels
    expect(conv3x3Path(g(1, 16, 16, 1, 320), 128, [16, 16], [1, 1], [1, 1], big)).toBe('px8'); // too few output channels
    // On a GPU (caps), the implicit GEMM takes what Winograd does not, except narrow outputs (conv_out).
    const gpu = { gpu: true, igemm: true };
    expect(conv3x3Path(g(1, 16, 16, 1, 320), 320, [16, 16], [1, 1], [1, 1], big, undefined, gpu)).toBe('winograd');
    expect(conv3x3Path(g(1, 8, 8, 1, 1280), 1280, [8, 8], [1, 1], [1, 1], big, undefined, gpu)).toBe('igemm');
    expect(conv3x3Path(g(1, 8, 12, 1, 64), 64, [8, 12], [1, 1], [1, 1], big, undefined, gpu)).toBe('igemm');
    expect(conv3x3Path(g(1, 64, 64, 1, 320), 4, [64, 64], [1, 1], [1, 1], big, undefined, gpu)).toBe('px8');
    expect(conv3x3Path(g(1, 8, 8, 1, 1280), 1280, [8, 8], [1, 1], [1, 1], big, undefined, { gpu: true, igemm: false })).toBe('px8');
    expect(conv3x3Path(g(1, 8, 8, 1, 1280), 1280, [8, 8], [1, 1], [1, 1], big, 'px8', gpu)).toBe('px8'); // a measured choice wins
    await withWinograd(1, () => checkPaths(g, big));
  });

  function checkPaths(g: (n: number, h: number, w: number, groups?: number) => { kh: number; kw: number; groups: number; n: number; cin: number; h: number; w: number }, big: number): void {
    const path = (geo: ReturnType<typeof g>, out: [number, number], stride: [number, number] = [1, 1], pad: [number, number] = [1, 1], bind = big) =>
      conv3x3Path(geo, 8, out, stride, pad, bind);
    expect(path(g(1, 16, 16), [16, 16])).toBe('winograd'); // 64 tiles of 2x2
    expect(path(g(2, 13, 11), [13, 11])).toBe('winograd'); // odd sizes: the last tiles are cut
    expect(path(g(1, 8, 8), [8, 8])).toBe('px8'); // 16 tiles: too few
    expect(path(g(1, 8, 12), [8, 12])).toBeUndefined(); // few tiles and W % 8
    expect(path(g(1, 16, 16, 2), [16, 16])).toBeUndefined(); // groups
    expect(path(g(1, 16, 16), [14, 14], [1, 1], [0, 0])).toBeUndefined(); // padding 0
    expect(path(g(1, 16, 16), [8, 8], [2, 2])).toBeUndefined(); // stride 2
    // Winograd's f32 intermediates (16 x channels x tiles) must fit one binding
    expect(path(g(1, 64, 64), [64, 64], [1, 1], [1, 1], 16 * 4 * 8 * 1024 - 1)).toBe('px8');
    expect(conv3x3Path({ kh: 1, kw: 1, groups: 1, n: 1, cin: 8, h: 16, w: 16 }, 8, [16, 16], [1, 1], [1, 1], big)).toBeUndefined();
  }

  it('3x3, stride 1, padding 1, few tiles and W % 8 == 0 (conv3x3_px8): ragged channel tiles, rows past the edges, batches', async () => {
    const base = { k: [3, 3] as [number, number], padding: [1, 1] as [number, number] };
    await checkConv({ ...base, n: 2, cin: 5, h: 6, w: 16, cout: 11, bias: true, act: 'silu' }, 500); // tiles of 8 + 3
    await checkConv({ ...base, n: 1, cin: 3, h: 1, w: 8, cout: 2 }, 501); // one row: both vertical taps outside
    await checkConv({ ...base, n: 3, cin: 4, h: 5, w: 8, cout: 9 }, 502); // 15 threads of 8 pixels
    await checkConv({ ...base, n: 1, cin: 16, h: 9, w: 24, cout: 16, bias: true }, 503);
    await checkConvT({ ...base, n: 2, cin: 7, h: 4, w: 16, cout: 5, bias: true }, 505); // the flipped taps
  });

  it('3x3, stride 1, padding 1, at least 64 tiles (Winograd F(2x2, 3x3)): odd sizes, batches, bias and activations, flipped taps', async () => {
    const base = { k: [3, 3] as [number, number], padding: [1, 1] as [number, number] };
    await checkConv({ ...base, n: 1, cin: 320, h: 16, w: 16, cout: 320, bias: true }, 508); // an SD width, as is
    await withWinograd(1, async () => {
      await checkConv({ ...base, n: 1, cin: 64, h: 16, w: 40, cout: 40, bias: true, act: 'gelu' }, 504);
      await checkConv({ ...base, n: 2, cin: 3, h: 13, w: 11, cout: 5, bias: true, act: 'silu' }, 506); // cut tiles
      await checkConv({ ...base, n: 1, cin: 33, h: 17, w: 16, cout: 7 }, 507);
      await checkConvT({ ...base, n: 2, cin: 9, h: 11, w: 12, cout: 6, bias: true }, 509); // the flipped taps
    });
  });

  it('3x3, stride 1, padding 1 as an implicit GEMM in workgroup memory (conv3x3_igemm, the GPU variant): off its 64 x 64 x 16 tiles', async (ctx) => {
    if (!convCaps(engine).igemm) ctx.skip('the adapter allows fewer than 256 threads or 8 KiB of workgroup memory');
    const base = { k: [3, 3] as [number, number], padding: [1, 1] as [number, number] };
    // Chosen through the tuning table, as silo tune would; each run must name the kernel.
    const forced = async (c: Case, transposed: boolean, seed: number, dtype: DType = 'f32', tol: Tolerance = F32) => {
      const key = conv3x3Key(c.n, c.cin, c.h, c.w, c.cout, transposed);
      engine.tuning.set('conv3x3', key, 'igemm');
      try {
        await (transposed ? checkConvT(c, seed, dtype, tol) : checkConv(c, seed, dtype, tol));
        expect(engine.lastSubmitted!.kernels.some((k) => k.includes('conv3x3_igemm')), label(c)).toBe(true);
      } finally {
        engine.tuning.delete('conv3x3', key);
      }
    };
    await forced({ ...base, n: 2, cin: 5, h: 7, w: 9, cout: 11, bias: true, act: 'silu' }, false, 520); // K = 45, 126 pixels
    await forced({ ...base, n: 1, cin: 1, h: 1, w: 1, cout: 1 }, false, 521); // every tap but the centre outside
    await forced({ ...base, n: 1, cin: 20, h: 10, w: 13, cout: 70, bias: true, act: 'gelu' }, false, 522); // 2 channel blocks
    await forced({ ...base, n: 3, cin: 16, h: 8, w: 8, cout: 64 }, false, 523); // exact tiles
    await forced({ ...base, n: 2, cin: 7, h: 6, w: 11, cout: 9, bias: true }, true, 524); // flipped taps, swapped strides
    await forced({ ...base, n: 1, cin: 66, h: 5, w: 4, cout: 3 }, true, 525);
    if (engine.hasF16) await forced({ ...base, n: 1, cin: 12, h: 9, w: 10, cout: 20, bias: true }, false, 526, 'f16', F16);
  });

  it('SD-1.5 channel counts at small sizes', async () => {
    await checkConv({ n: 1, cin: 320, h: 4, w: 4, cout: 320, k: [3, 3], padding: [1, 1], bias: true }, 400);
    await checkConv({ n: 2, cin: 4, h: 5, w: 5, cout: 320, k: [3, 3], padding: [1, 1], bias: true }, 401); // conv_in
    await checkConv({ n: 1, cin: 320, h: 5, w: 5, cout: 4, k: [3, 3], padding: [1, 1], bias: true }, 402); // conv_out
    await checkConv({ n: 1, cin: 640, h: 3, w: 3, cout: 640, k: [3, 3], padding: [1, 1], bias: true }, 403);
    await checkConv({ n: 1, cin: 320, h: 5, w: 5, cout: 320, k: [3, 3], padding: [1, 1], stride: [2, 2], bias: true }, 404); // downsample
    await checkConv({ n: 1, cin: 1280, h: 2, w: 2, cout: 1280, k: [1, 1], bias: true }, 405);
    await checkConv({ n: 1, cin: 2560, h: 2, w: 2, cout: 1280, k: [1, 1], bias: true }, 406); // up-block conv_shortcut
  });

  it('conv2dNaive (benchmark baseline) matches the reference', async () => {
    const c: Case = { n: 2, cin: 5, h: 7, w: 5, cout: 3, k: [3, 3], padding: [1, 1], stride: [2, 1], bias: true };
    const d = data(c, false, 500);
    const x = engine.tensor(d.x, d.xShape);
    const w = engine.tensor(d.w, d.wShape);
    const b = engine.tensor(d.b!, [c.cout]);
    const { result } = await runProgram(engine, 'naive', (rec) => conv2dNaive(rec, x, w, b, { stride: [2, 1], padding: 1 }));
    const ref = conv2dRef(d.x, d.xShape, d.w, d.wShape, d.b, { stride: [2, 1], padding: [1, 1] });
    expect(result.shape).toEqual(ref.shape);
    expectClose(await result.read(), ref.out, F32, 'conv2dNaive');
  });
});

describe('convTranspose2d', () => {
  const cases: Array<Case & { outputPadding?: [number, number] }> = [
    { n: 1, cin: 1, h: 1, w: 1, cout: 1, k: [1, 1] },
    { n: 1, cin: 5, h: 7, w: 5, cout: 3, k: [3, 3] },
    { n: 1, cin: 5, h: 7, w: 5, cout: 3, k: [3, 3], padding: [1, 1], bias: true },
    { n: 2, cin: 5, h: 7, w: 5, cout: 3, k: [4, 4], stride: [2, 2], padding: [1, 1], bias: true },
    { n: 1, cin: 5, h: 7, w: 5, cout: 3, k: [3, 3], stride: [2, 2], padding: [1, 1], outputPadding: [1, 1] },
    { n: 1, cin: 4, h: 6, w: 5, cout: 9, k: [5, 3], stride: [2, 1], padding: [2, 1], outputPadding: [1, 0], act: 'silu', bias: true },
    { n: 1, cin: 3, h: 4, w: 5, cout: 2, k: [1, 1], stride: [2, 2] }, // phase classes with no taps
    { n: 1, cin: 3, h: 4, w: 5, cout: 2, k: [2, 2], stride: [3, 3], outputPadding: [2, 1] },
    { n: 2, cin: 6, h: 5, w: 4, cout: 10, k: [3, 3], stride: [2, 2], padding: [1, 1], outputPadding: [1, 1], groups: 2 },
    { n: 1, cin: 320, h: 3, w: 3, cout: 320, k: [4, 4], stride: [2, 2], padding: [1, 1], bias: true },
  ];
  for (const [i, c] of cases.entries()) {
    it(`${label(c)}${c.outputPadding ? ` op${c.outputPadding.join('x')}` : ''}`, () => checkConvT(c, 600 + i));
  }
});

describe('f16 storage', () => {
  it('conv2d and convTranspose2d in f16 (needs shader-f16)', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 conv2d: this adapter has no shader-f16');
      ctx.skip();
    }
    await checkConv({ n: 2, cin: 5, h: 7, w: 5, cout: 3, k: [3, 3], padding: [1, 1], bias: true }, 700, 'f16', F16);
    await checkConv({ n: 1, cin: 320, h: 4, w: 4, cout: 320, k: [3, 3], padding: [1, 1], bias: true, act: 'silu' }, 701, 'f16', F16);
    await checkConv({ n: 1, cin: 6, h: 9, w: 9, cout: 6, k: [3, 3], padding: [1, 1], stride: [2, 2], groups: 6 }, 702, 'f16', F16);
    await checkConvT({ n: 1, cin: 5, h: 7, w: 5, cout: 3, k: [4, 4], stride: [2, 2], padding: [1, 1], bias: true }, 703, 'f16', F16);
    // conv3x3_px8 and Winograd, forward and flipped
    await checkConv({ n: 2, cin: 20, h: 5, w: 16, cout: 11, k: [3, 3], padding: [1, 1], bias: true, act: 'silu' }, 704, 'f16', F16);
    await checkConvT({ n: 1, cin: 9, h: 3, w: 8, cout: 12, k: [3, 3], padding: [1, 1] }, 705, 'f16', F16);
    await withWinograd(1, async () => {
      await checkConv({ n: 1, cin: 20, h: 15, w: 18, cout: 13, k: [3, 3], padding: [1, 1], bias: true, act: 'silu' }, 706, 'f16', F16);
      await checkConvT({ n: 2, cin: 9, h: 12, w: 11, cout: 6, k: [3, 3], padding: [1, 1] }, 707, 'f16', F16);
    });
  });
});

describe('argument errors', () => {
  it('rejects mismatched channels, bad groups, bias shapes and output padding, naming the shapes', async () => {
    const x = engine.zeros([1, 4, 5, 5]);
    const w3 = engine.zeros([2, 3, 3, 3]);
    const w4 = engine.zeros([6, 2, 3, 3]);
    const w5 = engine.zeros([5, 1, 3, 3]);
    const b = engine.zeros([3]);
    const wBig = engine.zeros([2, 4, 7, 7]);
    const x3 = engine.zeros([4, 5, 5]);
    const wt = engine.zeros([4, 2, 3, 3]);
    await expect(runProgram(engine, 'bad', (rec) => conv2d(rec, x, w3))).rejects.toThrow(/conv2d: weight \[2, 3, 3, 3\].*expects 3 input channels.*\[1, 4, 5, 5\] has 4/);
    await expect(runProgram(engine, 'bad', (rec) => conv2d(rec, x, w4, undefined, { groups: 3 }))).rejects.toThrow(/groups 3 does not divide the 4 input channels/);
    await expect(runProgram(engine, 'bad', (rec) => conv2d(rec, x, w5, undefined, { groups: 4 }))).rejects.toThrow(/groups 4 does not divide the 5 output channels/);
    await expect(runProgram(engine, 'bad', (rec) => conv2d(rec, x, w4, b, { groups: 2 }))).rejects.toThrow(/bias must be \[6\], got \[3\]/);
    await expect(runProgram(engine, 'bad', (rec) => conv2d(rec, x, wBig))).rejects.toThrow(/larger than the input/);
    await expect(runProgram(engine, 'bad', (rec) => conv2d(rec, x3, w3))).rejects.toThrow(/input must be \[N, C, H, W\]/);
    await expect(runProgram(engine, 'bad', (rec) => convTranspose2d(rec, x, w3))).rejects.toThrow(/expects 2 input channels.*has 4/);
    await expect(runProgram(engine, 'bad', (rec) => convTranspose2d(rec, x, wt, undefined, { stride: 2, outputPadding: 2 }))).rejects.toThrow(/outputPadding 2x2 must be >= 0 and smaller than the stride 2x2/);
    expect(engine.activeRecorder).toBeNull();
    for (const t of [x, w3, w4, w5, b, wBig, x3, wt]) t.dispose();
  });
});
