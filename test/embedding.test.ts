import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { timestepEmbedding, timestepEmbeddingCPU, type TimestepEmbeddingOptions } from '../src/engine/ops/embedding.js';
import { getEngine, expectClose, type Tolerance } from './helpers/engine.js';
import { timestepEmbeddingRef } from './ref/embedding.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// Against the f64 reference: 1e-4 absolute, the project's stated target. The op rounds like
// diffusers (f32 frequencies, f32 t * f products): at t = 999 one f32 ulp of the argument is 6e-5.
// With scale s the arguments, and so their f32 ulps, grow s-fold: the target scales with them.
const REF_TOL: Tolerance = { atol: 1e-4, rtol: 0 };
const refTol = (scale = 1): Tolerance => ({ atol: REF_TOL.atol * Math.max(1, Math.abs(scale)), rtol: 0 });
// Against timestepEmbeddingCPU (the same f32 arguments, f64 sin/cos): only the kernel's own range
// reduction and polynomials differ, ~1e-7.
const CPU_TOL: Tolerance = { atol: 1e-6, rtol: 0 };

const TIMESTEPS = [0, 1, 10, 199.8, 261, 500, 999];

describe('timestepEmbedding', () => {
  const settings: TimestepEmbeddingOptions[] = [
    { flipSinToCos: true, downscaleFreqShift: 0 }, // SD-1.5's Timesteps
    { flipSinToCos: false, downscaleFreqShift: 1 }, // get_timestep_embedding's defaults
    { flipSinToCos: false, downscaleFreqShift: 0 },
    { flipSinToCos: true, downscaleFreqShift: 1, maxPeriod: 500, scale: 2.5 },
  ];
  for (const dim of [32, 320, 321]) {
    for (const s of settings) {
      it(`dim ${dim} ${JSON.stringify(s)}`, async () => {
        const t = engine.tensor(TIMESTEPS, [TIMESTEPS.length]);
        const { result } = await runProgram(engine, 'temb', (rec) => timestepEmbedding(rec, t, dim, s));
        expect(result.shape).toEqual([TIMESTEPS.length, dim]);
        const out = await result.read();
        const t32 = Float32Array.from(TIMESTEPS); // the op sees f32 timesteps (199.8 is not exact)
        expectClose(out, timestepEmbeddingRef(t32, dim, s), refTol(s.scale), `GPU vs f64 dim ${dim}`);
        expectClose(out, timestepEmbeddingCPU(TIMESTEPS, dim, s), CPU_TOL, `GPU vs CPU dim ${dim}`);
        if (dim % 2) for (let n = 0; n < TIMESTEPS.length; n++) expect(out[n * dim + dim - 1]).toBe(0);
        t.dispose();
        result.dispose();
      });
    }
  }

  it('timestepEmbeddingCPU meets the same target', () => {
    for (const dim of [32, 320, 321]) {
      for (const flipSinToCos of [false, true]) {
        const s = { flipSinToCos, downscaleFreqShift: flipSinToCos ? 0 : 1 };
        expectClose(timestepEmbeddingCPU(TIMESTEPS, dim, s), timestepEmbeddingRef(Float32Array.from(TIMESTEPS), dim, s), REF_TOL, `CPU dim ${dim}`);
      }
    }
  });

  it('t = 0 gives sin 0 and cos 1 exactly; dim 1 is all padding', async () => {
    const t = engine.tensor([0, 0], [2]);
    const { result } = await runProgram(engine, 'temb0', (rec) => [
      timestepEmbedding(rec, t, 8, { flipSinToCos: true, downscaleFreqShift: 0 }),
      timestepEmbedding(rec, t, 1),
    ]);
    expect(Array.from(await result[0]!.read())).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]);
    expect(Array.from(await result[1]!.read())).toEqual([0, 0]);
  });

  it('negative and large arguments (|t * f| up to ~6000 rad)', async () => {
    const ts = [-999, -3.5, 2000, 6000];
    const s = { flipSinToCos: true, downscaleFreqShift: 0 };
    const t = engine.tensor(ts, [ts.length]);
    const { result } = await runProgram(engine, 'temb big', (rec) => timestepEmbedding(rec, t, 64, s));
    // The f32 argument's own rounding at 6000 rad is 2.4e-4, so compare with the f32-argument CPU path.
    expectClose(await result.read(), timestepEmbeddingCPU(ts, 64, s), { atol: 2e-6, rtol: 0 }, 'large args');
  });

  it('f16 output (needs shader-f16)', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 embedding: this adapter has no shader-f16');
      ctx.skip();
    }
    const t = engine.tensor(TIMESTEPS, [TIMESTEPS.length]);
    const s = { flipSinToCos: true, downscaleFreqShift: 0, dtype: 'f16' as const };
    const { result } = await runProgram(engine, 'temb f16', (rec) => timestepEmbedding(rec, t, 320, s));
    expect(result.dtype).toBe('f16');
    // One f16 rounding of values in [-1, 1]: 2^-11 relative.
    expectClose(await result.read(), timestepEmbeddingCPU(TIMESTEPS, 320, s), { atol: 5e-4, rtol: 0 }, 'f16');
  });

  it('rejects bad arguments with clear messages', async () => {
    const t2 = engine.zeros([2, 3]);
    const t = engine.zeros([3]);
    await expect(runProgram(engine, 'bad', (rec) => timestepEmbedding(rec, t2, 8))).rejects.toThrow(/timestepEmbedding: timesteps must be 1-D \[N\], got \[2, 3\]/);
    await expect(runProgram(engine, 'bad', (rec) => timestepEmbedding(rec, t, 0))).rejects.toThrow(/timestepEmbedding: dim must be a positive integer, got 0/);
    await expect(runProgram(engine, 'bad', (rec) => timestepEmbedding(rec, t, 3, { downscaleFreqShift: 1 }))).rejects.toThrow(
      /timestepEmbedding: dim 3 with downscaleFreqShift 1 divides by half - shift = 0/,
    );
    await expect(runProgram(engine, 'bad', (rec) => timestepEmbedding(rec, t, 5000))).rejects.toThrow(/timestepEmbedding: dim 5000 exceeds the supported 4097/);
    expect(() => timestepEmbeddingCPU([1], 2)).toThrow(/timestepEmbeddingCPU: dim 2 with downscaleFreqShift 1/);
    expect(engine.activeRecorder).toBeNull();
  });
});
