// The restoration layer (src/restore/): the sampler registry and the defaults table, the size rules,
// and a RestorationSession on the tiny golden models: many runs on one load, previews that do not
// change the method's cost, an abort between steps, and nothing left on the GPU after any of them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { getEngine } from './helpers/engine.js';
import { GOLDEN_ROOT } from './helpers/golden.js';
import type { Engine } from '../src/engine/device.js';
import { dirFolder } from '../src/formats/folder-node.js';
import { decodePng } from '../src/io/png.js';
import type { Image8 } from '../src/io/types.js';
import { DEGRADATION_TASKS } from '../src/solvers/degradations/tasks.js';
import { RESTORE_METHODS, SAMPLERS, samplerFor } from '../src/restore/registry.js';
import { methodEta, defaultMethod } from '../src/restore/defaults.js';
import { checkMeasurementShape, resolveSize } from '../src/restore/size.js';
import { loadModels } from '../src/restore/models.js';
import { RestorationSession, type Preview } from '../src/restore/session.js';
import { RestoreAbortedError } from '../src/restore/loop.js';

const PHOTO = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;

describe('sampler registry and defaults', () => {
  it('lists every method once, each with a sampler that says what it needs', () => {
    expect(RESTORE_METHODS).toEqual(['silo-cnn', 'silo-rg', 'latent-dps', 'psld']);
    for (const m of RESTORE_METHODS) expect(samplerFor(m).method).toBe(m);
    expect([SAMPLERS['silo-cnn'].space, SAMPLERS['silo-cnn'].operator]).toEqual(['latent', 'cnn']);
    expect([SAMPLERS['silo-rg'].space, SAMPLERS['silo-rg'].operator]).toEqual(['latent', 'readout']);
    expect([SAMPLERS['latent-dps'].space, SAMPLERS['latent-dps'].operator, SAMPLERS['latent-dps'].usesEta]).toEqual(['pixel', undefined, true]);
    expect([SAMPLERS.psld.space, SAMPLERS.psld.usesEta]).toEqual(['pixel', false]);
    expect(() => samplerFor('dps')).toThrow('restore: unknown method "dps" (known: silo-cnn, silo-rg, latent-dps, psld)');
  });

  it("eta: SILO's per task (1.0 inpainting, 0.5 otherwise), Latent-DPS 1.0 whatever the task, PSLD none, a given one wins", () => {
    for (const task of DEGRADATION_TASKS) {
      const silo = task.startsWith('inpaint') ? 1 : 0.5;
      expect(methodEta('silo-cnn', task).eta, task).toBe(silo);
      expect(methodEta('silo-rg', task).eta, task).toBe(silo);
      expect(methodEta('latent-dps', task)).toEqual({ eta: 1, from: 'Latent-DPS default' });
      expect(methodEta('psld', task).eta).toBeUndefined();
      expect(methodEta('latent-dps', task, 0.3)).toEqual({ eta: 0.3, from: 'given' });
    }
  });

  it('the default method follows a given operator or the golden CNN; otherwise none (the released operator decides)', () => {
    expect(defaultMethod({ operator: 'folder' })).toBe('silo-rg');
    expect(defaultMethod({ operator: 'file' })).toBe('silo-cnn');
    expect(defaultMethod({ operator: 'folder', golden: true })).toBe('silo-rg');
    expect(defaultMethod({ golden: true })).toBe('silo-cnn');
    expect(defaultMethod({})).toBeUndefined();
  });

  it('size rules: square measurements, SR factors, multiples of the VAE factor, the operator fixes the size', () => {
    expect(() => checkMeasurementShape({ task: 'sr4', measurement: [16, 8], measurementName: 'y.png' })).toThrow('y.png: the measurement must be square, got 16x8');
    expect(() => checkMeasurementShape({ task: 'sr4', size: 128, measurement: [16, 16] })).toThrow('the measurement must be 32x32 for task sr4 at size 128, got 16x16');
    expect(resolveSize({ task: 'sr4', measurement: [16, 16], vaeFactor: 8 })).toBe(64);
    expect(resolveSize({ task: 'gaussian_blur', groundTruth: [70, 90], vaeFactor: 8 })).toBe(64);
    expect(resolveSize({ task: 'sr8', groundTruth: [700, 700], vaeFactor: 8, operatorSize: 512 })).toBe(512);
    expect(() => resolveSize({ task: 'sr8', size: 256, groundTruth: [700, 700], vaeFactor: 8, operatorSize: 512 })).toThrow('this operator works on 512x512 images (latent 64); size 256 does not match');
    expect(() => resolveSize({ task: 'sr4', size: 60, groundTruth: [64, 64], vaeFactor: 8 })).toThrow("size 60 is not a multiple of this VAE's factor 8; nearest valid sizes: 56 or 64");
    expect(() => resolveSize({ task: 'sr4', groundTruth: [7, 7], vaeFactor: 8 })).toThrow('the image is smaller than the VAE factor 8');
    // The UNet halves the latent at each down block (SD-1.5 and the tiny UNet: 3 times), so sides are multiples of 64.
    expect(() => resolveSize({ task: 'sr4', size: 72, groundTruth: [200, 200], vaeFactor: 8, unetMultiple: 8 })).toThrow(
      "size 72 is not a multiple of 64 (the VAE's factor 8 times the 8 the UNet's down blocks need); nearest valid sizes: 64 or 128",
    );
    expect(resolveSize({ task: 'gaussian_blur', groundTruth: [200, 250], vaeFactor: 8, unetMultiple: 8 })).toBe(192);
    expect(() => resolveSize({ task: 'sr4', groundTruth: [60, 60], vaeFactor: 8, unetMultiple: 8 })).toThrow("the image is smaller than the size factor 64 (the VAE's 8 times the UNet's 8)");
  });
});

