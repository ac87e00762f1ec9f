import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import type { Tensor } from '../src/engine/tensor.js';
import { runProgram } from '../src/engine/recorder.js';
import { fusedNormEntry, groupNorm, layerNorm, normChunks, normSegments, threadChunks, type NormLayout } from '../src/engine/ops/norm.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { describeReductions } from './helpers/reductions.js';
import { groupNormRef, layerNormRef } from './ref/norm.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// f32: outputs are O(1) (normalised values times weights in [0.5, 1.5] plus biases); mean and variance
// are f32 sums (blocked, then trees or Chan merges) whose relative error stays ~1e-7, so 1e-5 is loose.
const F32: Tolerance = { atol: 1e-5, rtol: 1e-5 };
// Inputs centred at 30 with std ~0.6: x itself carries 30 * 2^-24 of rounding, the f32 mean a few times
// that, and dividing by the std magnifies it ~1.7x: allow 5e-5 absolute.
const OFFSET: Tolerance = { atol: 5e-5, rtol: 1e-5 };
// f16 storage: the output rounds to 11 significant bits (2^-11 = 4.9e-4 relative); inputs and affine
// parameters are read back after rounding and fed to the reference, so only output rounding counts.
const F16: Tolerance = { atol: 1e-3, rtol: 1e-3 };
const EXACT: Tolerance = { atol: 0, rtol: 0 };

const LAYOUTS: NormLayout[] = ['thread', 'group'];
// The statistics layouts run fused (statistics and apply in one dispatch where the rows allow) and
// unfused with the adapter's default apply span; the vec4 segment apply (norm_apply_seg) also runs
// with spans that split segments unevenly (1, 3 vec4s per workgroup) and with one that packs every
// segment into one workgroup.
const RUNS: Array<{ layout: NormLayout; span?: number; fuse?: boolean }> = [
  ...LAYOUTS.map((layout) => ({ layout })),
  ...LAYOUTS.map((layout) => ({ layout, fuse: false })),
  ...[1, 3, 1 << 20].map((span) => ({ layout: 'thread' as const, span, fuse: false })),
];
const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);

interface Case {
  x: Float32Array;
  shape: number[];
  w?: Float32Array;
  b?: Float32Array;
}

function makeCase(shape: number[], paramShape: number[], seed: number, affine: 'both' | 'weight' | 'bias' | 'none' = 'both', lo = -2, hi = 2): Case {
  const np = size(paramShape);
  return {
    x: randomData(size(shape), seed, lo, hi),
    shape,
    w: affine === 'both' || affine === 'weight' ? randomData(np, seed + 1, 0.5, 1.5) : undefined,
    b: affine === 'both' || affine === 'bias' ? randomData(np, seed + 2, -0.5, 0.5) : undefined,
  };
}

function upload(c: Case, paramShape: number[], dtype: 'f32' | 'f16' = 'f32'): { x: Tensor; w?: Tensor; b?: Tensor } {
  return {
    x: engine.tensor(c.x, c.shape, dtype, 'x'),
    w: c.w && engine.tensor(c.w, paramShape, dtype, 'weight'),
    b: c.b && engine.tensor(c.b, paramShape, dtype, 'bias'),
  };
}

async function readBack(t: { x: Tensor; w?: Tensor; b?: Tensor }, c: Case): Promise<Case> {
  return { shape: c.shape, x: await t.x.read(), w: t.w && (await t.w.read()), b: t.b && (await t.b.read()) };
}

function disposeAll(t: { x: Tensor; w?: Tensor; b?: Tensor }): void {
  t.x.dispose();
  t.w?.dispose();
  t.b?.dispose();
}

async function checkGroupNorm(
  c: Case,
  groups: number,
  opts: { eps?: number; act?: 'silu' | 'none' },
  tol: Tolerance,
  what: string,
  dtype: 'f32' | 'f16' = 'f32',
): Promise<void> {
  const C = c.shape[1]!;
  const t = upload(c, [C], dtype);
  const r = dtype === 'f32' ? c : await readBack(t, c);
  const ref = groupNormRef(r.x, c.shape, groups, r.w, r.b, opts.eps ?? 1e-5, opts.act ?? 'none');
  for (const { layout, span, fuse } of RUNS) {
    const { result } = await runProgram(engine, 'gn', (rec) => groupNorm(rec, t.x, groups, t.w, t.b, { ...opts, layout, span, fuse }));
    expect(result.shape).toEqual(c.shape);
    expect(result.dtype).toBe(dtype);
    expectClose(await result.read(), ref, tol, `${what} (${layout}, span ${span ?? 'default'}${fuse === false ? ', unfused' : ''})`);
    result.dispose();
  }
  disposeAll(t);
}

