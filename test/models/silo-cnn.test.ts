// SILO's CNN latent operators: DegradationModel against the `silo_cnn` golden case (f32 and f16), its
// loading errors; the "preserve" LatentDegradationNetwork (no golden exists) against a CPU composition
// of the reference layers with random weights.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import { WeightLoader, WeightError } from '../../src/models/weights.js';
import { DegradationModel } from '../../src/models/silo/cnn.js';
import { PreserveDegradationNetwork, sinusoidalNoiseEmbedding, spatialPositionalEmbedding } from '../../src/models/silo/preserve.js';
import {
  degradationConfig,
  inferDegradationConfig,
  preserveConfig,
  sigmaTimestep,
  SILO_PRESERVE_SAMPLER_ARGS,
} from '../../src/models/silo/config.js';
import { runSiloCnn } from '../../src/check/silo_cnn.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { expectAllPass, goldenDir, goldenFiles, goldenManifest } from '../helpers/golden.js';
import { file, preserveRef, preserveWeights, type Weights } from '../helpers/silo-preserve.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

async function goldenCnnWeights(): Promise<Weights> {
  const src = await readSafetensorsFile(`${goldenDir('silo_cnn')}/weights.safetensors`);
  return Object.fromEntries(src.names().map((n) => [n, { data: src.getF32(n), shape: src.info(n).shape }]));
}

describe('SILO DegradationModel (silo_cnn golden)', () => {
  it('reads SILO\'s sampler configuration off the state dict', async () => {
    const src = await readSafetensorsFile(`${goldenDir('silo_cnn')}/weights.safetensors`);
    expect(inferDegradationConfig(src)).toEqual({ latentDim: 4, outputDim: 4, sigmaCondition: true, latentSize: 64, sigmaEmbDim: 1280, sigmaHidden: 32, width: 1 });
    expect(sigmaTimestep(0.02)).toBeCloseTo(199.8, 10);
  });

  it('output and debug.sigma_map (manifest tolerance 1e-4 / 1e-3) and vjp_z (atol 1e-3 max|ref|) in f32', async () => {
    const live = engine.pool.stats.liveBytes;
    const items = await runSiloCnn(engine, goldenFiles('silo_cnn'), goldenManifest('silo_cnn'), { log: console.log });
    expect(items.map((i) => i.name)).toEqual(['output', 'debug.sigma_map', 'vjp_z']);
    expect(engine.pool.stats.liveBytes, 'forward + vjp leave no tensor live').toBe(live);
    expectAllPass(items, 'silo_cnn f32');
  });

  it('output and debug.sigma_map with f16 storage (atol 1e-2, rtol 1e-2)', async (ctx) => {
    if (!engine.hasF16) ctx.skip();
    const items = await runSiloCnn(engine, goldenFiles('silo_cnn'), goldenManifest('silo_cnn'), { dtype: 'f16' });
    expect(items.map((i) => i.name)).toEqual(['output', 'debug.sigma_map']); // no f16 backward
    expectAllPass(items, 'silo_cnn f16');
  });

  it('names the file and tensor for a missing, mis-shaped or unexpected tensor, and rejects wrong inputs', async () => {
    const w = await goldenCnnWeights();
    const cfg = degradationConfig({ latent_dim: 4, sigma_condition: true, layer_norm: true });
    const build = (ws: Weights, name: string, c = cfg) => WeightLoader.build(engine, file(ws, name), {}, (l) => new DegradationModel(l, c));

    const missing = { ...w };
    delete missing['decoder.4.weight'];
    expect(() => build(missing, 'm.safetensors')).toThrow(/m\.safetensors: missing tensor "decoder\.4\.weight" \(expected shape \[32, 64, 64\]\)/);

    const live = engine.pool.stats.liveBytes;
    const shaped = { ...w, 'encoder.3.weight': { data: new Float32Array(33 * 16 * 9), shape: [33, 16, 3, 3] } };
    expect(() => build(shaped, 's.safetensors')).toThrow(/s\.safetensors: tensor "encoder\.3\.weight" has shape \[33, 16, 3, 3\], expected \[33, 17, 3, 3\]/);
    expect(engine.pool.stats.liveBytes).toBe(live);

    // A checkpoint trained without --sigma_condition loaded as a sigma-conditioned model, and vice versa.
    expect(() => build(w, 'u.safetensors', degradationConfig({ latent_dim: 4, layer_norm: true }))).toThrow(WeightError);
    expect(() => degradationConfig({ latent_dim: 4, layer_norm: false })).toThrow(/layer_norm = false is not supported/);

    const model = build(w, 'ok.safetensors');
    const z32 = engine.zeros([1, 4, 32, 32]);
    const e = engine.zeros([1, 1280]);
    await expect(runProgram(engine, 'bad', (rec) => model.forward(rec, z32, e))).rejects.toThrow(/z must be \[B, 4, 64, 64\].*got \[1, 4, 32, 32\]/);
    const z = engine.zeros([1, 4, 64, 64]);
    await expect(runProgram(engine, 'bad', (rec) => model.forward(rec, z, engine.zeros([1, 128])))).rejects.toThrow(/sigma_emb must be \[B, 1280\]/);
    await expect(runProgram(engine, 'bad', (rec) => model.forward(rec, z))).rejects.toThrow(/needs sigma_emb/);
  });
});

