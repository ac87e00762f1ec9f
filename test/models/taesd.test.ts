// TAESD family (tiny autoencoders): layout and config inference from the weight names, a small
// random-weight model (with the FLUX.2 pooling branch and a 1x1 skip) against a CPU reference, the
// errors for missing / mis-shaped tensors, and the real TAEF2 against ../shared/golden/taef2.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { parseSafetensors, f32Entry, serializeSafetensors, type SafetensorsEntry } from '../../src/formats/safetensors.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import { WeightLoader, WeightError } from '../../src/models/weights.js';
import {
  TAEF2_CONFIG,
  TAESD_CONFIG,
  taesdConfigFromWeights,
  taesdLayout,
  type TaesdConfig,
} from '../../src/models/taesd/config.js';
import { TaesdBlock } from '../../src/models/taesd/blocks.js';
import { TinyAutoencoder } from '../../src/models/taesd/autoencoder.js';
import { runTaef2 } from '../../src/check/taef2.js';
import { psnr } from '../../src/solvers/metrics.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { goldenDir, goldenFiles, goldenManifest, expectAllPass } from '../helpers/golden.js';
import { conv2dRef } from '../ref/conv2d.js';
import { groupNormRef } from '../ref/norm.js';
import { nearest2xRef } from '../ref/resample.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

type Weights = Record<string, { data: Float32Array; shape: number[] }>;

// ---- random weights with taesd.py's names, and a CPU reference of the same network

function randn(shape: number[], seed: number, bound: number) {
  return { data: randomData(shape.reduce((a, b) => a * b, 1), seed, -bound, bound), shape };
}

function conv(w: Weights, name: string, cin: number, cout: number, k: number, bias: boolean, seed: number): void {
  // uniform with variance 1/fan_in, so activations stay O(1) through the stack
  w[`${name}.weight`] = randn([cout, cin, k, k], seed, Math.sqrt(3 / (cin * k * k)));
  if (bias) w[`${name}.bias`] = randn([cout], seed + 1, 0.1);
}

function blockWeights(w: Weights, p: string, cin: number, cout: number, pool: { expansion: number } | undefined, seed: number): void {
  conv(w, `${p}conv.0`, cin, cout, 3, true, seed);
  conv(w, `${p}conv.2`, cout, cout, 3, true, seed + 2);
  conv(w, `${p}conv.4`, cout, cout, 3, true, seed + 4);
  if (cin !== cout) conv(w, `${p}skip`, cin, cout, 1, false, seed + 6);
  if (pool) {
    const hidden = cin * pool.expansion;
    conv(w, `${p}pool.0`, cin, hidden, 1, false, seed + 8);
    w[`${p}pool.1.weight`] = randn([hidden], seed + 9, 0.3);
    for (let i = 0; i < hidden; i++) w[`${p}pool.1.weight`]!.data[i]! += 1;
    w[`${p}pool.1.bias`] = randn([hidden], seed + 10, 0.2);
    conv(w, `${p}pool.3`, hidden, cin, 1, false, seed + 11);
  }
}

function modelWeights(c: TaesdConfig, part: 'encoder' | 'decoder', seed: number): Weights {
  const w: Weights = {};
  for (const l of taesdLayout(c)[part]) {
    const s = seed + 100 * l.index;
    if (l.kind === 'conv') conv(w, String(l.index), l.cin, l.cout, 3, l.bias, s);
    if (l.kind === 'block') blockWeights(w, `${l.index}.`, l.cin, l.cout, l.pool ? { expansion: c.poolExpansion } : undefined, s);
  }
  return w;
}

function file(w: Weights, name: string, dtype: 'F32' | 'F16' = 'F32') {
  const entries: Record<string, SafetensorsEntry> = Object.fromEntries(Object.entries(w).map(([k, v]) => [k, f32Entry(v.data, v.shape, dtype)]));
  return parseSafetensors(serializeSafetensors(entries), name);
}

type Act = { data: Float32Array; shape: number[] };

function convRef(x: Act, w: Weights, name: string, stride = 1, pad = 1, act = 'none'): Act {
  const wt = w[`${name}.weight`]!;
  const r = conv2dRef(x.data, x.shape, wt.data, wt.shape, w[`${name}.bias`]?.data ?? null, { stride: [stride, stride], padding: [pad, pad], act });
  return { data: r.out, shape: r.shape };
}

const relu = (a: Act): Act => ({ data: a.data.map((v) => Math.max(v, 0)), shape: a.shape });
const addAct = (a: Act, b: Act): Act => ({ data: a.data.map((v, i) => v + b.data[i]!), shape: a.shape });

function blockRef(x: Act, w: Weights, p: string, groups: number): Act {
  let input = x;
  if (w[`${p}pool.0.weight`]) {
    const e = convRef(x, w, `${p}pool.0`, 1, 0);
    const n = relu({ data: groupNormRef(e.data, e.shape, groups, w[`${p}pool.1.weight`]!.data, w[`${p}pool.1.bias`]!.data, 1e-5), shape: e.shape });
    input = addAct(x, convRef(n, w, `${p}pool.3`, 1, 0));
  }
  let h = convRef(input, w, `${p}conv.0`, 1, 1, 'relu');
  h = convRef(h, w, `${p}conv.2`, 1, 1, 'relu');
  h = convRef(h, w, `${p}conv.4`);
  const skip = w[`${p}skip.weight`] ? convRef(input, w, `${p}skip`, 1, 0) : input;
  return relu(addAct(h, skip));
}