describe('RestorationSession on the tiny golden models', () => {
  let engine: Engine;
  let session: RestorationSession;
  let photo: Image8;
  let baseline: number;

  beforeAll(async () => {
    engine = await getEngine();
    const png = await decodePng(readFileSync(PHOTO), PHOTO);
    photo = { width: png.width, height: png.height, channels: 3, data: png.data.length === png.width * png.height * 3 ? png.data : dropAlpha(png.data) };
    baseline = engine.pool.stats.liveBytes;
    session = new RestorationSession(engine, await loadModels(engine, { golden: dirFolder(GOLDEN_ROOT) }));
    // The session caches prompt embeddings; made here, so each test's GPU balance counts only its runs.
    await session.models.embed('A high quality photo of a face');
  }, 120_000);
  afterAll(() => session?.dispose());

  const request = { task: 'avgpool4' as const, method: 'latent-dps' as const, size: 64, steps: 2, seed: 5 };
  let first: Awaited<ReturnType<RestorationSession['run']>>;

  it('runs twice on one load with the same result, fills every default, and frees the request', async () => {
    const live = engine.pool.stats.liveBytes;
    const a = (first = await session.run({ ...request, groundTruth: photo }));
    expect(engine.pool.stats.liveBytes, 'nothing of the run stays on the GPU').toBe(live);
    const b = await session.run({ ...request, groundTruth: photo });
    expect(engine.pool.stats.liveBytes, 'nothing of the run stays on the GPU').toBe(live);
    expect(Buffer.from(b.image.data).equals(Buffer.from(a.image.data))).toBe(true);
    expect([a.image.width, a.image.height, a.measurement.width, a.measurement.height]).toEqual([64, 64, 16, 16]);
    expect(a.settings).toMatchObject({ method: 'latent-dps', task: 'avgpool4', steps: 2, eta: 1, eta_from: 'Latent-DPS default', seed: 5, sigma: 0.02, size: 64, cfg: 1, prompt: 'A high quality photo of a face' });
    for (const k of ['psnr', 'psnr_y', 'ssim', 'consistency_psnr', 'consistency_psnr_vs_measurement']) expect(Number.isFinite(a.metrics[k]), k).toBe(true);
    expect(a.metrics['ms_ssim']).toBeNull(); // 64 px is below MS-SSIM's 5 scales
    const report = a.report as { dispatches: { loop: number; previews: number }; residuals: unknown[] };
    expect(report.dispatches.previews).toBe(0);
    expect(report.residuals.length).toBeGreaterThan(0);

  }, 300_000);

  it('previews every k steps (not the last), decoded apart from the loop, without changing the result', async () => {
    const plain = first;
    const previews: Preview[] = [];
    const withPreviews = await session.run({ ...request, groundTruth: photo }, { previewEvery: 1, onPreview: (p) => void previews.push(p) });
    expect(previews.map((p) => [p.step, p.total])).toEqual([[1, 2]]);
    expect([previews[0]!.image.width, previews[0]!.image.height, previews[0]!.image.channels]).toEqual([64, 64, 3]);
    expect(Buffer.from(withPreviews.image.data).equals(Buffer.from(plain.image.data))).toBe(true);
    const r0 = plain.report as { dispatches: { loop: number; previews: number } };
    const r1 = withPreviews.report as { dispatches: { loop: number; previews: number } };
    expect(r1.dispatches.loop).toBe(r0.dispatches.loop);
    expect(r1.dispatches.previews).toBeGreaterThan(0);
  }, 300_000);

  it('stops between steps on abort and leaves nothing on the GPU', async () => {
    const live = engine.pool.stats.liveBytes;
    const controller = new AbortController();
    const steps: number[] = [];
    const err = await session
      .run({ ...request, groundTruth: photo }, { signal: controller.signal, onProgress: (p) => (steps.push(p.step), p.step === 1 && controller.abort()) })
      .then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(RestoreAbortedError);
    expect((err as Error).message).toBe('restore: stopped after 1 of 2 steps');
    expect(steps).toEqual([1]);
    expect(engine.pool.stats.liveBytes).toBe(live);
  }, 300_000);

  it('refuses a request without an image, with both, a method without its operator, eta for PSLD, and a size the UNet cannot halve', async () => {
    await expect(session.run({ ...request })).rejects.toThrow('give either a ground truth to degrade or a measurement');
    await expect(session.run({ ...request, groundTruth: photo, measurement: photo })).rejects.toThrow('give either a ground truth to degrade or a measurement');
    await expect(session.run({ ...request, method: 'silo-rg', groundTruth: photo })).rejects.toThrow('method silo-rg needs a readout operator, and none was loaded');
    await expect(session.run({ ...request, method: 'psld', eta: 0.5, groundTruth: photo })).rejects.toThrow('PSLD takes no eta');
    expect(session.sizeMultiple).toBe(64);
    await expect(session.run({ ...request, size: 72, groundTruth: photo })).rejects.toThrow("size 72 is not a multiple of 64 (the VAE's factor 8 times the 8 the UNet's down blocks need)");
    expect(baseline).toBeLessThanOrEqual(engine.pool.stats.liveBytes);
  });
});

function dropAlpha(rgba: Uint8Array): Uint8Array {
  const out = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) out.set(rgba.subarray(i, i + 3), j);
  return out;
}
