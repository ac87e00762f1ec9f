// The UNet reverse pass for SILO's readout operator (src/models/unet/readout-vjp.ts):
//   d/d sample of [ sum_k <gradFeatures[k], feature_k(sample)> + <gradEps, eps(sample)> ]
// on the golden unet_mini (../shared/golden, read in place) at its 16x16 latent: with zero feature
// cotangents it is the golden vjp_sample; directional central differences of the GPU forward check the
// feature injection (several features with eps, and single features alone so a wrong injection point
// cannot hide behind the others). The resnet stage's tap algebra with output_scale_factor != 1 (1 in every
// SD-1.5 block, so the UNet cannot tell) is checked against central differences of a CPU reference.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { silu } from '../../src/engine/ops/elementwise.js';
import type { SafetensorsFile } from '../../src/formats/safetensors.js';
import { f32Entry, parseSafetensors, serializeSafetensors } from '../../src/formats/safetensors.js';
import { compare } from '../../src/check/compare.js';
import { readSafetensors } from '../../src/check/files.js';
import { loadUNetFolder } from '../../src/check/unet.js';
import { WeightLoader } from '../../src/models/weights.js';
import { ResnetBlock2D } from '../../src/models/resnet.js';
import { resnetStage } from '../../src/models/vjp-stages.js';
import type { UNet2DConditionModel } from '../../src/models/unet/unet.js';
import { readoutForward, readoutSampleVjp } from '../../src/models/unet/readout-vjp.js';
import { readoutStageNames } from '../../src/models/unet/stages.js';
import { getEngine, randomData } from '../helpers/engine.js';
import { expectAllPass, goldenFiles } from '../helpers/golden.js';
import { conv2dRef } from '../ref/conv2d.js';
import { groupNormRef } from '../ref/norm.js';
import { matmulRef } from '../ref/matmul.js';

let engine: Engine;
let unet: UNet2DConditionModel;
let loader: WeightLoader;
let golden: SafetensorsFile;
let sample: Tensor;
let context: Tensor;
let cotangent: Tensor;
let timestep: number;
const SHAPE = [1, 4, 16, 16];

beforeAll(async () => {
  engine = await getEngine();
  ({ model: unet, loader } = await loadUNetFolder(engine, goldenFiles('unet_mini')));
  golden = await readSafetensors(goldenFiles('unet_mini'), 'golden.safetensors');
  sample = engine.tensor(golden.getF32('input.sample'), SHAPE, 'f32', 'sample');
  context = engine.tensor(golden.getF32('input.encoder_hidden_states'), [1, 77, 48], 'f32', 'context');
  cotangent = engine.tensor(golden.getF32('input.vjp_cotangent'), SHAPE, 'f32', 'cotangent');
  timestep = golden.getIntegers('input.timestep')[0]!;
});

afterAll(() => {
  for (const t of [sample, context, cotangent]) t?.dispose();
  loader?.disposeAll();
});

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
};
const norm = (a: ArrayLike<number>) => Math.sqrt(dot(a, a));

/** The golden README's vjp_sample rule (as src/check/unet.ts): atol 1e-3 x max|ref|, rtol 2e-3. */
const VJP_TOL = { atolRelativeToMaxAbs: 1e-3, rtol: 2e-3 };

