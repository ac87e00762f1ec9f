// Non-finite values are caught and named end to end, in-process through the library, with the tiny
// golden models: a NaN written (inside this test) into a copy of the VAE decoder's conv_out.bias, the
// UNet's conv_out.bias or a tensor inside SILO's CNN operator. Loading refuses, naming file, tensor and
// count; loaded anyway (allowNonFinite), restore() throws naming the step, t, the method and the first
// non-finite module/stage, and returns nothing. Runs are 1 step on 64x64 images (8x8 latents). SILO's
// golden CNN fixes a 64x64 latent through its LayerNorm([C, 64, 64]) shapes (a 512x512 image, minutes
// on a CPU adapter), so the SILO-CNN runs use a copy of it cropped to 8x8 (the LayerNorm affine maps
// and the sigma map's output rows): the same layers and values, sized for an 8x8 latent.
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../src/engine/device.js';
import type { Tensor } from '../src/engine/tensor.js';
import { readSafetensorsFile } from '../src/formats/safetensors-node.js';
import { f32Entry, parseSafetensors, serializeSafetensors, type SafetensorsFile } from '../src/formats/safetensors.js';
import { WeightError, WeightLoader } from '../src/models/weights.js';
import { UNet2DConditionModel } from '../src/models/unet/unet.js';
import { parseUNetConfig } from '../src/models/unet/config.js';
import { AutoencoderKL } from '../src/models/vae/autoencoder.js';
import { parseVaeConfig } from '../src/models/vae/config.js';
import { DegradationModel } from '../src/models/silo/cnn.js';
import { inferDegradationConfig } from '../src/models/silo/config.js';
import { DDPMScheduler } from '../src/solvers/schedulers/ddpm.js';
import { SD15_SCHEDULER_CONFIG } from '../src/solvers/schedulers/config.js';
import { makeDegradation } from '../src/solvers/degradations/index.js';
import { NonFiniteStepError, restore, type RestoreMethod, type RestoreModels } from '../src/restore/loop.js';
import { getEngine, randomData } from './helpers/engine.js';
import { goldenDir } from './helpers/golden.js';

let engine: Engine;
let tmp: string;
beforeAll(async () => {
  engine = await getEngine();
  tmp = mkdtempSync(join(tmpdir(), 'silo-nonfinite-'));
});

const UNET = () => `${goldenDir('unet_mini')}/diffusion_pytorch_model.safetensors`;
const VAE = () => `${goldenDir('vae_mini')}/diffusion_pytorch_model.safetensors`;
const CNN = () => `${goldenDir('silo_cnn')}/weights.safetensors`;

/** [C, 64, 64] -> [C, side, side] (top-left crop); [4096, K] (sigma map rows) -> [side * side, K]. */
function crop(v: Float32Array, shape: readonly number[], side: number): { v: Float32Array; shape: number[] } {
  if (shape.length === 3 && shape[1] === 64 && shape[2] === 64) {
    const c = shape[0]!;
    const out = new Float32Array(c * side * side);
    for (let k = 0; k < c; k++) for (let i = 0; i < side; i++) for (let j = 0; j < side; j++) out[(k * side + i) * side + j] = v[(k * 64 + i) * 64 + j]!;
    return { v: out, shape: [c, side, side] };
  }
  if (shape.length === 2 && shape[0] === 4096) return { v: v.slice(0, side * side * shape[1]!), shape: [side * side, shape[1]!] };
  if (shape.length === 1 && shape[0] === 4096) return { v: v.slice(0, side * side), shape: [side * side] };
  return { v, shape: [...shape] };
}

/**
 * A copy of a golden weights file with `bad` values written at the start of tensor `name` (none when
 * name is ''); `cnnSide` crops a SILO CNN to that latent size.
 */
