// SILO's Readout-Guidance operator (resize + AggregationNetwork): the `silo_rg` golden case in f32 and
// f16, and a small network exercising the options the golden does not (cond_inpaint mask channel, two
// save timesteps sharing blocks, a block without shortcut, tanh head, batch 2, non-square features)
// against a CPU composition of the reference layers.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { f32Entry, parseSafetensors, serializeSafetensors, transpose2d } from '../../src/formats/safetensors.js';
import { WeightLoader, WeightError } from '../../src/models/weights.js';
import { AggregationNetwork } from '../../src/models/silo/readout.js';
import { aggregationConfig, sd15AggregationArgs, type AggregationNetworkConfig } from '../../src/models/silo/config.js';
import { aggregationVjp } from '../../src/models/silo/readout-vjp.js';
import { aggregationGrads } from '../../src/models/silo/readout-vjp.js';
import { runSiloRg } from '../../src/check/silo_rg.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { expectAllPass, goldenFiles, goldenManifest } from '../helpers/golden.js';
import { conv2dRef } from '../ref/conv2d.js';
import { groupNormRef, layerNormRef } from '../ref/norm.js';
import { matmulRef } from '../ref/matmul.js';
import { bilinearRef } from '../ref/resample.js';
import { softmaxRef } from '../ref/softmax.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

describe('SILO AggregationNetwork (silo_rg golden)', () => {
  it('output and debug.* (manifest tolerance 1e-4 / 1e-3) and the 12 feature VJPs (relL2 1e-2, <= 5% over 1e-3 max|ref|) in f32', async () => {
    const items = await runSiloRg(engine, goldenFiles('silo_rg'), goldenManifest('silo_rg'), { log: console.log });
    const vjps = Array.from({ length: 12 }, (_, i) => `vjp_readout_hidden_${String(i).padStart(2, '0')}`);
    expect(items.map((i) => i.name).sort()).toEqual(
      ['output', 'debug.sigma_map', 'debug.resized_00', 'debug.resized_03', 'debug.resized_06', 'debug.resized_09', 'debug.aggregated', 'debug.mixing_softmax', ...vjps].sort(),
    );
    expectAllPass(items, 'silo_rg f32');
  });

  it('output and debug.* with f16 storage (atol 1e-2, rtol 1e-2)', async (ctx) => {
    if (!engine.hasF16) ctx.skip();
    expectAllPass(await runSiloRg(engine, goldenFiles('silo_rg'), goldenManifest('silo_rg'), { dtype: 'f16' }), 'silo_rg f16');
  });

  it('has SILO\'s SD-1.5 construction and rejects the options it does not run', () => {
    const c = aggregationConfig(sd15AggregationArgs());
    expect(c.featureDims).toEqual([1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320]);
    expect([c.projectionDim, c.bottleneckDim, c.numNormGroups, c.outputHeadChannels, c.latentSize, c.sigmaEmbDim]).toEqual([384, 96, 32, 4, 64, 1280]);
    expect([c.useOutputHead, c.outputHeadAct, c.sigmaCondition, c.condInpaint]).toEqual([true, false, true, false]);
    expect(aggregationConfig(sd15AggregationArgs(true)).condInpaint).toBe(true);
    expect(() => aggregationConfig({ ...sd15AggregationArgs(), bottleneck_sequential: true })).toThrow(/bottleneck_sequential = true is not supported/);
    expect(() => aggregationConfig({ ...sd15AggregationArgs(), sigma_condition_2: true })).toThrow(/sigma_condition_2 = true is not supported/);
    expect(() => aggregationConfig({ ...sd15AggregationArgs(), feature_dims: [] })).toThrow(/feature_dims must be a non-empty list/);
  });
});

// ---------------------------------------------------------------------------------------------

type Weights = Record<string, { data: Float32Array; shape: number[] }>;

function file(w: Weights, name: string) {
  const entries = Object.fromEntries(Object.entries(w).map(([k, v]) => [k, f32Entry(v.data, v.shape)]));
  return parseSafetensors(serializeSafetensors(entries), name);
}

