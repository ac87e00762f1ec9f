// VJP of SILO's "preserve" LatentDegradationNetwork (src/models/silo/preserve-vjp.ts) with random weights
// (test/helpers/silo-preserve.ts) at latent sizes other than the positional buffer's 64 (so it is resized):
//   - <vjp, d> against central differences of <cotangent, forward(z + h d)> along random directions and
//     along the VJP itself;
//   - element by element against a CPU VJP composed from test/ref's backward references
//     (test/helpers/silo-preserve.ts preserveVjpRef), which checks each gradient, not only projections;
//   - no tensor outlives the VJP; wrong shapes and f16 are refused with messages naming them.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { WeightLoader } from '../../src/models/weights.js';
import { PreserveDegradationNetwork } from '../../src/models/silo/preserve.js';
import { preserveNetworkVjp } from '../../src/models/silo/preserve-vjp.js';
import { preserveConfig } from '../../src/models/silo/config.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { file, preserveVjpRef, preserveWeights } from '../helpers/silo-preserve.js';
import { sinusoidalNoiseEmbedding } from '../../src/models/silo/preserve.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
};

async function read(fn: Parameters<typeof runProgram<Tensor>>[2]): Promise<Float32Array> {
  const { result } = await runProgram(engine, 'preserve vjp test', fn);
  try {
    return await result.read();
  } finally {
    result.dispose();
  }
}

/**
 * Step and tolerance. The network is smooth (SiLU, GroupNorm, sigmoid; no kinks), so the central
 * difference's error is the f32 round-off of the two forwards over 2h plus the h^2 curvature term.
 * Round-off: each output element within 1e-6 of itself (a few ulps through ~20 layers; the forward test
 * holds the GPU to the CPU composition at 1e-4 absolute), so at most 2e-6 sum |c_i y_i| / (2h) = F32 S / h.
 * Curvature: measured 5e-5 of the derivative along the VJP direction at h = 1e-2 (it shrinks 4x at h / 2),
 * allowed CURV = 2e-4 of it. Measured errors: 1e-4 to 8e-3 against limits of 1e-2 to 5e-2 on both adapters;
 * each derivative is asserted to be 50x over its limit, so a term missing from the VJP (a skip, the
 * gate, the colour path, skip_scale) fails: dropping the up path's skip gradients is off by 10-40x the limit.
 */
const H = 1e-2;
/**
 * GPU VJP vs the CPU reference VJP: f32 round-off through ~40 layers as a fraction of max |ref|. Measured
 * 2.5e-6 and 0.9e-6 (lavapipe), 2.8e-6 and 0.8e-6 (SwiftShader); 2e-5 allows 7x that. A dropped term is
 * far over it (the colour path's SiLU derivative left out: 0.25 of max |ref|).
 */
const EXACT = 2e-5;
const F32 = 1e-6;
const CURV = 2e-4;

const cases = [
  // Positional buffer resized 64 -> 10x10; batch 2 with different sigmas (per-item gate and noise_proj).
  { args: { base_channels: 8, num_blocks: 3, noise_embed_dim: 16, max_noise: 0.1 }, shape: [2, 4, 10, 10], sigmas: [0.02, 0.07] },
  // Two blocks, wider base, 12x12, another positional width.
  { args: { base_channels: 16, num_blocks: 2, noise_embed_dim: 8, pos_embed_channels: 6, max_noise: 0.1 }, shape: [1, 4, 12, 12], sigmas: [0.05] },
];

