// A GPU device lost in the middle of a restoration (GPUDevice.destroy() from the progress callback, as a
// driver reset would do between steps): restore() ends with DeviceLostError saying the device was lost
// and why, every tensor can still be freed without an exception, every later use of the dead Engine
// gives the same DeviceLostError, and a new Engine in the same process runs the same restoration.
// Tiny golden models (unet_mini, vae_mini, clip_text_mini), Latent-DPS, 2 steps on a 64x64 image.
// This file creates its own Engines (the shared test engine must stay alive).
import { describe, it, expect } from 'vitest';
import { Engine } from '../src/engine/device.js';
import { DeviceLostError } from '../src/engine/errors.js';
import { runProgram } from '../src/engine/recorder.js';
import { scale } from '../src/engine/ops/elementwise.js';
import { loadModels } from '../src/restore/models.js';
import { dirFolder } from '../src/formats/folder-node.js';
import { restore, type RestoreOptions } from '../src/restore/loop.js';
import { AvgPoolOperator } from '../src/solvers/degradations/avgpool.js';
import { GOLDEN_ROOT } from './helpers/golden.js';
import { randomData } from './helpers/engine.js';

const OPTIONS: RestoreOptions = { method: 'latent-dps', steps: 2, seed: 7, imageSize: [64, 64] };

/** The tiny models, a 4x average-pooling measurement of a 64x64 image, and a way to free them all. */
async function setUp(engine: Engine) {
  const loaded = await loadModels(engine, { golden: dirFolder(GOLDEN_ROOT) });
  const text = await loaded.embed('A high quality photo of a face');
  const A = new AvgPoolOperator(engine, 4);
  const y = engine.tensor(randomData(3 * 16 * 16, 11), [1, 3, 16, 16], 'f32', 'y');
  return { models: { ...loaded.base, text }, A, y, free: () => [() => y.dispose(), () => A.dispose(), () => loaded.dispose()].forEach((f) => f()) };
}

describe('device loss during restore()', () => {
  it('ends the run with DeviceLostError, frees without exceptions, refuses later use, and a new Engine restores again', async () => {
    const dead = await Engine.create();
    const run = await setUp(dead);
    const steps: number[] = [];
    const err = await restore(dead, run.models, run.A, run.y, {
      ...OPTIONS,
      onProgress: (p) => {
        steps.push(p.step);
        if (p.step === 1) dead.device.destroy();
      },
    }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(steps, 'the loss came between steps 1 and 2; step 2 never reported').toEqual([1]);
    expect(err).toBeInstanceOf(DeviceLostError);
    const message = (err as Error).message;
    expect(message).toMatch(/the GPU device was lost \(reason: destroyed/);
    expect(message).toMatch(/create a new Engine/);
    expect(dead.isLost).toBe(true);

    // Everything can be freed on the dead device, and nothing is left live (the failed step's outputs too).
    expect(() => run.free()).not.toThrow();
    expect(dead.pool.stats.liveBytes).toBe(0);

    // Later use: the same clear error, not the implementation's validation messages.
    expect(() => dead.tensor([1, 2], [2])).toThrow(DeviceLostError);
    expect(() => dead.tensor([1, 2], [2])).toThrow(message);
    await expect(runProgram(dead, 'after-loss', (rec) => rec.engine.zeros([2]))).rejects.toThrow(message);
    await expect(setUp(dead)).rejects.toThrow(DeviceLostError);
    await expect(dead.sync()).rejects.toThrow(message);
    expect(() => dead.destroy()).not.toThrow();

    // A new Engine in the same process runs the same restoration to the end.
    const fresh = await Engine.create();
    try {
      const again = await setUp(fresh);
      const progress: number[] = [];
      const result = await restore(fresh, again.models, again.A, again.y, { ...OPTIONS, onProgress: (p) => progress.push(p.step) });
      expect(progress).toEqual([1, 2]);
      expect(result.image.shape).toEqual([1, 3, 64, 64]);
      const image = await result.image.read();
      expect(image.every((v) => Number.isFinite(v) && v >= -1 && v <= 1)).toBe(true);
      expect(Number.isFinite(result.report.finalResidual)).toBe(true);
      result.image.dispose();
      result.latent.dispose();
      again.free();
      expect(fresh.pool.stats.liveBytes).toBe(0);
    } finally {
      fresh.destroy();
    }
    // Two Engines compile the UNet, VAE and CLIP kernels each: ~1 min on a busy CPU adapter.
  }, 300_000);

  it('a failed program frees the outputs it created but never a tensor its caller passed through it', async () => {
    const engine = await Engine.create();
    try {
      const x = engine.tensor([1, 2, 3, 4], [4], 'f32', 'x');
      const live = engine.pool.stats.liveBytes;
      engine.device.destroy();
      // Recorded before the loss is noticed (the same turn as destroy()), submitted after it.
      const failed = runProgram(engine, 'lost-midway', (rec) => ({ y: scale(rec, x, 2), x }));
      await expect(failed).rejects.toThrow(DeviceLostError);
      expect(engine.pool.stats.liveBytes, 'y was freed, x was not').toBe(live);
      expect(x.isDisposed).toBe(false);
      x.dispose();
      expect(engine.pool.stats.liveBytes).toBe(0);
    } finally {
      engine.destroy();
    }
  });

  it('Engine.destroy() makes later use a DeviceLostError saying the Engine was destroyed', async () => {
    const engine = await Engine.create();
    engine.destroy();
    expect(() => engine.zeros([2])).toThrow(/this Engine was destroyed \(Engine\.destroy\(\)\)/);
    await new Promise((r) => setTimeout(r, 20));
    expect(() => engine.zeros([2])).toThrow(/this Engine was destroyed/);
  });
});