async function hostileCopy(path: string, name: string, bad: number[] = [NaN], cnnSide?: number): Promise<SafetensorsFile> {
  const src = await readSafetensorsFile(path);
  const entries: Record<string, ReturnType<typeof f32Entry>> = {};
  for (const n of src.names()) {
    const c = cnnSide ? crop(src.getF32(n).slice(), src.info(n).shape, cnnSide) : { v: src.getF32(n).slice(), shape: src.info(n).shape };
    if (n === name) bad.forEach((b, i) => (c.v[i] = b));
    entries[n] = f32Entry(c.v, c.shape);
  }
  expect(name === '' || src.has(name), `${path} has ${name}`).toBe(true);
  const out = join(tmp, `${name}-${Math.random().toString(36).slice(2)}.safetensors`);
  writeFileSync(out, serializeSafetensors(entries));
  return readSafetensorsFile(out);
}

const json = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;

interface Built {
  models: RestoreModels;
  dispose(): void;
}

/** The tiny models (optionally from hostile copies), loaded with allowNonFinite as a user would. */
async function buildModels(files: { unet?: SafetensorsFile; vae?: SafetensorsFile; cnn?: SafetensorsFile }, cnn: boolean): Promise<Built> {
  const opts = { allowNonFinite: true };
  const uCfg = parseUNetConfig(json(`${goldenDir('unet_mini')}/config.json`), 'unet_mini/config.json');
  const unet = WeightLoader.load(engine, files.unet ?? (await readSafetensorsFile(UNET())), opts, (w) => new UNet2DConditionModel(w, uCfg));
  const vCfg = parseVaeConfig(json(`${goldenDir('vae_mini')}/config.json`));
  const vae = WeightLoader.load(engine, files.vae ?? (await readSafetensorsFile(VAE())), opts, (w) => new AutoencoderKL(w, vCfg));
  const owned: Tensor[] = [];
  const dim = uCfg.crossAttentionDim[0]!;
  const text = engine.tensor(randomData(8 * dim, 3, -1, 1), [1, 8, dim]);
  owned.push(text);
  const models: RestoreModels = { unet: unet.model, vae: vae.model, scheduler: new DDPMScheduler(SD15_SCHEDULER_CONFIG), text };
  let op: { dispose(): void } | undefined;
  if (cnn) {
    const weights = files.cnn ?? (await hostileCopy(CNN(), '', [], 8));
    const loaded = WeightLoader.load(engine, weights, opts, (w) => new DegradationModel(w, inferDegradationConfig(weights)));
    models.cnn = loaded.model;
    op = loaded;
    // The mini UNet's time embedding is too narrow for the operator: the golden case's e_sigma.
    const g = await readSafetensorsFile(`${goldenDir('silo_cnn')}/golden.safetensors`);
    models.sigmaEmb = engine.tensor(g.getF32('input.sigma_emb'), [1, 1280]);
    owned.push(models.sigmaEmb);
  }
  await WeightLoader.verify(engine);
  return {
    models,
    dispose: () => {
      [unet, vae, op].forEach((m) => m?.dispose());
      owned.forEach((t) => t.dispose());
    },
  };
}

/** restore() on a random measurement of an inpainting task; resolves to the error it throws. */
async function restoreError(b: Built, method: RestoreMethod, size = 64): Promise<NonFiniteStepError> {
  const live = engine.pool.stats.liveBytes;
  const setup = makeDegradation(engine, 'inpaint_center', size, size);
  const y = engine.tensor(randomData(3 * size * size, 5, -1, 1), [1, 3, size, size]);
  const err = await restore(engine, b.models, setup.operator, y, { method, steps: 1, seed: 1, eta: setup.eta }).then(
    () => undefined,
    (e: unknown) => e,
  );
  y.dispose();
  setup.operator.dispose();
  expect(err, 'restore() must throw, not return an image').toBeInstanceOf(NonFiniteStepError);
  // Everything restore() and the diagnosis allocated was freed on the way out.
  expect(engine.pool.stats.liveBytes).toBe(live);
  return err as NonFiniteStepError;
}

