// unetTapeBytes (src/models/unet/tape-bytes.ts) predicts, from the architecture alone, the bytes of the
// stage inputs and resnet internals a differentiable UNet forward keeps; 'auto' mode decides on it. Checked here against the
// tapes readoutForward really records on the golden unet_mini, for batch 1 and a CFG-like batch 2 on a
// non-square latent.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { loadUNetFolder } from '../../src/check/unet.js';
import type { WeightLoader } from '../../src/models/weights.js';
import type { UNet2DConditionModel } from '../../src/models/unet/unet.js';
import { readoutForward } from '../../src/models/unet/readout-vjp.js';
import { unetTapeBytes } from '../../src/models/unet/tape-bytes.js';
import { getEngine, randomData } from '../helpers/engine.js';
import { goldenFiles } from '../helpers/golden.js';

let engine: Engine;
let unet: UNet2DConditionModel;
let loader: WeightLoader;

beforeAll(async () => {
  engine = await getEngine();
  ({ model: unet, loader } = await loadUNetFolder(engine, goldenFiles('unet_mini')));
});
afterAll(() => loader?.disposeAll());

describe('unetTapeBytes', () => {
  for (const shape of [
    [1, 4, 16, 16],
    [2, 4, 8, 24],
  ]) {
    it(`matches the stage inputs readoutForward keeps for a sample ${shape.join('x')}`, async () => {
      const [n, , h, w] = shape as [number, number, number, number];
      const sample = engine.tensor(randomData(n * 4 * h * w, 7), shape, 'f32', 'sample');
      const context = engine.tensor(randomData(n * 77 * 48, 8), [n, 77, 48], 'f32', 'context');
      try {
        const { result: pass } = await runProgram(engine, 'tape', (rec) => readoutForward(rec, unet, sample, 500, context));
        const tape = pass.saved!.tape;
        const kept = [...tape.inputs, ...tape.kept].reduce((s, t) => s + (t?.byteLength ?? 0), 0);
        expect(tape.inputs.length, 'one input per stage').toBe(tape.stages.length);
        const resnets = tape.stages.filter((st) => st.name.includes('.resnets.')).length;
        expect(tape.kept.filter((t) => t).length, 'one kept internal per resnet').toBe(resnets);
        pass.discard();
        pass.eps.dispose();
        for (const f of pass.features) f.dispose();
        expect(unetTapeBytes(unet, shape)).toBe(kept);
      } finally {
        sample.dispose();
        context.dispose();
      }
    }, 120_000);
  }

  it('rejects shapes the UNet cannot run', () => {
    expect(() => unetTapeBytes(unet, [1, 4, 16])).toThrow(/must be \[N, C, H, W\]/);
    expect(() => unetTapeBytes(unet, [1, 4, 16, 15])).toThrow(/multiples of/);
  });
});