function taesdRef(c: TaesdConfig, part: 'encoder' | 'decoder', w: Weights, x: Act): Act {
  let h = x;
  for (const l of taesdLayout(c)[part]) {
    if (l.kind === 'conv') h = convRef(h, w, String(l.index), l.stride);
    else if (l.kind === 'block') h = blockRef(h, w, `${l.index}.`, c.poolGroups);
    else if (l.kind === 'relu') h = relu(h);
    else if (l.kind === 'clamp') h = { data: h.data.map((v) => Math.tanh(v / 3) * 3), shape: h.shape };
    else {
      const [n, ch, hh, ww] = h.shape as [number, number, number, number];
      h = { data: nearest2xRef(h.data, n * ch, hh, ww), shape: [n, ch, 2 * hh, 2 * ww] };
    }
  }
  return h;
}

// A reduced config: 8 channels, two levels, pooling (16 hidden channels, 4 groups) at latent resolution.
const SMALL: TaesdConfig = {
  latentChannels: 5,
  imageChannels: 3,
  channels: 8,
  encoderBlocks: [1, 2],
  decoderBlocks: [2, 1],
  midBlockGn: true,
  poolExpansion: 2,
  poolGroups: 4,
};

describe('TAESD layout and config', () => {
  it("TAEF2's layout names exactly the tensors of the golden weight files; the config is read back from them", async () => {
    const enc = await readSafetensorsFile(`${goldenDir('taef2')}/taef2_encoder.safetensors`);
    const dec = await readSafetensorsFile(`${goldenDir('taef2')}/taef2_decoder.safetensors`);
    expect(taesdConfigFromWeights({ encoder: enc, decoder: dec })).toEqual(TAEF2_CONFIG);
    expect(taesdConfigFromWeights({ decoder: dec })).toEqual(TAEF2_CONFIG);
    expect(taesdConfigFromWeights({ encoder: enc })).toEqual(TAEF2_CONFIG);
    const { encoder, decoder } = taesdLayout(TAEF2_CONFIG);
    expect(encoder.filter((l) => l.kind === 'block' && l.pool).map((l) => l.index)).toEqual([11, 12, 13]);
    expect(decoder.filter((l) => l.kind === 'block' && l.pool).map((l) => l.index)).toEqual([3, 4, 5]);
    expect(decoder.filter((l) => l.kind === 'upsample').map((l) => l.index)).toEqual([6, 11, 16]);
    expect(encoder.length).toBe(15);
    expect(decoder.length).toBe(20);
  });

  it('infers SD-1.5 TAESD (4 latent channels, no pool) from random weights with its names', () => {
    const enc = file(modelWeights(TAESD_CONFIG, 'encoder', 1), 'taesd_encoder.safetensors');
    const dec = file(modelWeights(TAESD_CONFIG, 'decoder', 2), 'taesd_decoder.safetensors');
    expect(enc.names()).toContain('14.weight');
    expect(enc.names().some((n) => n.includes('pool'))).toBe(false);
    expect(taesdConfigFromWeights({ encoder: enc, decoder: dec })).toEqual(TAESD_CONFIG);
    expect(taesdConfigFromWeights({ encoder: file(modelWeights(SMALL, 'encoder', 3), 'e') })).toEqual({ ...SMALL, decoderBlocks: [2, 1] });
  });

  it('errors name the file and tensor', () => {
    const w = modelWeights(TAESD_CONFIG, 'decoder', 4);
    const missing = { ...w };
    delete missing['8.conv.2.weight'];
    expect(() => TinyAutoencoder.load(engine, { decoder: file(missing, 'dec.safetensors') }, { config: TAESD_CONFIG })).toThrow(
      /dec\.safetensors: missing tensor "8\.conv\.2\.weight" \(expected shape \[64, 64, 3, 3\]\)/,
    );
    const live = engine.pool.stats.liveBytes;
    expect(() => TinyAutoencoder.load(engine, { decoder: file(w, 'dec4.safetensors') }, { config: TAEF1_LIKE })).toThrow(
      /dec4\.safetensors: tensor "1\.weight" has shape \[64, 4, 3, 3\], expected \[64, 16, 3, 3\]/,
    );
    expect(engine.pool.stats.liveBytes).toBe(live); // parameters uploaded before the failure were freed
    const pooled = { ...w, '4.pool.0.weight': { data: new Float32Array(256 * 64), shape: [256, 64, 1, 1] } };
    expect(() => taesdConfigFromWeights({ decoder: file(pooled, 'p.safetensors') })).toThrow(WeightError);
    expect(() => TinyAutoencoder.load(engine, { decoder: file(pooled, 'p.safetensors') }, { config: TAESD_CONFIG })).toThrow(
      /p\.safetensors: 1 unexpected tensor\(s\) not used by the model: "4\.pool\.0\.weight"/,
    );
    expect(() => taesdConfigFromWeights({ encoder: file({ 'encoder.0.weight': w['1.weight']! }, 'n.safetensors') })).toThrow(
      /n\.safetensors: tensor "encoder\.0\.weight" is not a TAESD nn\.Sequential name/,
    );
  });
});

