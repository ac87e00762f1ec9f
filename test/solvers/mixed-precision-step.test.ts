// Reverse mode in mixed precision (f16 weights, f32 activations and gradients) on the golden guided-step
// cases. Two checks: (1) the mixed kernels are exact, i.e. the golden case's f16 step 0 equals the f32
// step run on the same weights rounded to f16 values (so every difference from the f32 step is the
// rounding of the weights, nothing else); (2) `silo check --dtype f16` passes the golden silo_step /
// dps_step cases within MIXED_STEP_TOLERANCE, the bound derived from (1)'s deviation (docs/benchmarks.md).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import type { DType } from '../../src/engine/dtype.js';
import { f16BitsToF32, f32ToF16Bits } from '../../src/engine/dtype.js';
import type { SafetensorsFile, TensorSource } from '../../src/formats/safetensors.js';
import { readSafetensors, subFolder } from '../../src/check/files.js';
import { goldenSiloStep0 } from '../helpers/silo-step.js';
import { detectKind, RUNNERS } from '../../src/check/registry.js';
import { compare } from '../../src/check/compare.js';
import { MIXED_STEP_TOLERANCE } from '../../src/check/steps.js';
import { getEngine } from '../helpers/engine.js';
import { expectAllPass, goldenFiles, goldenManifest } from '../helpers/golden.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const siloStep0 = (weights: { unet: TensorSource; op: TensorSource }, dtype: DType) => goldenSiloStep0(engine, weights, { dtype });

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

describe('mixed precision: f16 weights, f32 activations and gradients', () => {
  // One f16 run serves both checks (each step costs minutes on a CPU adapter): the golden case's step 0,
  // computed with f16 weights, must equal the f32 step on the same weights rounded to f16 bit for bit.
  it('silo_step golden case in f16 (mixed precision): within the stated bounds, and step 0 equals the f32 step on the f16-rounded weights', async (ctx) => {
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

    const unetSrc = await readSafetensors(subFolder(files, '../unet_mini'), 'diffusion_pytorch_model.safetensors');
    const opSrc = await readSafetensors(subFolder(files, '../silo_cnn'), 'weights.safetensors');
    const rounded = await siloStep0({ unet: roundedToF16(unetSrc), op: roundedToF16(opSrc) }, 'f32');
    expect(Object.keys(rounded)).toEqual(['eps', 'x0_hat', 'w_hat', 'residual_norm', 'grad', 'z_prev']);
    for (const k of Object.keys(rounded)) {
      // Same values, same f32 arithmetic in the same order: only the kernels' storage type differs.
      const mixed = items.find((i) => i.name === `step0.${k}`)!;
      const r = compare({ name: k, actual: mixed.actual, expected: rounded[k]!, tol: { exact: true } });
      console.log(`mixed vs rounded-f32 ${k}: max abs ${r.maxAbs.toExponential(2)}, relL2 ${r.relL2.toExponential(2)}`);
      expect(r.pass, `${k}: ${r.detail}`).toBe(true);
    }
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