describe('SILO preserve LatentDegradationNetwork VJP (random weights)', () => {
  for (const { args, shape, sigmas } of cases) {
    it(`${JSON.stringify(args)} on ${JSON.stringify(shape)}: central differences along random directions and the VJP`, async () => {
      const c = preserveConfig(args);
      const weights = preserveWeights(c, 300 + shape[2]!);
      const model = WeightLoader.build(engine, file(weights, 'p.safetensors'), {}, (l) => new PreserveDegradationNetwork(l, c));
      const n = shape.reduce((a, b) => a * b, 1);
      const zData = randomData(n, 41, -2, 2);
      const cot = randomData(n, 42);
      const z = engine.tensor(zData, shape);
      const g = engine.tensor(cot, shape);
      const emb = model.embedNoise(engine, sigmas);
      const live = engine.pool.stats.liveBytes;
      const vjp = await read((rec) => preserveNetworkVjp(rec, model, z, emb, g));
      expect(engine.pool.stats.liveBytes, 'the VJP frees everything it saved').toBe(live);
      expect(vjp.length).toBe(n);

      // The CPU composition of the layer backward references (f64 gradients over the f32 forward's saves).
      const ref = preserveVjpRef(c, weights, zData, shape, sinusoidalNoiseEmbedding(sigmas, c.noiseEmbedDim, c.maxNoise), cot);
      const refMax = ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      let worst = 0;
      for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(vjp[i]! - ref[i]!));
      console.log(`preserve vjp ${JSON.stringify(shape)} vs CPU reference: max |diff| ${worst.toExponential(2)} of max |ref| ${refMax.toExponential(2)}`);
      expectClose(vjp, ref, { atol: EXACT * refMax, rtol: 0 }, 'preserve vjp vs CPU reference');

      const f = async (d: Float32Array, s: number) => {
        const zs = engine.tensor(Float32Array.from(zData, (v, i) => v + s * d[i]!), shape);
        try {
          return dot(cot, await read((rec) => model.forward(rec, zs, emb)));
        } finally {
          zs.dispose();
        }
      };
      const y = await read((rec) => model.forward(rec, z, emb));
      const S = cot.reduce((a, v, i) => a + Math.abs(v * y[i]!), 0);
      const vmax = vjp.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const dirs = [randomData(n, 50), randomData(n, 51), randomData(n, 52), Float32Array.from(vjp, (v) => v / vmax)];
      for (const [k, d] of dirs.entries()) {
        const fd = ((await f(d, H)) - (await f(d, -H))) / (2 * H);
        const dd = dot(vjp, d);
        const limit = (F32 * S) / H + CURV * Math.abs(dd);
        console.log(`preserve vjp ${JSON.stringify(shape)} direction ${k}: central difference ${fd}, <vjp, d> ${dd}, error ${(fd - dd).toExponential(2)}, limit ${limit.toExponential(2)}`);
        expect(Math.abs(dd), `direction ${k}: the derivative is well above the limit`).toBeGreaterThan(50 * limit);
        expect(Math.abs(fd - dd), `direction ${k}: <vjp, d> vs central difference`).toBeLessThan(limit);
      }
      for (const t of [z, g, emb]) t.dispose();
    });
  }

  it('refuses a cotangent of another shape, a mismatched noise embedding and f16 tensors', async () => {
    const c = preserveConfig({ base_channels: 8, num_blocks: 2, noise_embed_dim: 8 });
    const model = WeightLoader.build(engine, file(preserveWeights(c, 7), 'p.safetensors'), {}, (l) => new PreserveDegradationNetwork(l, c));
    const z = engine.zeros([1, 4, 8, 8]);
    const emb = model.embedNoise(engine, [0.02]);
    const run = (zt: Tensor, e: Tensor, g: Tensor) => runProgram(engine, 'bad', (rec) => preserveNetworkVjp(rec, model, zt, e, g));
    await expect(run(z, emb, engine.zeros([1, 4, 8, 6]))).rejects.toThrow(/cotangent must have the output's shape \[1, 4, 8, 8\], got \[1, 4, 8, 6\]/);
    await expect(run(z, model.embedNoise(engine, [0.02, 0.03]), engine.zeros([1, 4, 8, 8]))).rejects.toThrow(/noise embedding must be \[1, 8\].*got \[2, 8\]/);
    if (engine.hasF16) {
      await expect(run(engine.zeros([1, 4, 8, 8], 'f16'), emb, engine.zeros([1, 4, 8, 8], 'f16'))).rejects.toThrow(/backward ops take f32 tensors, got z f16/);
    }
  });
});
