// silo-cnn guided by SILO's "preserve" CNN (LatentDegradationNetwork) with the tiny golden models and a
// tiny random-weight preserve state dict (base 8, 2 blocks): the .safetensors is told apart from a
// DegradationModel and its construction read off the shapes; `silo restore` runs it end to end with no
// autoencoder in the loop; the session frees the noise embedding it makes; sigma (not a UNet embedding)
// conditions it.
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../src/engine/device.js';
import { f32Entry, serializeSafetensors } from '../src/formats/safetensors.js';
import { dirFolder } from '../src/formats/folder-node.js';
import { main, type CliIO } from '../src/cli/silo.js';
import { decodePng } from '../src/io/png.js';
import { preserveConfig, inferPreserveConfig, isPreserveStateDict, sigmaTimestep } from '../src/models/silo/config.js';
import { PreserveDegradationNetwork, sinusoidalNoiseEmbedding } from '../src/models/silo/preserve.js';
import { preserveNetworkVjp } from '../src/models/silo/preserve-vjp.js';
import * as pkg from '../src/index.js';
import type { DegradationModel } from '../src/models/silo/cnn.js';
import { loadModels } from '../src/restore/models.js';
import { RestorationSession } from '../src/restore/session.js';
import { restore } from '../src/restore/loop.js';
import { siloCnn } from '../src/restore/samplers/silo-cnn.js';
import { getEngine } from './helpers/engine.js';
import { GOLDEN_ROOT } from './helpers/golden.js';
import { file, preserveWeights } from './helpers/silo-preserve.js';

const PHOTO = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;
// A small network of SILO's shape: in/out 4 (the golden VAE's latent), a 16-d noise embedding.
const CONFIG = preserveConfig({ base_channels: 8, num_blocks: 2, noise_embed_dim: 16, pos_embed_channels: 6, max_noise: 0.1 });

let tmp: string;
let weightsPath: string;
let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
  tmp = mkdtempSync(join(tmpdir(), 'silo-preserve-'));
  weightsPath = join(tmp, 'preserve.safetensors');
  const w = preserveWeights(CONFIG, 11);
  writeFileSync(weightsPath, serializeSafetensors(Object.fromEntries(Object.entries(w).map(([k, v]) => [k, f32Entry(v.data, v.shape)]))));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("SILO's preserve CNN as silo-cnn's operator", () => {
  it('is told apart from a DegradationModel and its construction read off the shapes (max_noise: SILO sampler default)', () => {
    const src = file(preserveWeights(CONFIG, 11), 'p.safetensors');
    expect(isPreserveStateDict(src)).toBe(true);
    expect(inferPreserveConfig(src)).toEqual(CONFIG);
    const missing = preserveWeights(CONFIG, 11);
    delete missing['identity_gate.0.weight'];
    expect(() => inferPreserveConfig(file(missing, 'm.safetensors'))).toThrow(/m\.safetensors: missing tensor "identity_gate\.0\.weight": not a SILO LatentDegradationNetwork/);
    // The package entry exports what RestoreModels.preserve needs.
    expect([pkg.PreserveDegradationNetwork, pkg.preserveNetworkVjp, pkg.inferPreserveConfig]).toEqual([PreserveDegradationNetwork, preserveNetworkVjp, inferPreserveConfig]);
  });

  it('silo restore --method silo-cnn --operator <preserve> --task sr4: exit 0, no autoencoder in the loop, the note names it', async () => {
    const lines: string[] = [];
    const io: CliIO = { out: (l) => lines.push(l), err: (l) => lines.push(l) };
    const out = join(tmp, 'out.png');
    const reportPath = join(tmp, 'r.json');
    const args = ['restore', '--golden', GOLDEN_ROOT, '--method', 'silo-cnn', '--operator', weightsPath, '--task', 'sr4', '--ground-truth', PHOTO];
    const code = await main([...args, '--size', '64', '--steps', '1', '--out', out, '--report', reportPath, '--quiet'], io);
    expect(code, lines.join('\n')).toBe(0);
    const report = JSON.parse(readFileSync(reportPath, 'utf8'));
    expect(report.dispatches.autoencoder_in_loop).toBe(0);
    expect(report.dispatches.loop).toBeGreaterThan(0);
    expect(JSON.stringify(report)).toMatch(/preserve CNN operator \(LatentDegradationNetwork\) .*preserve\.safetensors \(base 8, 2 blocks, max_noise 0\.1\)/);
    const png = await decodePng(readFileSync(out), out);
    expect([png.width, png.height]).toEqual([64, 64]);
  }, 300_000);

  it('RestorationSession: a finite image at a latent size other than 64, no UNet sigma embedding, nothing left on the GPU', async () => {
    const models = await loadModels(engine, { golden: dirFolder(GOLDEN_ROOT), operator: { kind: 'cnn', file: { folder: dirFolder(tmp), name: 'preserve.safetensors', label: weightsPath } } });
    const session = new RestorationSession(engine, models);
    try {
      expect(models.base.preserve?.config).toEqual(CONFIG);
      expect(models.base.cnn).toBeUndefined();
      expect(models.operatorLatentSize, 'any latent size').toBeUndefined();
      expect(models.base.sigmaEmb).toBeUndefined();
      const png = await decodePng(readFileSync(PHOTO), PHOTO);
      const photo = { width: png.width, height: png.height, channels: 3 as const, data: png.data };
      await models.embed('A high quality photo of a face');
      const timeEmbedding = vi.spyOn(models.base.unet, 'timeEmbedding');
      const live = engine.pool.stats.liveBytes;
      const r = await session.run({ task: 'sr4', method: 'silo-cnn', size: 128, steps: 2, seed: 3, groundTruth: photo });
      expect(engine.pool.stats.liveBytes, 'the noise embedding and everything else are freed').toBe(live);
      // The UNet's time embedding runs for the steps' timesteps only, never at SILO's sigma pseudo-timestep.
      expect(timeEmbedding.mock.calls.length).toBeGreaterThan(0);
      expect(timeEmbedding.mock.calls.map((c) => c[1])).not.toContain(sigmaTimestep(0.02));
      timeEmbedding.mockRestore();
      expect([r.image.width, r.image.height]).toEqual([128, 128]);
      expect(Number.isFinite(r.metrics['psnr'])).toBe(true);
      expect(Number.isFinite((r.report as { final_residual: number }).final_residual)).toBe(true);
    } finally {
      session.dispose();
    }
  }, 300_000);

  it('its operator embeds the raw measurement sigma; restore() takes exactly one CNN operator', async () => {
    const models = await loadModels(engine, { golden: dirFolder(GOLDEN_ROOT), operator: { kind: 'cnn', file: { folder: dirFolder(tmp), name: 'preserve.safetensors', label: weightsPath } } });
    try {
      const op = siloCnn.makeOperator!(models.base, undefined, 0.05);
      expect(op.kind).toBe('preserve');
      if (op.kind !== 'preserve') return;
      expect(Array.from(await op.noiseEmb.read())).toEqual(Array.from(sinusoidalNoiseEmbedding([0.05], 16, 0.1)));
      op.noiseEmb.dispose();
      const text = await models.embed('');
      const both = { ...models.base, text, cnn: models.base.preserve as unknown as DegradationModel };
      const y = engine.zeros([1, 3, 16, 16]);
      await expect(restore(engine, both, undefined as never, y, { method: 'silo-cnn', steps: 1, seed: 0 })).rejects.toThrow(/models\.cnn and models\.preserve are both set/);
      y.dispose();
    } finally {
      models.dispose();
    }
  });
});