describe('UNet readout VJP (unet_mini, 16x16)', () => {
  it('names the 12 up-block ResNets as readout stages, in the forward readout order', () => {
    const names = readoutStageNames(unet);
    expect(names).toHaveLength(12);
    expect(names.slice(0, 4)).toEqual(['up_blocks.0.resnets.0', 'up_blocks.0.resnets.1', 'up_blocks.0.resnets.2', 'up_blocks.1.resnets.0']);
  });

  it('zero feature cotangents + gradEps = input.vjp_cotangent give the golden vjp_sample (atol 1e-3 max|ref|, rtol 2e-3); readoutForward gives the golden eps and features (2e-4 / 1e-3)', async () => {
    const live = engine.pool.stats.liveBytes;
    const shapes = Array.from({ length: 12 }, (_, k) => golden.info(`readout_hidden_${String(k).padStart(2, '0')}`).shape);
    const zeros = shapes.map((s) => engine.zeros(s));
    const { result: v } = await runProgram(engine, 'readout-vjp', (rec) => readoutSampleVjp(rec, unet, sample, timestep, context, zeros, cotangent));
    // The tape path: one forward for eps, features and the saved stage inputs, then the reverse walk.
    const { result: pass } = await runProgram(engine, 'readout-fwd', (rec) => readoutForward(rec, unet, sample, timestep, context));
    const { result: v2 } = await runProgram(engine, 'readout-tape-vjp', (rec) => pass.vjp(rec, zeros, cotangent));
    expect(() => pass.vjp({} as never, zeros, cotangent)).toThrow(/already called or it was discarded/);
    const expected = golden.getF32('vjp_sample');
    const items = [
      { name: 'vjp_sample (readoutSampleVjp)', actual: await v.read(), expected, tol: VJP_TOL },
      { name: 'vjp_sample (readoutForward + vjp)', actual: await v2.read(), expected, tol: VJP_TOL },
      { name: 'eps (readoutForward)', actual: await pass.eps.read(), expected: golden.getF32('eps'), tol: { atol: 2e-4, rtol: 1e-3 } },
    ];
    expect(pass.features.map((f) => f.shape)).toEqual(shapes);
    for (const [k, f] of pass.features.entries()) {
      const name = `readout_hidden_${String(k).padStart(2, '0')}`;
      items.push({ name: `${name} (readoutForward)`, actual: await f.read(), expected: golden.getF32(name), tol: { atol: 2e-4, rtol: 1e-3 } });
    }
    expectAllPass(items, 'unet_mini readout vjp');
    for (const t of [v, v2, pass.eps, ...pass.features, ...zeros]) t.dispose();
    expect(engine.pool.stats.liveBytes, 'both paths freed every intermediate').toBe(live);
  });

  /** f(x) = sum_k <r_k, feature_k(x)> (+ <rEps, eps(x)>) from the plain forward, accumulated in f64. */
  async function objective(x: Float32Array, r: Map<number, Float32Array>, rEps?: Float32Array): Promise<number> {
    const t = engine.tensor(x, SHAPE);
    const { result } = await runProgram(engine, 'readout-f', (rec) => unet.forward(rec, t, timestep, context, { readout: true }));
    let f = rEps ? dot(rEps, await result.eps.read()) : 0;
    for (const [k, rk] of r) f += dot(rk, await result.readout![k]!.read());
    for (const u of [t, result.eps, ...result.readout!]) u.dispose();
    return f;
  }

  /**
   * <v, d> against (f(x + h d) - f(x - h d)) / 2h for a random direction d (entries in [-1, 1], the
   * sample being ~N(0, 1)). Step and tolerance: the network is smooth at this scale (SiLU, GroupNorm,
   * softmax, GEGLU), so truncation is ~h^2 |f'''| / 6, ~1e-4 relative at h = 1e-2; each f32 forward is
   * ~1e-6 relative from exact (the golden's observed error), so f's rounding noise divided by 2h is also
   * ~1e-4 of <v, d>. Allowed: 1e-2 of the typical size of <v, d>, ||v|| rms(d) (the scale that does not
   * collapse if d happens to be nearly orthogonal to v); a misplaced or missing injection moves <v, d> by
   * O(1) of that scale.
   */
  async function directional(what: string, r: Map<number, Float32Array>, rEps: Float32Array | undefined, seed: number, vjp: (grads: (Tensor | undefined)[], gEps?: Tensor) => Promise<Float32Array>) {
    const grads: (Tensor | undefined)[] = Array.from({ length: 12 }, () => undefined);
    for (const [k, rk] of r) grads[k] = engine.tensor(rk, golden.info(`readout_hidden_${String(k).padStart(2, '0')}`).shape);
    const gEps = rEps ? engine.tensor(rEps, SHAPE) : undefined;
    const v = await vjp(grads, gEps);
    for (const g of [...grads, gEps]) g?.dispose();
    const x = golden.getF32('input.sample');
    const d = randomData(x.length, seed, -1, 1);
    const h = 1e-2;
    const step = (s: number) => x.map((xi, i) => xi + s * h * d[i]!);
    const fd = ((await objective(step(1), r, rEps)) - (await objective(step(-1), r, rEps))) / (2 * h);
    const analytic = dot(v, d);
    const scaleVD = norm(v) * (norm(d) / Math.sqrt(d.length));
    console.log(`${what}: <v, d> ${analytic.toExponential(6)}, central difference ${fd.toExponential(6)}, |diff| / (||v|| rms d) ${(Math.abs(analytic - fd) / scaleVD).toExponential(2)}`);
    expect(scaleVD, `${what}: the VJP is not zero`).toBeGreaterThan(0);
    expect(Math.abs(analytic - fd), what).toBeLessThan(1e-2 * scaleVD);
    return v;
  }

  const features = (ks: number[], seed: number) =>
    new Map(ks.map((k) => [k, randomData(golden.info(`readout_hidden_${String(k).padStart(2, '0')}`).shape.reduce((a, b) => a * b, 1), seed + k, -1, 1)]));

  it('features 0, 5, 11 and eps together: <v, d> matches central differences of the forward (h 1e-2, 1% of ||v|| rms d); the tape path gives the same v', async () => {
    const r = features([0, 5, 11], 100);
    const rEps = randomData(4 * 256, 99, -1, 1);
    const v = await directional('features 0, 5, 11 + eps', r, rEps, 7, async (grads, gEps) => {
      const { result } = await runProgram(engine, 'readout-vjp', (rec) => readoutSampleVjp(rec, unet, sample, timestep, context, grads, gEps));
      const out = await result.read();
      result.dispose();
      return out;
    });
    // Same cotangents through readoutForward's tape: the same ops on the same inputs (tolerance 1e-5 of max|v|
    // for any reordering; in practice identical).
    const grads = Array.from({ length: 12 }, (_, k) => (r.has(k) ? engine.tensor(r.get(k)!, golden.info(`readout_hidden_${String(k).padStart(2, '0')}`).shape) : undefined));
    const gEps = engine.tensor(rEps, SHAPE);
    const { result: pass } = await runProgram(engine, 'readout-fwd', (rec) => readoutForward(rec, unet, sample, timestep, context));
    const { result: v2 } = await runProgram(engine, 'readout-tape-vjp', (rec) => pass.vjp(rec, grads, gEps));
    const res = compare({ name: 'tape vjp', actual: await v2.read(), expected: v, tol: { atolRelativeToMaxAbs: 1e-5 } });
    expect(res.pass, res.detail).toBe(true);
    for (const t of [v2, gEps, pass.eps, ...pass.features, ...grads]) t?.dispose();
  });

  for (const k of [0, 5, 11]) {
    it(`feature ${k} alone, no eps cotangent (the chain stops after its ResNet): central differences (h 1e-2, 1% of ||v|| rms d)`, async () => {
      await directional(`feature ${k} alone`, features([k], 200), undefined, 20 + k, async (grads) => {
        const { result } = await runProgram(engine, 'readout-vjp-1', (rec) => readoutSampleVjp(rec, unet, sample, timestep, context, grads));
        const out = await result.read();
        result.dispose();
        return out;
      });
    });
  }

  it('discard() frees a pass without a reverse walk; bad cotangents are named', async () => {
    const live = engine.pool.stats.liveBytes;
    const { result: pass } = await runProgram(engine, 'readout-fwd', (rec) => readoutForward(rec, unet, sample, timestep, context));
    for (const t of [pass.eps, ...pass.features]) t.dispose();
    pass.discard();
    pass.discard(); // idempotent
    expect(engine.pool.stats.liveBytes).toBe(live);
    const g = engine.zeros([1, 64, 4, 4]);
    const grads = Array.from({ length: 12 }, (_, k) => (k === 0 ? g : undefined));
    await expect(runProgram(engine, 'bad', (rec) => readoutSampleVjp(rec, unet, sample, timestep, context, grads))).rejects.toThrow(
      /gradFeatures\[0\] \[1, 64, 4, 4\] must be shaped like feature 0 \(up_blocks\.0\.resnets\.0\): \[1, 64, 2, 2\]/,
    );
    await expect(runProgram(engine, 'bad', (rec) => readoutSampleVjp(rec, unet, sample, timestep, context, [g]))).rejects.toThrow(/1 feature gradients for 12 readout features/);
    await expect(runProgram(engine, 'bad', (rec) => readoutSampleVjp(rec, unet, sample, timestep, context, new Array(12).fill(undefined)))).rejects.toThrow(
      /every cotangent is absent/,
    );
    g.dispose();
    expect(engine.pool.stats.liveBytes).toBe(live);
  });
});