const SMALL_ARGS = {
  feature_dims: [63, 5, 4], // 63 + sigma = projection_dim: block 0 has no shortcut
  save_timestep: [0, 1], // 6 groups, blocks shared between timesteps
  projection_dim: 64,
  num_norm_groups: 8,
  use_output_head: true,
  output_head_channels: 3,
  output_head_act: true,
  bottleneck_sequential: false,
  sigma_condition: true,
  cond_inpaint: true,
  latent_size: 8,
  sigma_emb_dim: 16,
};
const SMALL_HW: Array<[number, number]> = [[2, 2], [4, 4], [8, 8], [3, 5], [8, 8], [6, 6]];

function smallWeights(c: AggregationNetworkConfig, seed: number, emb = true): Weights {
  const w: Weights = {};
  let s = seed;
  const r = (name: string, shape: number[], lo: number, hi: number) => {
    w[name] = { data: randomData(shape.reduce((a, b) => a * b, 1), s++, lo, hi), shape };
  };
  const conv = (name: string, cin: number, cout: number, k: number, bias: boolean) => {
    const b = 1.7 / Math.sqrt(cin * k * k);
    r(`${name}.weight`, [cout, cin, k, k], -b, b);
    if (bias) r(`${name}.bias`, [cout], -0.1, 0.1);
  };
  const convNorm = (name: string, cin: number, cout: number, k: number) => {
    conv(name, cin, cout, k, false);
    r(`${name}.norm.weight`, [cout], 0.8, 1.2);
    r(`${name}.norm.bias`, [cout], -0.1, 0.1);
  };
  const n = c.latentSize;
  r('sigma_emb_linear.weight', [n * n, c.sigmaEmbDim], -0.25, 0.25);
  r('sigma_emb_linear.bias', [n * n], -0.1, 0.1);
  r('sigma_emb_norm.weight', [1, n, n], 0.8, 1.2);
  r('sigma_emb_norm.bias', [1, n, n], -0.1, 0.1);
  c.featureDims.forEach((d, i) => {
    const p = `bottleneck_layers.${i}`;
    if (d + 1 !== c.projectionDim) convNorm(`${p}.shortcut`, d + 1, c.projectionDim, 1);
    convNorm(`${p}.conv1`, d + 1, c.bottleneckDim, 1);
    convNorm(`${p}.conv2`, c.bottleneckDim, c.bottleneckDim, 3);
    convNorm(`${p}.conv3`, c.bottleneckDim, c.projectionDim, 1);
    if (emb) {
      r(`${p}.emb_layers.weight`, [c.bottleneckDim, 1280], -0.03, 0.03);
      r(`${p}.emb_layers.bias`, [c.bottleneckDim], -0.1, 0.1);
    }
  });
  r('mixing_weights', [c.featureDims.length * c.saveTimestep.length], -0.5, 0.5);
  conv('output_head.0', c.projectionDim + 2, 128, 3, true);
  conv('output_head.2', 128, 32, 3, true);
  conv('output_head.4', 32, c.outputHeadChannels, 1, true);
  return w;
}

function concatRef(parts: Array<{ data: Float32Array; c: number }>, batch: number, hw: number): Float32Array {
  const total = parts.reduce((s, p) => s + p.c, 0);
  const out = new Float32Array(batch * total * hw);
  for (let b = 0; b < batch; b++) {
    let off = 0;
    for (const p of parts) {
      out.set(p.data.subarray(b * p.c * hw, (b + 1) * p.c * hw), (b * total + off) * hw);
      off += p.c;
    }
  }
  return out;
}