// ---------------------------------------------------------------------------------------------
// The preserve network: random weights, CPU reference composed from the layer references
// (test/helpers/silo-preserve.ts).

describe('SILO preserve LatentDegradationNetwork (CPU reference, random weights)', () => {
  it('has SILO\'s sampler construction and embeddings', () => {
    const c = preserveConfig(SILO_PRESERVE_SAMPLER_ARGS);
    expect(c).toEqual({ inChannels: 4, outChannels: 4, baseChannels: 48, noiseEmbedDim: 128, posEmbedChannels: 8, numBlocks: 3, maxNoise: 0.1, posSize: 64 });
    // sigma 0.02 / max_noise 0.1 = 0.2: column 0 sin(0.2), column 1 cos(0.2), last frequency 1e-4.
    const e = sinusoidalNoiseEmbedding([0.02], 128, 0.1);
    expect(e[0]).toBeCloseTo(Math.sin(0.2), 6);
    expect(e[1]).toBeCloseTo(Math.cos(0.2), 6);
    expect(e[126]).toBeCloseTo(Math.sin(0.2 * 1e-4), 9);
    // Positional buffer: channel 0 = sin(row / 63) constant along a row, channel 4 = sin(col / 63).
    const p = spatialPositionalEmbedding(8, 64, 64);
    expect(p[1 * 64 + 5]).toBeCloseTo(Math.sin(1 / 63), 6);
    expect(p[(4 * 64 + 5) * 64 + 1]).toBeCloseTo(Math.sin(1 / 63), 6);
    expect(() => preserveConfig({ noise_embed_dim: 15 })).toThrow(/noise_embed_dim must be even/);
  });

  const cases: Array<{ args: Record<string, unknown>; shape: number[]; sigmas: number[] }> = [
    // Positional buffer resized 64 -> 16x20, batch 2 with different sigmas.
    { args: { base_channels: 8, num_blocks: 3, noise_embed_dim: 16, max_noise: 0.1 }, shape: [2, 4, 16, 20], sigmas: [0.02, 0.05] },
    // SILO's latent size (no resize), two blocks.
    { args: { base_channels: 8, num_blocks: 2, noise_embed_dim: 16, pos_embed_channels: 6, max_noise: 0.1 }, shape: [1, 4, 64, 64], sigmas: [0.02] },
  ];
  for (const { args, shape, sigmas } of cases) {
    it(`${JSON.stringify(args)} on ${JSON.stringify(shape)}`, async () => {
      const c = preserveConfig(args);
      const w = preserveWeights(c, 1000 + shape[2]!);
      const model = WeightLoader.build(engine, file(w, 'preserve.safetensors'), {}, (l) => new PreserveDegradationNetwork(l, c));
      const zData = randomData(shape.reduce((a, b) => a * b, 1), 99, -2, 2);
      const z = engine.tensor(zData, shape);
      const emb = model.embedNoise(engine, sigmas);
      const { result } = await runProgram(engine, 'preserve', (rec) => model.forward(rec, z, emb));
      const ref = preserveRef(c, w, zData, shape, sinusoidalNoiseEmbedding(sigmas, c.noiseEmbedDim, c.maxNoise));
      expectClose(await result.read(), ref, { atol: 1e-4, rtol: 1e-3 }, 'preserve output');
    });
  }

  it('rejects a checkpoint of another width, naming the tensor', () => {
    const c = preserveConfig({ base_channels: 8, num_blocks: 2, noise_embed_dim: 16 });
    const w = preserveWeights(c, 5);
    const other = preserveConfig({ base_channels: 8, num_blocks: 2, noise_embed_dim: 32 });
    expect(() => WeightLoader.build(engine, file(w, 'p.safetensors'), {}, (l) => new PreserveDegradationNetwork(l, other))).toThrow(
      /p\.safetensors: tensor "blocks\.0\.noise_proj\.weight" has shape \[8, 16\], expected \[8, 32\]/,
    );
  });
});
