import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import type { Tensor } from '../src/engine/tensor.js';
import { runProgram } from '../src/engine/recorder.js';
import { groupNormBackward, layerNormBackward, type NormGrads } from '../src/engine/ops/norm-backward.js';
import type { NormLayout } from '../src/engine/ops/norm.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { describeReductions } from './helpers/reductions.js';
import { rowNormBackwardRef, rowNormForward64, groupNormSpec, layerNormSpec, type RowNormSpec } from './ref/norm-backward.js';
import { dot } from './ref/elementwise-backward.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// GPU vs the f64 VJP: dx = rstd * (gy - mean(gy) - y mean(gy y)) on O(1) data has O(1) terms whose f32
// rounding (row sums of up to ~10^4 blocked terms, relative ~1e-6) is magnified by rstd (~1.7 for
// uniform [-2, 2] data); dWeight / dBias are sums of up to ~10^4 O(1) terms: ~1e-6 relative of
// sum |term|, allowed as 2e-4 absolute on the largest sums.
const TOL: Tolerance = { atol: 2e-5, rtol: 1e-4 };
const PARAM_TOL: Tolerance = { atol: 2e-4, rtol: 1e-4 };
const EXACT: Tolerance = { atol: 0, rtol: 0 };

const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);
// Row sums and dx in one dispatch (the default where it applies) and as two.
const FUSE = [undefined, false] as const;
type Affine = 'both' | 'weight' | 'bias' | 'none';

interface Case {
  x: Float32Array;
  g: Float32Array;
  w?: Float32Array;
  b?: Float32Array;
}

function makeCase(n: number, np: number, seed: number, affine: Affine): Case {
  return {
    x: randomData(n, seed, -2, 2),
    g: randomData(n, seed + 1),
    w: affine === 'both' || affine === 'weight' ? randomData(np, seed + 2, 0.5, 1.5) : undefined,
    b: affine === 'both' || affine === 'bias' ? randomData(np, seed + 3, -0.5, 0.5) : undefined,
  };
}

async function compare(grads: NormGrads, c: Case, spec: RowNormSpec, what: string): Promise<void> {
  const ref = rowNormBackwardRef(c.x, c.g, spec, c.w, c.b);
  expectClose(await grads.dx.read(), ref.dx, TOL, `${what} dx`);
  expect(grads.dWeight !== undefined, `${what}: dWeight present`).toBe(c.w !== undefined);
  expect(grads.dBias !== undefined, `${what}: dBias present`).toBe(c.b !== undefined);
  if (grads.dWeight) expectClose(await grads.dWeight.read(), ref.dw, PARAM_TOL, `${what} dWeight`);
  if (grads.dBias) expectClose(await grads.dBias.read(), ref.db, PARAM_TOL, `${what} dBias`);
  for (const t of [grads.dx, grads.dWeight, grads.dBias]) t?.dispose();
}

function upload(c: Case, shape: number[], paramShape: number[]): { x: Tensor; g: Tensor; w?: Tensor; b?: Tensor } {
  return {
    x: engine.tensor(c.x, shape),
    g: engine.tensor(c.g, shape),
    w: c.w && engine.tensor(c.w, paramShape),
    b: c.b && engine.tensor(c.b, paramShape),
  };
}

async function checkGroupNorm(shape: number[], groups: number, affine: Affine, silu: boolean, seed: number, layouts: NormLayout[] = ['auto']): Promise<void> {
  const C = shape[1]!;
  const c = makeCase(size(shape), C, seed, affine);
  const t = upload(c, shape, [C]);
  for (const layout of layouts) {
    for (const fuse of FUSE) {
      const what = `gn ${shape.join('x')} g=${groups} ${affine}${silu ? ' silu' : ''} ${layout}${fuse === false ? ' unfused' : ''}`;
      const { result } = await runProgram(engine, 'gnb', (rec) =>
        groupNormBackward(rec, t.x, t.g, groups, t.w, t.b, { act: silu ? 'silu' : 'none', layout, fuse }),
      );
      expect(result.dx.shape).toEqual(shape);
      if (result.dWeight) expect(result.dWeight.shape).toEqual([C]);
      await compare(result, c, groupNormSpec(shape, groups, 1e-5, silu), what);
    }
  }
  for (const v of Object.values(t)) v?.dispose();
}

async function checkLayerNorm(shape: number[], normShape: number[], affine: Affine, seed: number): Promise<void> {
  const len = size(normShape);
  const c = makeCase(size(shape), len, seed, affine);
  const t = upload(c, shape, normShape);
  for (const fuse of FUSE) {
    const { result } = await runProgram(engine, 'lnb', (rec) => layerNormBackward(rec, t.x, t.g, normShape, t.w, t.b, { fuse }));
    if (result.dWeight) expect(result.dWeight.shape).toEqual(normShape);
    await compare(result, c, layerNormSpec(len), `ln ${shape.join('x')} over ${normShape.join('x')} ${affine}${fuse === false ? ' unfused' : ''}`);
  }
  for (const v of Object.values(t)) v?.dispose();
}

