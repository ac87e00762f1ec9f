// Reverse mode in mixed precision (f16 weights, f32 activations and gradients) on the golden guided-step
// cases. Two checks: (1) the mixed kernels are exact, i.e. a step with f16 weights equals the f32 step run
// on the same weights rounded to f16 values (so every difference from the f32 step is the rounding of
// the weights, nothing else); (2) `silo check --dtype f16` passes the golden silo_step / dps_step cases
// within MIXED_STEP_TOLERANCE, the bound derived from (1)'s deviation (docs/benchmarks.md).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import type { DType } from '../../src/engine/dtype.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { f16BitsToF32, f32ToF16Bits } from '../../src/engine/dtype.js';
import { runProgram } from '../../src/engine/recorder.js';
import type { SafetensorsFile, TensorSource } from '../../src/formats/safetensors.js';
import { WeightLoader } from '../../src/models/weights.js';
import { UNet2DConditionModel } from '../../src/models/unet/unet.js';
import { parseUNetConfig } from '../../src/models/unet/config.js';
import { DegradationModel } from '../../src/models/silo/cnn.js';
import { inferDegradationConfig } from '../../src/models/silo/config.js';
import { DDPMScheduler } from '../../src/solvers/schedulers/ddpm.js';
import { SD15_SCHEDULER_CONFIG } from '../../src/solvers/schedulers/config.js';
import { siloStep } from '../../src/solvers/samplers/silo.js';
import { unetEpsModel } from '../../src/solvers/samplers/eps-model.js';
import { readJson, readSafetensors, subFolder } from '../../src/check/files.js';
import { detectKind, RUNNERS } from '../../src/check/registry.js';
import { compare } from '../../src/check/compare.js';
import { MIXED_STEP_TOLERANCE } from '../../src/check/steps.js';
import { getEngine } from '../helpers/engine.js';
import { expectAllPass, goldenFiles, goldenManifest } from '../helpers/golden.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

/** A source whose floating-point tensors hold their values rounded to the nearest f16. */
function roundedToF16(src: SafetensorsFile): TensorSource {
  const round = (v: Float32Array) => v.map((x) => f16BitsToF32(f32ToF16Bits(x)));
  return {
    source: `${src.source} (rounded to f16)`,
    names: () => src.names(),
    has: (n) => src.has(n),
    info: (n) => src.info(n),
    getRaw: (n) => src.getRaw(n),
    getF32: (n) => round(src.getF32(n)),
    getIntegers: (n) => src.getIntegers(n),
    toTensor: (e: Engine, n: string, dtype: DType = 'f32') => e.tensor(round(src.getF32(n)), src.info(n).shape, dtype, n),
  };
}

const needsF16 = (ctx: { skip: (note?: string) => void }) => {
  if (!engine.hasF16) ctx.skip('this adapter has no shader-f16: mixed precision needs f16 storage');
};

/** silo_step's step0 (t = 500) with the weights in `dtype` (f32 tensors of `source` otherwise). */
async function siloStep0(weights: { unet: TensorSource; op: TensorSource }, dtype: DType): Promise<Record<string, Float32Array>> {
  const files = goldenFiles('silo_step');
  const golden = await readSafetensors(files, 'golden.safetensors');
  const unetDir = subFolder(files, '../unet_mini');
  const config = parseUNetConfig(await readJson(unetDir, 'config.json'), 'unet_mini/config.json');
  const loaders: WeightLoader[] = [];
  const owned: Tensor[] = [];
  try {
    const build = <T>(src: TensorSource, make: (w: WeightLoader) => T) =>
      WeightLoader.build(engine, src, { dtype, activations: 'f32' }, (w) => (loaders.push(w), make(w)));
    const unet = build(weights.unet, (w) => new UNet2DConditionModel(w, config));
    const op = build(weights.op, (w) => new DegradationModel(w, inferDegradationConfig(weights.op)));
    await WeightLoader.verify(engine);
    const input = (n: string) => {
      const t = engine.tensor(golden.getF32(n), golden.info(n).shape, 'f32', n);
      owned.push(t);
      return t;
    };
    const scheduler = new DDPMScheduler({ ...SD15_SCHEDULER_CONFIG });
    scheduler.setTimesteps(999);
    const prior = { model: unetEpsModel(unet), scheduler, text: input('input.prompt_embeds') };
    const t = golden.getIntegers('step0.input.t')[0]!;
    const { result } = await runProgram(engine, 'silo_step', (rec) =>
      siloStep(rec, prior, { kind: 'cnn', model: op, sigmaEmb: input('input.sigma_emb') }, input('step0.input.w'), input('step0.input.z_t'), t, input('step0.input.ddpm_noise'), { eta: 0.5 }),
    );
    const out: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries({ eps: result.eps, x0_hat: result.x0, w_hat: result.estimate, residual_norm: result.residualNorm, grad: result.grad, z_prev: result.zPrev })) {
      out[k] = await v!.read();
      v!.dispose();
    }
    for (const v of [result.prev, ...Object.values(result.extras)]) v?.dispose();
    return out;
  } finally {
    owned.forEach((t) => t.dispose());
    loaders.forEach((l) => l.disposeAll());
  }
}