describe('a non-finite weight is refused at load, naming file, tensor and count', () => {
  const cases: { what: string; file: () => string; tensor: string; make: (w: WeightLoader) => unknown }[] = [
    { what: 'VAE decoder conv_out.bias', file: VAE, tensor: 'decoder.conv_out.bias', make: (w: WeightLoader) => new AutoencoderKL(w, parseVaeConfig(json(`${goldenDir('vae_mini')}/config.json`))) },
    { what: 'UNet conv_out.bias', file: UNET, tensor: 'conv_out.bias', make: (w: WeightLoader) => new UNet2DConditionModel(w, parseUNetConfig(json(`${goldenDir('unet_mini')}/config.json`), 'cfg')) },
    // The golden CNN at its own size: loading is cheap, only restore() needs the cropped copy.
    { what: 'SILO CNN processing.0.weight', file: CNN, tensor: 'processing.0.weight', make: (w: WeightLoader) => new DegradationModel(w, inferDegradationConfig(w.source)) },
  ];
  for (const c of cases) {
    it(c.what, async () => {
      const src = await hostileCopy(c.file(), c.tensor, [NaN, Infinity, -Infinity]);
      const live = engine.pool.stats.liveBytes;
      const loaded = WeightLoader.load(engine, src, {}, c.make);
      const err = await WeightLoader.verify(engine).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WeightError);
      const msg = (err as Error).message;
      expect(msg).toContain(src.source);
      expect(msg).toContain(`"${c.tensor}" has 3 non-finite value(s)`);
      expect(msg).toContain(': 1 tensor(s) hold NaN or Inf');
      loaded.dispose();
      expect(engine.pool.stats.liveBytes).toBeLessThanOrEqual(live);
      // Loaded anyway on request: no error.
      const anyway = WeightLoader.load(engine, src, { allowNonFinite: true }, c.make);
      await expect(WeightLoader.verify(engine)).resolves.toBeUndefined();
      anyway.dispose();
    });
  }

  it('values() (constants folded into dispatches, never uploaded) refuses NaN on the CPU, unless allowed', () => {
    const src = parseSafetensors(serializeSafetensors({ mix: f32Entry([0.5, NaN, Infinity], [3]) }), 'mixing.safetensors');
    expect(() => new WeightLoader(engine, src).values('mix', [3])).toThrow(WeightError);
    expect(() => new WeightLoader(engine, src).values('mix', [3])).toThrow(/mixing\.safetensors: 1 tensor\(s\) hold NaN or Inf: "mix" has 2 non-finite/);
    expect(Array.from(new WeightLoader(engine, src, { allowNonFinite: true }).values('mix', [3]))).toEqual([0.5, NaN, Infinity]);
  });

  it('clean weights pass', async () => {
    const src = await readSafetensorsFile(UNET());
    const cfg = parseUNetConfig(json(`${goldenDir('unet_mini')}/config.json`), 'cfg');
    const loaded = WeightLoader.load(engine, src, {}, (w) => new UNet2DConditionModel(w, cfg));
    await expect(WeightLoader.verify(engine)).resolves.toBeUndefined();
    loaded.dispose();
  });

  it('restore() itself refuses models whose weight check was never awaited', async () => {
    const hostile = await hostileCopy(UNET(), 'conv_out.bias');
    const b = await buildModels({}, false);
    const cfg = parseUNetConfig(json(`${goldenDir('unet_mini')}/config.json`), 'cfg');
    const bad = WeightLoader.load(engine, hostile, {}, (w) => new UNet2DConditionModel(w, cfg));
    const setup = makeDegradation(engine, 'inpaint_center', 64, 64);
    const y = engine.tensor(randomData(3 * 64 * 64, 5, -1, 1), [1, 3, 64, 64]);
    await expect(restore(engine, { ...b.models, unet: bad.model }, setup.operator, y, { method: 'latent-dps', steps: 1, seed: 1 })).rejects.toThrow(
      /conv_out\.bias" has 1 non-finite value/,
    );
    y.dispose();
    bad.dispose();
    b.dispose();
  });
});

