// The timestep embedding against diffusers' own outputs in ../shared/golden/unet_mini (read in place):
// `temb.time_proj` is unet_mini's Timesteps(32, flip_sin_to_cos=True, freq_shift=0) and
// `temb.sd15_time_proj_320` SD-1.5's parameter-free Timesteps(320, True, 0), at 7 timesteps.
import { describe, it, expect, beforeAll } from 'vitest';
import { existsSync } from 'node:fs';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { timestepEmbedding, timestepEmbeddingCPU } from '../src/engine/ops/embedding.js';
import { readSafetensorsFile } from '../src/formats/safetensors-node.js';
import { getEngine, expectClose } from './helpers/engine.js';

const GOLDEN = new URL('../../shared/golden/unet_mini/golden.safetensors', import.meta.url).pathname;

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

describe('timestep embedding vs diffusers golden', () => {
  it('the golden file is present (../shared/golden)', () => {
    expect(existsSync(GOLDEN), `${GOLDEN} is missing`).toBe(true);
  });

  for (const [name, dim] of [['temb.time_proj', 32], ['temb.sd15_time_proj_320', 320]] as const) {
    it(`${name} on the GPU and on the CPU (atol 1e-4, the golden README's tolerance)`, async () => {
      const file = await readSafetensorsFile(GOLDEN);
      const timesteps = Array.from(file.getF32('temb.timesteps')); // F64 in the file: 0 .. 999 incl. 199.8
      const expected = file.getF32(name);
      expect(file.info(name).shape).toEqual([timesteps.length, dim]);
      const opts = { flipSinToCos: true, downscaleFreqShift: 0 };
      const t = engine.tensor(timesteps, [timesteps.length]);
      const { result } = await runProgram(engine, 'temb-golden', (rec) => timestepEmbedding(rec, t, dim, opts));
      expectClose(await result.read(), expected, { atol: 1e-4, rtol: 0 }, `${name} (GPU)`);
      expectClose(timestepEmbeddingCPU(timesteps, dim, opts), expected, { atol: 1e-4, rtol: 0 }, `${name} (CPU)`);
    });
  }
});