const withParams: number[] = [];
const withoutParams: number[] = [];

// Every kernel test runs with both workgroup-reduction forms (tree and subgroups).
describeReductions(() => {
  describe('groupNorm backward', () => {
    it('affine with and without SiLU, both statistics layouts, batch 2, odd spatial', async () => {
      await checkGroupNorm([2, 6, 5, 7], 3, 'both', false, 1, ['thread', 'group']);
      await checkGroupNorm([2, 6, 5, 7], 3, 'both', true, 2, ['thread', 'group']);
      await checkGroupNorm([2, 64, 3, 3], 32, 'both', true, 3);
    });

    it('paramGrads false: the same dx without the parameter pass (one dispatch fewer), group and layer norm', async () => {
      const shape = [2, 6, 5, 7];
      const c = makeCase(size(shape), 6, 11, 'both');
      const t = upload(c, shape, [6]);
      const lnShape = [3, 5, 7];
      const lc = makeCase(size(lnShape), 7, 12, 'both');
      const lt = upload(lc, lnShape, [7]);
      for (const paramGrads of [true, false]) {
        const { result, report } = await runProgram(engine, 'gnb', (rec) => groupNormBackward(rec, t.x, t.g, 3, t.w, t.b, { act: 'silu', paramGrads }));
        const ln = await runProgram(engine, 'lnb', (rec) => layerNormBackward(rec, lt.x, lt.g, [7], lt.w, lt.b, { paramGrads }));
        if (paramGrads) {
          await compare(result, c, groupNormSpec(shape, 3, 1e-5, true), 'gn with parameter gradients');
          await compare(ln.result, lc, layerNormSpec(7), 'ln with parameter gradients');
        } else {
          expect(result.dWeight).toBeUndefined();
          expect(result.dBias).toBeUndefined();
          expect(ln.result.dWeight).toBeUndefined();
          expectClose(await result.dx.read(), rowNormBackwardRef(c.x, c.g, groupNormSpec(shape, 3, 1e-5, true), c.w, c.b).dx, TOL, 'gn dx only');
          expectClose(await ln.result.dx.read(), rowNormBackwardRef(lc.x, lc.g, layerNormSpec(7), lc.w, lc.b).dx, TOL, 'ln dx only');
          result.dx.dispose();
          ln.result.dx.dispose();
        }
        (paramGrads ? withParams : withoutParams).push(report.dispatches, ln.report.dispatches);
      }
      expect(withoutParams).toEqual(withParams.map((d) => d - 1));
      for (const v of [...Object.values(t), ...Object.values(lt)]) v?.dispose();
    });

    it('no affine, weight only, bias only (SiLU needs the bias in z)', async () => {
      await checkGroupNorm([2, 4, 3, 3], 2, 'none', false, 4);
      await checkGroupNorm([2, 4, 3, 3], 2, 'none', true, 5);
      await checkGroupNorm([1, 8, 3, 5], 4, 'weight', true, 6);
      await checkGroupNorm([1, 8, 3, 5], 4, 'bias', true, 7);
    });

    it('small and odd configurations: 1 group, groups = C, rank 2 and 3, one element per group', async () => {
      await checkGroupNorm([2, 6, 5, 7], 1, 'both', true, 8);
      await checkGroupNorm([1, 8, 3, 3], 8, 'both', false, 9);
      await checkGroupNorm([3, 8], 4, 'both', false, 10);
      await checkGroupNorm([2, 6, 11], 3, 'both', true, 11);
      // one element per group: y = 0 and dx = 0 exactly
      await checkGroupNorm([1, 3, 1, 1], 3, 'both', true, 12);
    });

    it('long rows (workgroup reduction over 8192 elements; stats split over workgroups)', async () => {
      await checkGroupNorm([2, 32, 32, 16], 2, 'both', true, 13, ['group']);
    });

    it('rejects f16 tensors and mismatched gradOut shapes', async () => {
      const x = engine.tensor(randomData(24, 1), [1, 4, 2, 3]);
      const g = engine.tensor(randomData(20, 2), [1, 4, 5]);
      await expect(runProgram(engine, 'bad', (rec) => groupNormBackward(rec, x, g, 2))).rejects.toThrow(/gradOut has shape \[1, 4, 5\]/);
      x.dispose();
      g.dispose();
    });
  });

  describe('layerNorm backward', () => {
    it('last dim: 1, 7, 77 and 320 features, batch of rows', async () => {
      await checkLayerNorm([3, 1], [1], 'both', 20);
      await checkLayerNorm([2, 5, 7], [7], 'both', 21);
      await checkLayerNorm([2, 3, 77], [77], 'weight', 22);
      await checkLayerNorm([2, 9, 320], [320], 'both', 23);
      await checkLayerNorm([4, 33], [33], 'none', 24);
    });

    it('[C, H, W] element-wise affine', async () => {
      await checkLayerNorm([2, 3, 5, 7], [3, 5, 7], 'both', 25);
      await checkLayerNorm([1, 4, 16, 16], [4, 16, 16], 'bias', 26);
    });
  });

  describe('accumulate: dx + a residual gradient', () => {
    it('in the fused dispatch and after the two-pass one, bit-identical to adding it afterwards', async () => {
      const shape = [2, 9, 320];
      const c = makeCase(size(shape), 320, 30, 'both');
      const t = upload(c, shape, [320]);
      const res = engine.tensor(randomData(size(shape), 33), shape);
      const gshape = [2, 6, 5, 7];
      const gc = makeCase(size(gshape), 6, 34, 'weight');
      const gt = upload(gc, gshape, [6]);
      const gres = engine.tensor(randomData(size(gshape), 37), gshape);
      const want = (dx: Float32Array, r: Float32Array) => dx.map((v, i) => Math.fround(r[i]! + v));
      const plainLn = await runProgram(engine, 'lnb', (rec) => layerNormBackward(rec, t.x, t.g, [320], t.w, t.b, { paramGrads: false }));
      const plainGn = await runProgram(engine, 'gnb', (rec) => groupNormBackward(rec, gt.x, gt.g, 3, gt.w, undefined, { act: 'silu', paramGrads: false }));
      const lnDx = await plainLn.result.dx.read();
      const gnDx = await plainGn.result.dx.read();
      const r = await res.read();
      const gr = await gres.read();
      for (const fuse of FUSE) {
        const ln = await runProgram(engine, 'lnb', (rec) => layerNormBackward(rec, t.x, t.g, [320], t.w, t.b, { paramGrads: false, accumulate: res, fuse }));
        expect(ln.report.dispatches, `ln ${fuse}`).toBe(fuse === false ? 4 : 2); // statistics + (fused | rows, dx, add)
        expectClose(await ln.result.dx.read(), want(lnDx, r), EXACT, `ln dx + residual (${fuse})`);
        const gn = await runProgram(engine, 'gnb', (rec) => groupNormBackward(rec, gt.x, gt.g, 3, gt.w, undefined, { act: 'silu', accumulate: gres, fuse }));
        expectClose(await gn.result.dx.read(), want(gnDx, gr), EXACT, `gn dx + residual (${fuse})`);
        expect(gn.result.dWeight).toBeDefined();
        expectClose(await gn.result.dWeight!.read(), rowNormBackwardRef(gc.x, gc.g, groupNormSpec(gshape, 3, 1e-5, true), gc.w).dw, PARAM_TOL, 'gn dWeight with accumulate');
        for (const x of [ln.result.dx, gn.result.dx, gn.result.dWeight]) x?.dispose();
      }
      await expect(runProgram(engine, 'bad', (rec) => layerNormBackward(rec, t.x, t.g, [320], t.w, t.b, { accumulate: gres }))).rejects.toThrow(
        /layer_norm_backward: accumulate has shape \[2, 6, 5, 7\] but must be \[2, 9, 320\]/,
      );
      for (const x of [plainLn.result.dx, plainGn.result.dx, res, gres, ...Object.values(t), ...Object.values(gt)]) x?.dispose();
    });
  });

  describe('reference VJP', () => {
    it('is the adjoint of the f64 forward: <v, J u> by central differences = <J^T v, u>', () => {
      // Central differences in f64 with h = 1e-5: truncation ~h^2 * |f'''| and cancellation ~1e-16 / h.
      const h = 1e-5;
      const specs: [string, number, RowNormSpec][] = [
        ['gn silu', 2 * 6 * 5, groupNormSpec([2, 6, 5], 3, 1e-5, true)],
        ['gn', 2 * 4 * 3, groupNormSpec([2, 4, 3], 2, 1e-3, false)],
        ['ln', 3 * 7, layerNormSpec(7)],
      ];
      for (const [what, n, s] of specs) {
        const x = randomData(n, 1, -2, 2);
        const w = randomData(s.amod, 2, 0.5, 1.5);
        const b = randomData(s.amod, 3, -0.5, 0.5);
        const v = randomData(n, 4);
        const ux = randomData(n, 5);
        const uw = randomData(s.amod, 6);
        const ub = randomData(s.amod, 7);
        const ref = rowNormBackwardRef(x, v, s, w, b);
        const shift = (base: ArrayLike<number>, u: ArrayLike<number>, e: number) => Float64Array.from(base, (q, i) => q + e * u[i]!);
        const fd =
          (dot(v, rowNormForward64(shift(x, ux, h), s, shift(w, uw, h), shift(b, ub, h))) -
            dot(v, rowNormForward64(shift(x, ux, -h), s, shift(w, uw, -h), shift(b, ub, -h)))) /
          (2 * h);
        const adj = dot(ref.dx, ux) + dot(ref.dw, uw) + dot(ref.db, ub);
        expect(Math.abs(fd - adj), `${what}: fd ${fd} vs adjoint ${adj}`).toBeLessThan(1e-7 * (1 + Math.abs(fd)));
      }
    });
  });
});