const TAEF1_LIKE: TaesdConfig = { ...TAESD_CONFIG, latentChannels: 16 };

describe('TAESD modules vs a CPU reference (random weights)', () => {
  it('Block 6 -> 8 with the pooling branch and a 1x1 skip, batch 2, 5x7', async () => {
    const w: Weights = {};
    blockWeights(w, '', 6, 8, { expansion: 4 }, 11);
    const x = randomData(2 * 6 * 35, 12, -1.5, 1.5);
    const block = WeightLoader.build(engine, file(w, 'block.safetensors'), {}, (l) => new TaesdBlock(l, 6, 8, { expansion: 4, groups: 4 }));
    const tx = engine.tensor(x, [2, 6, 5, 7]);
    const { result } = await runProgram(engine, 'taesd-block', (rec) => block.forward(rec, tx));
    const ref = blockRef({ data: x, shape: [2, 6, 5, 7] }, w, '', 4);
    expect(result.shape).toEqual([2, 8, 5, 7]);
    expectClose(await result.read(), ref.data, { atol: 2e-5, rtol: 1e-4 }, 'block');
    block.dispose();
  });

  it('encoder and decoder of a reduced pooled config, odd image size 11x14 (stride-2 rounding)', async () => {
    const we = modelWeights(SMALL, 'encoder', 21);
    const wd = modelWeights(SMALL, 'decoder', 22);
    const model = TinyAutoencoder.load(engine, { encoder: file(we, 'e.safetensors'), decoder: file(wd, 'd.safetensors') });
    expect(model.config).toEqual(SMALL);
    const shape = [2, 3, 11, 14];
    const x = randomData(2 * 3 * 11 * 14, 23, 0, 1);
    const tx = engine.tensor(x, shape);
    const { result } = await runProgram(engine, 'taesd-small', (rec) => {
      const z = model.encode(rec, tx);
      return { z, raw: model.decode(rec, z), image: model.decodeImage(rec, z) };
    });
    const zRef = taesdRef(SMALL, 'encoder', we, { data: x, shape });
    expect(result.z.shape).toEqual([2, 5, 6, 7]);
    expectClose(await result.z.read(), zRef.data, { atol: 1e-5, rtol: 1e-4 }, 'latent');
    const rawRef = taesdRef(SMALL, 'decoder', wd, zRef);
    expect(result.raw.shape).toEqual([2, 3, 12, 14]);
    expectClose(await result.raw.read(), rawRef.data, { atol: 2e-5, rtol: 1e-4 }, 'decoded');
    expectClose(await result.image.read(), rawRef.data.map((v) => Math.min(Math.max(v, 0), 1)), { atol: 2e-5, rtol: 1e-4 }, 'image');
    model.dispose();
  });

  it('psnr', () => {
    expect(psnr([0, 0.5, 1, 1], [0, 0.5, 1, 1])).toBe(Infinity);
    expect(psnr([0, 0, 0, 0], [0.1, 0.1, 0.1, 0.1])).toBeCloseTo(20, 10);
    expect(psnr([0, 0, 0, 0], [0.2, 0.2, 0.2, 0.2], 2)).toBeCloseTo(20, 10);
  });
});

// Each 256x256 pass is ~30 GFLOP: ~15 s per test on an idle lavapipe, several times that on SwiftShader
// or a loaded machine, hence the long timeouts.
const GOLDEN_TIMEOUT_MS = 600_000;

describe('TAEF2 vs golden (real weights, 256x256 astronaut)', () => {
  it('f32 activations: latent (atol 1e-3), decoded_raw (atol 2e-3), reconstruction PSNR within 0.1 dB', async () => {
    const t0 = performance.now();
    const items = await runTaef2(engine, goldenFiles('taef2'), goldenManifest('taef2'), { dtype: 'f32', log: console.log });
    console.log(`taef2 f32: ${((performance.now() - t0) / 1000).toFixed(1)} s (encode, decode of the golden latent)`);
    expectAllPass(items, 'taef2 f32');
  }, GOLDEN_TIMEOUT_MS);

  it('f16 weights and activations: encode -> decode -> clamp round trip, PSNR within 0.1 dB', async (ctx) => {
    if (!engine.hasF16) ctx.skip();
    const t0 = performance.now();
    const items = await runTaef2(engine, goldenFiles('taef2'), goldenManifest('taef2'), { dtype: 'f16', log: console.log });
    console.log(`taef2 f16: ${((performance.now() - t0) / 1000).toFixed(1)} s (encode, round-trip decode)`);
    expectAllPass(items, 'taef2 f16');
  }, GOLDEN_TIMEOUT_MS);
});
