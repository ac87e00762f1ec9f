// The encoder as a parameter of training: SD's VAE (golden vae_mini: a posterior sample times
// scaling_factor, from the seed) with e_sigma from the prior UNet's time embedding (golden unet_mini) at
// SILO's pseudo-timestep, and the sinusoid without a UNet; an operator trains on the 4-channel latents.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import { readFileSync } from 'node:fs';
import { WeightLoader } from '../../src/models/weights.js';
import { AutoencoderKL } from '../../src/models/vae/autoencoder.js';
import { UNet2DConditionModel } from '../../src/models/unet/unet.js';
import { parseUNetConfig } from '../../src/models/unet/config.js';
import { timestepEmbeddingCPU } from '../../src/engine/ops/embedding.js';
import { sigmaTimestep } from '../../src/models/silo/config.js';
import { sdVaeCodec } from '../../src/solvers/training/latent-codec.js';
import { sinusoidSigmaEmbedder, unetFileSigmaEmbedder, unetSigmaEmbedder } from '../../src/solvers/training/sigma-embedding.js';
import { CNN_DEFAULTS, TrainSession } from '../../src/solvers/training/session.js';
import { readImageFile } from '../../src/io/image-node.js';
import { getEngine, randomData } from '../helpers/engine.js';
import { goldenDir } from '../helpers/golden.js';

const IMAGES = new URL('../../../shared/assets/images', import.meta.url).pathname;
let engine: Engine;
let vae: AutoencoderKL;
let unet: UNet2DConditionModel;

beforeAll(async () => {
  engine = await getEngine();
  const json = (d: string) => JSON.parse(readFileSync(`${goldenDir(d)}/config.json`, 'utf8')) as Record<string, unknown>;
  vae = AutoencoderKL.load(engine, await readSafetensorsFile(`${goldenDir('vae_mini')}/diffusion_pytorch_model.safetensors`), json('vae_mini'));
  const w = await readSafetensorsFile(`${goldenDir('unet_mini')}/diffusion_pytorch_model.safetensors`);
  unet = WeightLoader.build(engine, w, {}, (l) => new UNet2DConditionModel(l, parseUNetConfig(json('unet_mini'))));
}, 120_000);

describe('SD VAE as the training encoder', () => {
  it('encode is the posterior sample from the seed times scaling_factor; decode undoes the scale', async () => {
    const codec = sdVaeCodec(vae);
    expect(codec.channels).toBe(4);
    expect(codec.factor).toBe(8);
    const x = engine.tensor(randomData(2 * 3 * 32 * 32, 5), [2, 3, 32, 32]);
    const { result } = await runProgram(engine, 'codec', (rec) =>
      rec.engine.tidy(() => {
        const post = vae.encode(rec, x);
        return { z: codec.encode(rec, x, 42n), z2: codec.encode(rec, x, 43n), sample: vae.sample(rec, post, 42n), mean: post.mean };
      }),
    );
    const [z, z2, sample, mean] = await Promise.all([result.z.read(), result.z2.read(), result.sample.read(), result.mean.read()]);
    expect(z.every((v, i) => Math.abs(v - 0.18215 * sample[i]!) <= 1e-6 * (1 + Math.abs(v)))).toBe(true);
    // A sample, not the mean: another seed gives another latent.
    expect(z.some((v, i) => Math.abs(v - z2[i]!) > 1e-4)).toBe(true);
    expect(z.some((v, i) => Math.abs(v - 0.18215 * mean[i]!) > 1e-4)).toBe(true);
    const { result: d } = await runProgram(engine, 'decode', (rec) => rec.engine.tidy(() => ({ a: codec.decode(rec, result.z), b: vae.decode(rec, result.sample) })));
    const [a, b] = [await d.a.read(), await d.b.read()];
    expect(a.every((v, i) => Math.abs(v - b[i]!) < 1e-4)).toBe(true);
    for (const t of [x, ...Object.values(result), d.a, d.b]) t.dispose();
  }, 120_000);

  it("e_sigma: the UNet's time embedding at (sigma / 0.1) * 999, or the sinusoid of that timestep", async () => {
    const e = unetSigmaEmbedder(unet);
    expect(e.dim).toBe(128);
    const { result } = await runProgram(engine, 'emb', (rec) => rec.engine.tidy(() => ({ a: e.embed(rec, [0.02, 0.035]), b: unet.timeEmbedding(rec, [sigmaTimestep(0.02), sigmaTimestep(0.035)]) })));
    expect(await result.a.read()).toEqual(await result.b.read());
    const s = sinusoidSigmaEmbedder(320);
    const { result: r2 } = await runProgram(engine, 'sin', (rec) => s.embed(rec, [0.02]));
    expect(await r2.read()).toEqual(timestepEmbeddingCPU([199.8], 320, { flipSinToCos: true, downscaleFreqShift: 0 }));
    expect(() => s.embed({ engine } as never, [-0.1])).toThrow(/sigmas must be finite and >= 0/);
    // From the UNet's weight file alone (only time_embedding.* is loaded): the same rows.
    const fromFile = unetFileSigmaEmbedder(engine, await readSafetensorsFile(`${goldenDir('unet_mini')}/diffusion_pytorch_model.safetensors`), parseUNetConfig(JSON.parse(readFileSync(`${goldenDir('unet_mini')}/config.json`, 'utf8'))));
    const { result: r3 } = await runProgram(engine, 'file emb', (rec) => fromFile.embed(rec, [0.02, 0.035]));
    expect(await r3.read()).toEqual(await result.a.read());
    r3.dispose();
    fromFile.dispose();
    expect(() => sinusoidSigmaEmbedder(7)).toThrow(/width 7/);
    for (const t of [result.a, result.b, r2]) t.dispose();
  }, 120_000);

  it('an operator trains on the VAE latents with the UNet embedding (loss falls)', async () => {
    const train = [];
    for (const f of ['natural/kodim03.png', 'natural/kodim05.png', 'faces256/ffhq_69037.png']) train.push({ name: f, image: await readImageFile(`${IMAGES}/${f}`) });
    const session = await TrainSession.create(engine, {
      settings: { ...CNN_DEFAULTS, task: 'sr4', size: 32, batch: 3, cache: 6, lr: 3e-3 },
      codec: sdVaeCodec(vae),
      embedder: unetSigmaEmbedder(unet),
      train,
      validate: [],
    });
    try {
      expect(session.operatorConfig).toMatchObject({ latentDim: 4, outputDim: 4, latentSize: 4, sigmaEmbDim: 128 });
      const r = await session.run({ steps: 12 });
      const l = r.steps.map((s) => s.loss);
      expect(l.slice(-3).reduce((a, b) => a + b) / 3).toBeLessThan(0.9 * (l.slice(0, 3).reduce((a, b) => a + b) / 3));
    } finally {
      session.dispose();
    }
  }, 300_000);
});