// ---------------------------------------------------------------------------------------------------
// The resnet stage's tap: out = (shortcut(x) + h2) / s, so d h2 = gradOut / s + gradTap.

type W = Record<string, { data: Float32Array; shape: number[] }>;

function resnetWeights(cin: number, cout: number, temb: number): W {
  const r = (shape: number[], s: number, lo = -0.3, hi = 0.3) => ({ data: randomData(shape.reduce((a, b) => a * b, 1), 900 + s, lo, hi), shape });
  return {
    'norm1.weight': r([cin], 1, 0.8, 1.2), 'norm1.bias': r([cin], 2),
    'conv1.weight': r([cout, cin, 3, 3], 3), 'conv1.bias': r([cout], 4),
    'time_emb_proj.weight': r([cout, temb], 9), 'time_emb_proj.bias': r([cout], 10),
    'norm2.weight': r([cout], 5, 0.8, 1.2), 'norm2.bias': r([cout], 6),
    'conv2.weight': r([cout, cout, 3, 3], 7), 'conv2.bias': r([cout], 8),
    'conv_shortcut.weight': r([cout, cin, 1, 1], 11), 'conv_shortcut.bias': r([cout], 12),
  };
}

/** CPU ResnetBlock2D (groups 4): { out = (shortcut(x) + hidden) / s, hidden }. */
function resnetRef(x: ArrayLike<number>, shape: number[], w: W, cout: number, tembSilu: Float32Array, s: number) {
  const [n, cin, h, wd] = shape as [number, number, number, number];
  const g = (k: string) => w[k]!.data;
  let a = groupNormRef(x, shape, 4, g('norm1.weight'), g('norm1.bias'), 1e-5, 'silu');
  a = conv2dRef(a, shape, g('conv1.weight'), [cout, cin, 3, 3], g('conv1.bias'), { padding: [1, 1] }).out;
  const tc = tembSilu.length / n;
  const p = matmulRef(tembSilu, [n, tc], g('time_emb_proj.weight'), [cout, tc], { transB: true, bias: g('time_emb_proj.bias') }).out;
  a = a.map((v, i) => v + p[Math.floor(i / (h * wd))]!); // [N, C] broadcast over H x W
  const oshape = [n, cout, h, wd];
  const hidden = conv2dRef(groupNormRef(a, oshape, 4, g('norm2.weight'), g('norm2.bias'), 1e-5, 'silu'), oshape, g('conv2.weight'), [cout, cout, 3, 3], g('conv2.bias'), { padding: [1, 1] }).out;
  const skip = conv2dRef(x, shape, g('conv_shortcut.weight'), [cout, cin, 1, 1], g('conv_shortcut.bias')).out;
  return { out: hidden.map((v, i) => (v + skip[i]!) / s), hidden };
}