/** dhf AggregationNetwork.forward (after rg_helpers' resize), composed from the CPU references. */
function aggregationRef(c: AggregationNetworkConfig, w: Weights, feats: Float32Array[], emb: Float32Array, mask: Float32Array, batch: number): Float32Array {
  const n = c.latentSize;
  const hw = n * n;
  const g = (k: string) => w[k]!.data;
  const conv = (x: Float32Array, cin: number, name: string, act = 'none') => {
    const ws = w[`${name}.weight`]!.shape;
    const p = (ws[2]! - 1) / 2;
    return conv2dRef(x, [batch, cin, n, n], g(`${name}.weight`), ws, w[`${name}.bias`] ? g(`${name}.bias`) : null, { padding: [p, p], act }).out;
  };
  const convNorm = (x: Float32Array, cin: number, name: string) => {
    const cout = w[`${name}.weight`]!.shape[0]!;
    return groupNormRef(conv(x, cin, name), [batch, cout, n, n], c.numNormGroups, g(`${name}.norm.weight`), g(`${name}.norm.bias`));
  };
  const relu = (x: Float32Array) => x.map((v) => Math.max(v, 0));
  const lin = matmulRef(emb, [batch, c.sigmaEmbDim], g('sigma_emb_linear.weight'), [hw, c.sigmaEmbDim], { transB: true, bias: g('sigma_emb_linear.bias') }).out;
  const sigma = layerNormRef(lin, hw, g('sigma_emb_norm.weight'), g('sigma_emb_norm.bias'));
  const mix = softmaxRef(g('mixing_weights'), feats.length);
  const agg = new Float64Array(batch * c.projectionDim * hw);
  feats.forEach((f, i) => {
    const li = i % c.featureDims.length;
    const d = c.featureDims[li]!;
    const [fh, fw] = SMALL_HW[i]!;
    const r = bilinearRef(f, batch * d, fh, fw, n, n);
    const x = concatRef([{ data: r, c: d }, { data: sigma, c: 1 }], batch, hw);
    const p = `bottleneck_layers.${li}`;
    let h: Float32Array = relu(convNorm(x, d + 1, `${p}.conv1`));
    h = relu(convNorm(h, c.bottleneckDim, `${p}.conv2`));
    h = convNorm(h, c.bottleneckDim, `${p}.conv3`);
    const sc = w[`${p}.shortcut.weight`] ? convNorm(x, d + 1, `${p}.shortcut`) : x;
    h.forEach((v, k) => (agg[k]! += mix[i]! * Math.max(v + sc[k]!, 0)));
  });
  const head = concatRef([{ data: Float32Array.from(agg), c: c.projectionDim }, { data: sigma, c: 1 }, { data: mask, c: 1 }], batch, hw);
  let y = conv(head, c.projectionDim + 2, 'output_head.0', 'silu');
  y = conv(y, 128, 'output_head.2', 'silu');
  return conv(y, 32, 'output_head.4').map(Math.tanh);
}

