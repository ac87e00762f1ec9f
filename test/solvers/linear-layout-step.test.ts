// nn.Linear weights held as stored ([out, in]) or transposed once at load ([in, out], the default on CPU
// adapters, whose matmul would otherwise transpose every weight on every forward): the same kernels run
// on the same values, so a whole guided step (forward, VJP, update) must agree bit for bit, with fewer
// dispatches wherever matmul transposes a B it cannot read in place. The step runs on a 16x16 crop of the
// golden case's latents (real weights, the operator's per-position parameters cut to it): the comparison
// needs the same kernels on the same values, not the golden numbers, at 1/16 of the 64x64 step's cost.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { defaultMatmulVariant } from '../../src/engine/ops/matmul.js';
import { readSafetensors, subFolder } from '../../src/check/files.js';
import { defaultLinearLayout, type LinearLayout } from '../../src/models/weights.js';
import { getEngine } from '../helpers/engine.js';
import { goldenFiles } from '../helpers/golden.js';
import { goldenSiloStep0 } from '../helpers/silo-step.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

describe('Linear weight layouts', () => {
  it('a SILO step with Linear weights held [in, out] equals the step with them [out, in], bit for bit', async () => {
    const files = goldenFiles('silo_step');
    const weights = {
      unet: await readSafetensors(subFolder(files, '../unet_mini'), 'diffusion_pytorch_model.safetensors'),
      op: await readSafetensors(subFolder(files, '../silo_cnn'), 'weights.safetensors'),
    };
    const dispatches: Partial<Record<LinearLayout, number>> = {};
    const run = (layout: LinearLayout) => goldenSiloStep0(engine, weights, { dtype: 'f32', linearLayout: layout, crop: 16, onReport: (r) => (dispatches[layout] = r.dispatches) });
    const held = await run('in_out');
    const stored = await run('out_in');
    expect(Object.keys(held)).toEqual(['eps', 'x0_hat', 'w_hat', 'residual_norm', 'grad', 'z_prev']);
    expect(held['z_prev']).toHaveLength(4 * 16 * 16);
    expect(Math.max(...held['grad']!.map(Math.abs))).toBeGreaterThan(0); // a real guidance gradient, not zeros
    for (const k of Object.keys(stored)) {
      const a = held[k]!;
      const b = stored[k]!;
      const first = a.findIndex((v, i) => !Object.is(v, b[i]));
      expect(first, `${k}: element ${first} is ${a[first]} held [in, out], ${b[first]} held [out, in]`).toBe(-1);
    }
    console.log(`dispatches per step: [out, in] ${dispatches.out_in}, [in, out] ${dispatches.in_out}`);
    // matmul_nn4 reads only a row-major B: held [out, in], every forward transposes its weight first.
    if (defaultMatmulVariant(engine) === 'matmul_nn4') {
      expect(defaultLinearLayout(engine)).toBe('in_out');
      expect(dispatches.in_out!).toBeLessThan(dispatches.out_in!);
    } else {
      expect(defaultLinearLayout(engine)).toBe('out_in');
    }
  }, 900_000);
});