describe('resnetStage tap (output_scale_factor 2, shortcut conv, time embedding, batch 2, 5x7)', () => {
  const [cin, cout, tc, s] = [12, 8, 6, 2];
  const shape = [2, cin, 5, 7];
  const oshape = [2, cout, 5, 7];
  const size = (sh: number[]) => sh.reduce((a, b) => a * b, 1);

  for (const withOut of [false, true]) {
    it(`vjp(gradOut ${withOut ? 'random' : '0'}, gradTap random) matches central differences of the CPU reference (h 1e-2, 1e-3 relative)`, async () => {
      const w = resnetWeights(cin, cout, tc);
      const entries = Object.fromEntries(Object.entries(w).map(([k, v]) => [k, f32Entry(v.data, v.shape)]));
      const live = engine.pool.stats.liveBytes;
      const l = new WeightLoader(engine, parseSafetensors(serializeSafetensors(entries), 'tap.safetensors'), {});
      const block = new ResnetBlock2D(l, cin, cout, { tembChannels: tc, groups: 4, outputScaleFactor: s });
      l.finish();
      const x = randomData(size(shape), 31, -2, 2);
      const temb = randomData(2 * tc, 32, -2, 2);
      const gOut = withOut ? randomData(size(oshape), 33, -1, 1) : new Float32Array(size(oshape));
      const gTap = randomData(size(oshape), 34, -1, 1);
      const tx = engine.tensor(x, shape);
      const tt = engine.tensor(temb, [2, tc]);
      const tg = engine.tensor(gOut, oshape);
      const tgt = engine.tensor(gTap, oshape);
      const { result } = await runProgram(engine, 'tap', (rec) =>
        rec.engine.tidy(() => resnetStage('tap', block, silu(rec, tt)).vjp(rec, tx, tg, tgt)),
      );
      const v = await result.read();
      // f(x) = <gOut, out(x)> + <gTap, hidden(x)> on the CPU (each layer rounded to f32: ~1e-7 relative, so
      // with h = 1e-2 the quotient's rounding noise is ~1e-5 and truncation ~h^2 = 1e-4 of <v, d>).
      const ts = temb.map((t) => t / (1 + Math.exp(-t)));
      const f = (xs: Float32Array) => {
        const r = resnetRef(xs, shape, w, cout, ts, s);
        return dot(gOut, r.out) + dot(gTap, r.hidden);
      };
      const d = randomData(x.length, 35, -1, 1);
      const h = 1e-2;
      const fd = (f(x.map((xi, i) => xi + h * d[i]!)) - f(x.map((xi, i) => xi - h * d[i]!))) / (2 * h);
      const analytic = dot(v, d);
      console.log(`resnet tap (gradOut ${withOut ? 'random' : '0'}): <v, d> ${analytic.toExponential(6)}, central difference ${fd.toExponential(6)}`);
      expect(Math.abs(analytic - fd)).toBeLessThan(1e-3 * Math.abs(fd));
      for (const t of [tx, tt, tg, tgt, result]) t.dispose();
      l.disposeAll();
      expect(engine.pool.stats.liveBytes, 'the stage VJP freed its intermediates').toBe(live);
    });
  }
});