describe('SILO AggregationNetwork options (CPU reference, random weights)', () => {
  const c = aggregationConfig(SMALL_ARGS);
  const batch = 2;
  const inputs = () => {
    const feats = SMALL_HW.map(([h, w], i) => randomData(batch * c.featureDims[i % 3]! * h * w, 300 + i, -2, 2));
    const emb = randomData(batch * c.sigmaEmbDim, 400, -2, 2);
    const mask = randomData(batch * 64, 401, 0, 1).map((v) => (v > 0.5 ? 1 : 0));
    return { feats, emb, mask };
  };
  const upload = (d: ReturnType<typeof inputs>) => ({
    feats: d.feats.map((f, i) => engine.tensor(f, [batch, c.featureDims[i % 3]!, ...SMALL_HW[i]!])),
    emb: engine.tensor(d.emb, [batch, c.sigmaEmbDim]),
    mask: engine.tensor(d.mask, [batch, 1, 8, 8]),
  });

  it('cond_inpaint mask channel, shared blocks over two timesteps, no-shortcut block, tanh head, batch 2', async () => {
    const w = smallWeights(c, 7);
    const model = WeightLoader.build(engine, file(w, 'rg-small.safetensors'), {}, (l) => new AggregationNetwork(l, c));
    expect(model.groups).toBe(6);
    expect(model.bottlenecks[0]!.shortcut).toBeUndefined();
    const d = inputs();
    const t = upload(d);
    const { result } = await runProgram(engine, 'rg-small', (rec) => model.forward(rec, t.feats, t.emb, t.mask));
    expect(result.shape).toEqual([batch, 3, 8, 8]);
    expectClose(await result.read(), aggregationRef(c, w, d.feats, d.emb, d.mask, batch), { atol: 1e-5, rtol: 1e-4 }, 'rg output');
  });

  it('VJP with respect to the features matches central differences of sum(r * output) (same options, batch 2)', async () => {
    const w = smallWeights(c, 12);
    const model = WeightLoader.build(engine, file(w, 'rg-vjp.safetensors'), {}, (l) => new AggregationNetwork(l, c));
    const d = inputs();
    const t = upload(d);
    const r = randomData(batch * 3 * 64, 500, -1, 1);
    const cot = engine.tensor(r, [batch, 3, 8, 8]);
    const { result } = await runProgram(engine, 'rg-vjp', (rec) => aggregationVjp(rec, model, t.feats, t.emb, cot, t.mask));
    const out = await result.output.read();
    expectClose(out, aggregationRef(c, w, d.feats, d.emb, d.mask, batch), { atol: 1e-5, rtol: 1e-4 }, 'vjp output');
    const grads = await Promise.all(result.gradFeatures.map((g) => g.read()));
    result.gradFeatures.forEach((g, i) => expect(g.shape).toEqual(t.feats[i]!.shape));
    const dirs = (i: number) => randomData(d.feats[i]!.length, 600 + i, -1, 1);
    // Per feature, the directional derivative along a random direction against a central difference of the
    // CPU reference (step 1e-4). That reference rounds every layer to f32 and the ~70k ReLUs can flip, which
    // limits the difference quotient to ~0.5% here; tolerance 2% of the largest term (a wrong branch -
    // tanh head, mask channel, shortcut-free block, shared blocks, batch, resize - is off by far more).
    const h = 1e-4;
    const terms = grads.map((g, i) => g.reduce((s, v, k) => s + v * dirs(i)[k]!, 0));
    const largest = Math.max(...terms.map(Math.abs));
    d.feats.forEach((_, i) => {
      const loss = (eps: number) => {
        const feats = d.feats.map((f, j) => (j === i ? f.map((v, k) => v + eps * dirs(i)[k]!) : f));
        return aggregationRef(c, w, feats, d.emb, d.mask, batch).reduce((s, v, k) => s + v * r[k]!, 0);
      };
      const fd = (loss(h) - loss(-h)) / (2 * h);
      console.log(`rg vjp feature ${i}: <grad, dir> ${terms[i]!.toExponential(5)}, central difference ${fd.toExponential(5)}`);
      expect(Math.abs(terms[i]! - fd), `feature ${i}`).toBeLessThan(2e-2 * largest);
    });
    for (const x of [cot, result.output, ...result.gradFeatures, ...t.feats, t.emb, t.mask]) x.dispose();
  });

  it('parameter gradients (training) match central differences of the CPU reference, every parameter', async () => {
    const w = smallWeights(c, 13);
    const model = WeightLoader.build(engine, file(w, 'rg-grads.safetensors'), {}, (l) => new AggregationNetwork(l, c));
    const d = inputs();
    const t = upload(d);
    const r = randomData(batch * 3 * 64, 700, -1, 1);
    const cot = engine.tensor(r, [batch, 3, 8, 8]);
    const { result } = await runProgram(engine, 'rg-grads', (rec) => aggregationGrads(rec, model, t.feats, t.emb, cot, t.mask));
    expectClose(await result.output.read(), aggregationRef(c, w, d.feats, d.emb, d.mask, batch), { atol: 1e-5, rtol: 1e-4 }, 'grads output');
    const trained = Object.keys(w).filter((k) => !k.includes('emb_layers'));
    expect(Object.keys(result.params).sort()).toEqual(trained.sort());
    const lin = model.sigmaEmbLinear!;
    // Directional derivative per parameter along a random direction against a central difference of the
    // CPU reference (step 1e-3). ReLU kinks crossed within the step and the reference's f32 rounding leave
    // up to ~0.2 absolute (0.5 % of the largest term) and a few % relative: tolerance 6 % + 0.6 % of the
    // largest (the sigma map's parameters: 4 % + 0.1 %). A missing softmax backward of the mixing logits, or a sigma map gradient missing a group's
    // share, is off by far more (checked by mutation).
    const h = 1e-3;
    const terms: Record<string, { dot: number; fd: number }> = {};
    for (const [i, name] of trained.entries()) {
      let g = await result.params[name]!.read();
      const shape = w[name]!.shape;
      if (name === 'sigma_emb_linear.weight' && lin.transposed) g = transpose2d(g, shape[1]!, shape[0]!);
      const dir = randomData(g.length, 800 + i, -1, 1);
      const dot = g.reduce((s, v, k) => s + v * dir[k]!, 0);
      const loss = (eps: number) => {
        const w2 = { ...w, [name]: { data: w[name]!.data.map((v, k) => v + eps * dir[k]!), shape } };
        return aggregationRef(c, w2, d.feats, d.emb, d.mask, batch).reduce((s, v, k) => s + v * r[k]!, 0);
      };
      terms[name] = { dot, fd: (loss(h) - loss(-h)) / (2 * h) };
    }
    const largest = Math.max(...Object.values(terms).map((x) => Math.abs(x.fd)));
    for (const [name, { dot, fd }] of Object.entries(terms)) {
      console.log(`rg grads ${name}: <grad, dir> ${dot.toExponential(5)}, central difference ${fd.toExponential(5)}`);
      // The sigma map's parameters sit behind no ReLU of their own and come out within ~2 %: held tighter.
      const tol = name.startsWith('sigma_emb') ? 0.04 * Math.abs(fd) + 1e-3 * largest : 0.06 * Math.abs(fd) + 6e-3 * largest;
      expect(Math.abs(dot - fd), `${name}: <grad, dir> ${dot}, central difference ${fd}`).toBeLessThan(tol);
    }
    for (const x of [cot, result.output, ...Object.values(result.params), ...t.feats, t.emb, t.mask]) x.dispose();
  }, 300_000);

  it('loads checkpoints with or without the unused emb_layers, and names wrong tensors', () => {
    const w = smallWeights(c, 8, false);
    expect(() => WeightLoader.build(engine, file(w, 'noemb.safetensors'), {}, (l) => new AggregationNetwork(l, c))).not.toThrow();
    const missing = { ...w };
    delete missing['bottleneck_layers.1.conv2.norm.weight'];
    expect(() => WeightLoader.build(engine, file(missing, 'm.safetensors'), {}, (l) => new AggregationNetwork(l, c))).toThrow(
      /m\.safetensors: missing tensor "bottleneck_layers\.1\.conv2\.norm\.weight" \(expected shape \[16\]\)/,
    );
    const narrow = aggregationConfig({ ...SMALL_ARGS, feature_dims: [63, 7, 4] });
    expect(() => WeightLoader.build(engine, file(w, 's.safetensors'), {}, (l) => new AggregationNetwork(l, narrow))).toThrow(
      /s\.safetensors: tensor "bottleneck_layers\.1\.shortcut\.weight" has shape \[64, 6, 1, 1\], expected \[64, 8, 1, 1\]/,
    );
    const extra = { ...w, 'bottleneck_layers.1.sigma_emb_layers.weight': { data: new Float32Array(16 * 1280), shape: [16, 1280] } };
    expect(() => WeightLoader.build(engine, file(extra, 'x.safetensors'), {}, (l) => new AggregationNetwork(l, c))).toThrow(WeightError);
    expect(() => WeightLoader.build(engine, file(extra, 'x.safetensors'), {}, (l) => new AggregationNetwork(l, c))).toThrow(
      /1 unexpected tensor\(s\) not used by the model: "bottleneck_layers\.1\.sigma_emb_layers\.weight"/,
    );
  });

  it('rejects wrong features, a missing sigma embedding or mask', async () => {
    const model = WeightLoader.build(engine, file(smallWeights(c, 9), 'e.safetensors'), {}, (l) => new AggregationNetwork(l, c));
    const t = upload(inputs());
    const fails = (fn: Parameters<typeof runProgram>[2], re: RegExp) => expect(runProgram(engine, 'bad', fn)).rejects.toThrow(re);
    await fails((rec) => model.forward(rec, t.feats.slice(0, 5), t.emb, t.mask), /expected 6 readout features, got 5/);
    await fails((rec) => model.forward(rec, [t.feats[1]!, ...t.feats.slice(1)], t.emb, t.mask), /feature 0 must be \[2, 63, H, W\], got \[2, 5, 4, 4\]/);
    await fails((rec) => model.forward(rec, t.feats, undefined, t.mask), /needs sigma_emb/);
    await fails((rec) => model.forward(rec, t.feats, t.emb), /built with cond_inpaint, it needs the inpainting mask as \[2, 1, 8, 8\], got none/);
    const plain = aggregationConfig({ ...SMALL_ARGS, cond_inpaint: false });
    const w = smallWeights(plain, 10);
    w['output_head.0.weight'] = { data: randomData(128 * 65 * 9, 11, -0.05, 0.05), shape: [128, 65, 3, 3] };
    const m2 = WeightLoader.build(engine, file(w, 'p.safetensors'), {}, (l) => new AggregationNetwork(l, plain));
    await fails((rec) => m2.forward(rec, t.feats, t.emb, t.mask), /built without cond_inpaint, it takes no mask/);
  });
});