async function checkLayerNorm(c: Case, normShape: number[], eps: number | undefined, tol: Tolerance, what: string, dtype: 'f32' | 'f16' = 'f32'): Promise<void> {
  const t = upload(c, normShape, dtype);
  const r = dtype === 'f32' ? c : await readBack(t, c);
  const ref = layerNormRef(r.x, size(normShape), r.w, r.b, eps ?? 1e-5);
  for (const { layout, span, fuse } of RUNS) {
    const { result } = await runProgram(engine, 'ln', (rec) => layerNorm(rec, t.x, normShape, t.w, t.b, { eps, layout, span, fuse }));
    expect(result.shape).toEqual(c.shape);
    expectClose(await result.read(), ref, tol, `${what} (${layout}, span ${span ?? 'default'}${fuse === false ? ', unfused' : ''})`);
    result.dispose();
  }
  disposeAll(t);
}

// Every kernel test runs with both workgroup-reduction forms (tree and subgroups).
describeReductions(() => {
  describe('groupNorm', () => {
    for (const C of [320, 640, 1280, 2560]) {
      it(`32 groups, C = ${C}, batch 2, 3x5 and 2x2 spatial, affine, SiLU, no affine`, async () => {
        await checkGroupNorm(makeCase([2, C, 3, 5], [C], C), 32, { act: 'silu' }, F32, `gn C=${C} 3x5 silu`);
        await checkGroupNorm(makeCase([1, C, 2, 2], [C], C + 7), 32, {}, F32, `gn C=${C} 2x2`);
        await checkGroupNorm(makeCase([2, C, 2, 2], [C], C + 9, 'none'), 32, {}, F32, `gn C=${C} 2x2 no affine`);
      });
    }

    it('small and odd configurations: C=4/2 groups, 1 group, instance norm, rank 2 and 3 inputs', async () => {
      await checkGroupNorm(makeCase([2, 4, 3, 3], [4], 1), 2, {}, F32, 'C=4 g=2');
      await checkGroupNorm(makeCase([2, 6, 5, 7], [6], 2), 1, { act: 'silu' }, F32, 'groups=1');
      await checkGroupNorm(makeCase([1, 8, 3, 3], [8], 3), 8, {}, F32, 'groups=C');
      await checkGroupNorm(makeCase([3, 8], [8], 4), 4, {}, F32, 'rank 2 [3, 8]');
      await checkGroupNorm(makeCase([2, 6, 11], [6], 5), 3, {}, F32, 'rank 3 [2, 6, 11]');
      await checkGroupNorm(makeCase([1, 3, 1, 1], [3], 6), 3, {}, F32, 'one element per group');
    });

    it('weight only, bias only', async () => {
      await checkGroupNorm(makeCase([2, 64, 3, 3], [64], 10, 'weight'), 32, { act: 'silu' }, F32, 'weight only');
      await checkGroupNorm(makeCase([2, 64, 3, 3], [64], 11, 'bias'), 32, {}, F32, 'bias only');
    });

    it('eps variants (eps dominates a tiny variance)', async () => {
      for (const eps of [1e-6, 1e-3, 1e-1]) {
        await checkGroupNorm(makeCase([2, 32, 4, 4], [32], 12, 'both', -0.01, 0.01), 8, { eps }, F32, `eps ${eps}`);
      }
    });

    it('long rows split over workgroups (Chan merge), with a large mean offset', async () => {
      expect(normChunks(2, 131072)).toEqual({ chunks: 32, chunk: 4096 });
      expect(normChunks(1, 5120)).toEqual({ chunks: 2, chunk: 2560 });
      expect(normChunks(64, 1000)).toEqual({ chunks: 1, chunk: 1000 });
      expect(normChunks(512, 65536)).toEqual({ chunks: 1, chunk: 65536 });
      await checkGroupNorm(makeCase([1, 4, 64, 40], [4], 13, 'both', 29, 31), 2, { act: 'silu' }, OFFSET, 'len 5120, offset 30');
      await checkGroupNorm(makeCase([2, 32, 64, 64], [32], 14, 'both', 29, 31), 1, {}, OFFSET, 'len 131072, offset 30');
      // a ramp along the row: chunk means differ widely, so the merge's between-chunk term dominates
      const ramp = makeCase([1, 2, 64, 64], [2], 15);
      ramp.x = ramp.x.map((v, i) => v + (i / ramp.x.length) * 10);
      await checkGroupNorm(ramp, 1, {}, F32, 'ramp along a split row');
      // split rows record stats + combine + apply; rows of one chunk record stats + apply
      const x = engine.tensor(randomData(131072, 1), [1, 32, 64, 64]);
      const split = await runProgram(engine, 'gn', (rec) => groupNorm(rec, x, 1, undefined, undefined, { layout: 'group' }));
      expect(split.report.dispatches).toBe(3);
      const chunked = await runProgram(engine, 'gn', (rec) => groupNorm(rec, x, 1, undefined, undefined, { layout: 'thread' }));
      expect(chunked.report.dispatches).toBe(3);
      const small = engine.tensor(randomData(32768, 2), [1, 32, 32, 32]);
      const whole = await runProgram(engine, 'gn', (rec) => groupNorm(rec, small, 32, undefined, undefined, { layout: 'thread' }));
      expect(whole.report.dispatches).toBe(2);
      small.dispose();
      expectClose(await split.result.read(), await chunked.result.read(), F32, 'workgroup split vs thread chunks');
      x.dispose();
    });

    it('thread chunks: whole vec4s when the row is, at most 2048 elements, the last one shorter', async () => {
      expect(threadChunks(2048)).toEqual({ chunks: 1, chunk: 2048 });
      expect(threadChunks(40960)).toEqual({ chunks: 20, chunk: 2048 });
      expect(threadChunks(5120)).toEqual({ chunks: 3, chunk: 1708 });
      expect(threadChunks(5121)).toEqual({ chunks: 3, chunk: 1707 });
      expect(threadChunks(4100)).toEqual({ chunks: 3, chunk: 1368 });
      for (const len of [2049, 4100, 5121, 131072, 99999]) {
        const { chunks, chunk } = threadChunks(len);
        expect(chunk).toBeLessThanOrEqual(2048);
        expect((chunks - 1) * chunk).toBeLessThan(len);
        expect(chunks * chunk).toBeGreaterThanOrEqual(len);
      }
      // rows of 4100 and 5120 elements: three vec4 chunks each, the last one shorter; offset data
      await checkGroupNorm(makeCase([2, 4, 41, 100], [4], 16, 'both', 29, 31), 2, { act: 'silu' }, OFFSET, 'len 4100 in 3 chunks');
      await checkLayerNorm(makeCase([3, 5120], [5120], 17), [5120], undefined, F32, 'ln len 5120 in 3 chunks');
    });

    it('segments for the vec4 apply: planes of spatial % 4 == 0, whole LayerNorm rows, else the scalar apply', async () => {
      expect(normSegments({ len: 40960, adiv: 4096, amod: 320 })).toEqual({ seg: 4096, shared: true });
      expect(normSegments({ len: 320, adiv: 1, amod: 320 })).toEqual({ seg: 320, shared: false });
      expect(normSegments({ len: 150, adiv: 15, amod: 320 })).toBeUndefined();
      expect(normSegments({ len: 77, adiv: 1, amod: 77 })).toBeUndefined();
      // several planes per group and segments per workgroup that straddle rows
      await checkGroupNorm(makeCase([2, 6, 4, 2], [6], 18), 3, { act: 'silu' }, F32, 'gn planes of 8, 2 per group');
      await checkGroupNorm(makeCase([3, 10, 2, 6], [10], 19, 'weight'), 5, {}, F32, 'gn planes of 12, weight only');
    });

    it('rejects groups that do not divide C, bad weight/bias shapes and dtypes, naming the shapes', async () => {
      const x = engine.zeros([2, 6, 3, 3]);
      const w5 = engine.zeros([5]);
      const w6 = engine.zeros([6]);
      const w23 = engine.zeros([2, 3]);
      const bad = (f: Parameters<typeof runProgram>[2]) => runProgram(engine, 'bad', f);
      await expect(bad((rec) => groupNorm(rec, x, 4))).rejects.toThrow(/group_norm: 4 groups do not divide the 6 channels of input \[2, 6, 3, 3\]/);
      await expect(bad((rec) => groupNorm(rec, x, 0))).rejects.toThrow(/0 groups/);
      await expect(bad((rec) => groupNorm(rec, x, 2, w5))).rejects.toThrow(/group_norm: weight has shape \[5\] but must be \[6\]/);
      await expect(bad((rec) => groupNorm(rec, x, 2, w6, w23))).rejects.toThrow(/bias has shape \[2, 3\] but must be \[6\]/);
      await expect(bad((rec) => groupNorm(rec, engine.zeros([6]), 2))).rejects.toThrow(/must be \[N, C, \.\.\.\]/);
      await expect(bad((rec) => groupNorm(rec, x, 2, undefined, undefined, { eps: -1 }))).rejects.toThrow(/eps/);
      if (engine.hasF16) {
        // f16 parameters under f32 activations are mixed precision (test/mixed-precision.test.ts); the reverse is refused.
        const x16 = engine.zeros([2, 6, 3, 3], 'f16');
        await expect(bad((rec) => groupNorm(rec, x16, 2, w6))).rejects.toThrow(/group_norm: weight: f32 parameters with f16 activations are not supported/);
        const w16 = engine.zeros([6], 'f16');
        await expect(bad((rec) => groupNorm(rec, x, 2, w16, w6))).rejects.toThrow(/group_norm: weight is f16 but bias is f32/);
      }
      expect(engine.activeRecorder).toBeNull();
    });
  });

  describe('layerNorm', () => {
    for (const D of [1, 48, 77, 320, 769]) {
      it(`over the last dimension, D = ${D}, [2, 3, D], affine and not`, async () => {
        await checkLayerNorm(makeCase([2, 3, D], [D], D), [D], undefined, F32, `ln D=${D}`);
        await checkLayerNorm(makeCase([5, D], [D], D + 1, 'none'), [D], undefined, F32, `ln D=${D} no affine`);
      });
    }

    it('over [C, H, W] (SILO CNN style) with affine', async () => {
      await checkLayerNorm(makeCase([2, 4, 7, 5], [4, 7, 5], 20), [4, 7, 5], undefined, F32, 'ln [4, 7, 5]');
      await checkLayerNorm(makeCase([1, 8, 16, 16], [8, 16, 16], 21), [8, 16, 16], undefined, F32, 'ln [8, 16, 16]');
      await checkLayerNorm(makeCase([2, 8, 16, 16], [16, 16], 22, 'weight'), [16, 16], undefined, F32, 'ln [16, 16] of [2, 8, 16, 16]');
      // one row of 65536, split into 16 chunks on the workgroup path; offset data checks the merge
      await checkLayerNorm(makeCase([1, 16, 64, 64], [16, 64, 64], 23, 'both', 29, 31), [16, 64, 64], undefined, OFFSET, 'ln [16, 64, 64]');
    });

    it('eps variants', async () => {
      for (const eps of [1e-6, 1e-2]) {
        await checkLayerNorm(makeCase([3, 40], [40], 30, 'both', -0.05, 0.05), [40], eps, F32, `ln eps ${eps}`);
      }
    });

    it('one dispatch where rows are one chunk (fused), bit-identical to statistics + apply, and its statistics reused', async () => {
      expect(fusedNormEntry(engine, { layout: 'thread', rows: 1024, len: 320, adiv: 1, amod: 320 })).toBe('norm_fused_row4');
      expect(fusedNormEntry(engine, { layout: 'thread', rows: 1024, len: 77, adiv: 1, amod: 77 })).toBeUndefined(); // not whole vec4s
      expect(fusedNormEntry(engine, { layout: 'thread', rows: 2, len: 4096, adiv: 1, amod: 4096 })).toBeUndefined(); // two thread chunks
      expect(fusedNormEntry(engine, { layout: 'thread', rows: 64, len: 160, adiv: 16, amod: 320 })).toBeUndefined(); // GroupNorm rows
      expect(fusedNormEntry(engine, { layout: 'group', rows: 64, len: 160, adiv: 16, amod: 320 })).toBe('norm_fused');
      expect(fusedNormEntry(engine, { layout: 'group', rows: 2, len: 131072, adiv: 1, amod: 131072 })).toBeUndefined(); // split rows
      const x = engine.tensor(randomData(3 * 77 * 320, 50, 29, 31), [3, 77, 320]);
      const w = engine.tensor(randomData(320, 51, 0.5, 1.5), [320]);
      const b = engine.tensor(randomData(320, 52, -0.5, 0.5), [320]);
      const gx = engine.tensor(randomData(2 * 40 * 5 * 3, 53), [2, 40, 5, 3]);
      const gw = engine.tensor(randomData(40, 54, 0.5, 1.5), [40]);
      for (const layout of LAYOUTS) {
        const fused = await runProgram(engine, 'ln', (rec) => layerNorm(rec, x, [320], w, b, { layout }));
        const split = await runProgram(engine, 'ln', (rec) => layerNorm(rec, x, [320], w, b, { layout, fuse: false }));
        expect(fused.report.dispatches, layout).toBe(1);
        expect(split.report.dispatches, layout).toBe(2);
        expectClose(await fused.result.read(), await split.result.read(), EXACT, `ln fused = stats + apply (${layout})`);
        const gn = await runProgram(engine, 'gn', (rec) => groupNorm(rec, gx, 8, gw, gw, { layout, act: 'silu' }));
        const gnSplit = await runProgram(engine, 'gn', (rec) => groupNorm(rec, gx, 8, gw, gw, { layout, act: 'silu', fuse: false }));
        expect(gn.report.dispatches, `gn ${layout}`).toBe(layout === 'group' ? 1 : 2);
        expectClose(await gn.result.read(), await gnSplit.result.read(), EXACT, `gn fused = stats + apply (${layout})`);
        // A second normalisation of the same input in the recording reuses the fused kernel's statistics.
        const twice = await runProgram(engine, 'ln', (rec) => [layerNorm(rec, x, [320], w, b, { layout }), layerNorm(rec, x, [320], undefined, b, { layout })]);
        expect(twice.report.dispatches, layout).toBe(2);
        const ref = layerNormRef(await x.read(), 320, undefined, await b.read(), 1e-5);
        expectClose(await twice.result[1]!.read(), ref, OFFSET, `second ln reads the fused statistics (${layout})`);
        for (const t of [fused.result, split.result, gn.result, gnSplit.result, ...twice.result]) t.dispose();
      }
      for (const t of [x, w, b, gx, gw]) t.dispose();
    });

    it('rejects a normalized shape that is not the trailing dims, and mismatched weight/bias', async () => {
      const x = engine.zeros([2, 4, 5]);
      const w = engine.zeros([4, 5]);
      const bad = (f: Parameters<typeof runProgram>[2]) => runProgram(engine, 'bad', f);
      await expect(bad((rec) => layerNorm(rec, x, [4]))).rejects.toThrow(/layer_norm: normalized shape \[4\] is not the trailing dims of input \[2, 4, 5\]/);
      await expect(bad((rec) => layerNorm(rec, x, []))).rejects.toThrow(/normalized shape \[\]/);
      await expect(bad((rec) => layerNorm(rec, x, [5], w))).rejects.toThrow(/layer_norm: weight has shape \[4, 5\] but must be \[5\]/);
      await expect(bad((rec) => layerNorm(rec, x, [4, 5], undefined, engine.zeros([20])))).rejects.toThrow(/bias has shape \[20\] but must be \[4, 5\]/);
      expect(engine.activeRecorder).toBeNull();
    });
  });

  describe('f16 storage', () => {
    it('groupNorm + SiLU and layerNorm in f16 (needs shader-f16)', async (ctx) => {
      if (!engine.hasF16) {
        console.log('SKIP f16 norms: this adapter has no shader-f16');
        ctx.skip();
      }
      await checkGroupNorm(makeCase([2, 320, 3, 5], [320], 40), 32, { act: 'silu' }, F16, 'f16 gn C=320', 'f16');
      await checkGroupNorm(makeCase([1, 4, 64, 40], [4], 41), 2, {}, F16, 'f16 gn long rows', 'f16');
      await checkLayerNorm(makeCase([2, 77, 320], [320], 42), [320], undefined, F16, 'f16 ln D=320', 'f16');
      await checkLayerNorm(makeCase([1, 8, 16, 16], [8, 16, 16], 43), [8, 16, 16], undefined, F16, 'f16 ln [8, 16, 16]', 'f16');
    });
  });
});