describe('mixed precision: f16 weights, f32 activations and gradients', () => {
  it('a SILO step with f16 weights equals the f32 step on the f16-rounded weights', async (ctx) => {
    needsF16(ctx);
    const files = goldenFiles('silo_step');
    const unetSrc = await readSafetensors(subFolder(files, '../unet_mini'), 'diffusion_pytorch_model.safetensors');
    const opSrc = await readSafetensors(subFolder(files, '../silo_cnn'), 'weights.safetensors');
    const mixed = await siloStep0({ unet: unetSrc, op: opSrc }, 'f16');
    const rounded = await siloStep0({ unet: roundedToF16(unetSrc), op: roundedToF16(opSrc) }, 'f32');
    expect(Object.keys(mixed)).toEqual(['eps', 'x0_hat', 'w_hat', 'residual_norm', 'grad', 'z_prev']);
    for (const k of Object.keys(rounded)) {
      // Same values, same f32 arithmetic in the same order: only the kernels' storage type differs.
      const r = compare({ name: k, actual: mixed[k]!, expected: rounded[k]!, tol: { exact: true } });
      console.log(`mixed vs rounded-f32 ${k}: max abs ${r.maxAbs.toExponential(2)}, relL2 ${r.relL2.toExponential(2)}`);
      expect(r.pass, `${k}: ${r.detail}`).toBe(true);
    }
  }, 900_000);

  it('silo_step golden case in f16 (mixed precision): every quantity, gradient included, within the stated bounds', async (ctx) => {
    needsF16(ctx);
    const files = goldenFiles('silo_step');
    const manifest = goldenManifest('silo_step');
    const kind = await detectKind(files, manifest);
    const items = await RUNNERS[kind!]!(engine, files, manifest, { dtype: 'f16', log: (l) => console.log(l) });
    for (const p of ['step0.', 'step1.']) {
      expect(items.map((i) => i.name)).toEqual(expect.arrayContaining(['eps', 'x0_hat', 'prev_sample_unguided', 'w_hat', 'residual_norm', 'grad', 'z_prev'].map((n) => p + n)));
    }
    expect(items.find((i) => i.name === 'step0.grad')!.tol).toEqual(MIXED_STEP_TOLERANCE.grad);
    expectAllPass(items, 'silo_step f16');
  }, 900_000);

  it('dps_step golden case in f16 (mixed precision, through the VAE decoder)', async (ctx) => {
    needsF16(ctx);
    const files = goldenFiles('dps_step');
    const manifest = goldenManifest('dps_step');
    const kind = await detectKind(files, manifest);
    const items = await RUNNERS[kind!]!(engine, files, manifest, { dtype: 'f16', log: (l) => console.log(l) });
    expect(items.map((i) => i.name)).toEqual(expect.arrayContaining(['eps', 'x0_hat', 'decoded_x0_hat', 'y_hat', 'residual_norm', 'grad', 'z_prev']));
    expectAllPass(items, 'dps_step f16');
  }, 600_000);
});