describe('loaded anyway (allowNonFinite), restore() stops at the bad step and names the module', () => {
  // The UNet cases run SILO-CNN: no decoder inside its loop, so they cost a fraction of a DPS step.
  it('NaN in the UNet conv_out.bias: silo-cnn step 0 names unet: conv_out', async () => {
    const b = await buildModels({ unet: await hostileCopy(UNET(), 'conv_out.bias') }, true);
    const e = await restoreError(b, 'silo-cnn');
    expect(e.message).toMatch(/^restore: step 0 of 1 \(t=\d+, method silo-cnn\) produced non-finite values/);
    expect(e.message).toMatch(/first non-finite: unet: conv_out output has \d+ non-finite values/);
    expect(e.step).toBe(0);
    expect(e.diagnosis).toMatch(/^unet: conv_out output/);
    b.dispose();
  });

  it('NaN in the VAE decoder conv_out.bias: latent-dps step 0 names vae decoder: decoder.conv_out', async () => {
    const b = await buildModels({ vae: await hostileCopy(VAE(), 'decoder.conv_out.bias') }, false);
    const e = await restoreError(b, 'latent-dps');
    expect(e.message).toMatch(/^restore: step 0 of 1 \(t=\d+, method latent-dps\)/);
    expect(e.diagnosis).toMatch(/^vae decoder: decoder\.conv_out output has \d+ non-finite values/);
    b.dispose();
  });

  it('NaN in a mid-block resnet of the UNet: the stage is named, not just the module', async () => {
    const b = await buildModels({ unet: await hostileCopy(UNET(), 'mid_block.resnets.0.conv1.bias') }, true);
    const e = await restoreError(b, 'silo-cnn');
    expect(e.message).toMatch(/method silo-cnn/);
    expect(e.diagnosis).toMatch(/^unet: mid_block\.resnets\.0 output has \d+ non-finite values/);
    b.dispose();
  });

  it('silo-cnn: NaN inside the CNN operator names the operator; a NaN decoder fails the final decode', async () => {
    const cnnBad = await buildModels({ cnn: await hostileCopy(CNN(), 'processing.0.weight', [NaN], 8) }, true);
    const e = await restoreError(cnnBad, 'silo-cnn');
    expect(e.message).toMatch(/^restore: step 0 of 1 \(t=\d+, method silo-cnn\)/);
    expect(e.diagnosis).toMatch(/^silo-cnn operator: the estimate has \d+ non-finite values/);
    cnnBad.dispose();
    // SILO never decodes inside the loop: the decoded image's check catches the decoder.
    const decBad = await buildModels({ vae: await hostileCopy(VAE(), 'decoder.conv_out.bias') }, true);
    const d = await restoreError(decBad, 'silo-cnn');
    expect(d.message).toMatch(/^restore: the decoded image has \d+ non-finite value\(s\) after 1 finite steps \(method silo-cnn\)/);
    expect(d.diagnosis).toMatch(/^vae decoder: decoder\.conv_out output/);
    decBad.dispose();
  });

  it('clean models: the checks do not fire and the image is returned', async () => {
    const b = await buildModels({}, true);
    const setup = makeDegradation(engine, 'inpaint_center', 64, 64);
    const y = engine.tensor(randomData(3 * 64 * 64, 5, -1, 1), [1, 3, 64, 64]);
    const r = await restore(engine, b.models, setup.operator, y, { method: 'silo-cnn', steps: 2, seed: 1, residualEvery: 1, eta: setup.eta });
    expect(r.report.residuals.length).toBe(2);
    expect(r.report.residuals.every(([, v]) => Number.isFinite(v) && v > 0)).toBe(true);
    expect((await r.image.read()).every(Number.isFinite)).toBe(true);
    r.image.dispose();
    r.latent.dispose();
    y.dispose();
    setup.operator.dispose();
    b.dispose();
  });
});
