// Learning-rate schedules (diffusers' get_*_schedule_with_warmup as Adam's lr(t)) against their formulas,
// and gradient accumulation: two micro-batches of one sample summed with gradScale 1/2 give the
// gradient of the whole batch of two (SILO's CNN operator on the silo_cnn_train batch).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import { WeightLoader } from '../../src/models/weights.js';
import { DegradationModel } from '../../src/models/silo/cnn.js';
import { degradationModelGrads } from '../../src/models/silo/cnn-vjp.js';
import { inferDegradationConfig } from '../../src/models/silo/config.js';
import { regressionLoss } from '../../src/engine/ops/loss.js';
import { learningRateSchedule } from '../../src/solvers/training/schedule.js';
import { GradAccumulator } from '../../src/solvers/training/accumulate.js';
import { getEngine } from '../helpers/engine.js';
import { goldenDir } from '../helpers/golden.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

describe('learning-rate schedules', () => {
  it('constant with warm-up, linear and cosine decay, step by step', () => {
    const c = learningRateSchedule({ kind: 'constant', lr: 1e-3, warmup: 4 });
    expect([1, 2, 3, 4, 5, 100].map(c)).toEqual([0, 0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3]);
    const lin = learningRateSchedule({ kind: 'linear', lr: 2e-4, warmup: 2, total: 10 });
    expect(lin(1)).toBe(0);
    expect(lin(2)).toBeCloseTo(1e-4, 15);
    expect(lin(3)).toBeCloseTo(2e-4, 15); // 8 of 8 decay steps left
    expect(lin(7)).toBeCloseTo(2e-4 * (4 / 8), 15);
    expect(lin(11)).toBe(0);
    expect(lin(50)).toBe(0);
    const cos = learningRateSchedule({ kind: 'cosine', lr: 1e-4, total: 9 });
    for (const t of [1, 3, 5, 9, 10]) expect(cos(t)).toBeCloseTo(1e-4 * 0.5 * (1 + Math.cos((Math.PI * (t - 1)) / 9)), 15);
    expect(cos(5)).toBeLessThan(cos(3));
  });

  it('refuses settings it cannot follow', () => {
    expect(() => learningRateSchedule({ kind: 'cosine', lr: 1e-4 })).toThrow(/cosine decay needs total steps/);
    expect(() => learningRateSchedule({ kind: 'linear', lr: 1e-4, warmup: 10, total: 10 })).toThrow(/above the warm-up 10/);
    expect(() => learningRateSchedule({ kind: 'constant', lr: -1 })).toThrow(/learning rate -1/);
    expect(() => learningRateSchedule({ kind: 'step' as never, lr: 1 })).toThrow(/unknown kind step/);
  });
});

describe('gradient accumulation', () => {
  it('two micro-batches of one sample, summed and scaled by 1/2, give the batch-of-two gradient', async () => {
    const weights = await readSafetensorsFile(`${goldenDir('silo_cnn_train')}/weights.safetensors`);
    const golden = await readSafetensorsFile(`${goldenDir('silo_cnn_train')}/golden.safetensors`);
    let loader!: WeightLoader;
    const model = WeightLoader.build(engine, weights, {}, (w) => {
      loader = w;
      return new DegradationModel(w, inferDegradationConfig(weights));
    });
    const names = model.parameters().map((p) => p.name);
    const upload = (n: string, lo: number, count: number) => {
      const shape = golden.info(n).shape;
      const per = shape.slice(1).reduce((a, b) => a * b, 1);
      return engine.tensor(golden.getF32(n).subarray(lo * per, (lo + count) * per), [count, ...shape.slice(1)], 'f32', n);
    };
    const batch = (lo: number, count: number) => ['input.z', 'input.target', 'input.sigma_emb'].map((n) => upload(n, lo, count)) as [Tensor, Tensor, Tensor];
    const grads = (rec: Parameters<typeof regressionLoss>[0], [z, t, e]: [Tensor, Tensor, Tensor]) =>
      degradationModelGrads(rec, model, z, e, regressionLoss(rec, model.forward(rec, z, e), t, { clamp: [-4, 4] }).grad).params!;
    const inputs = [batch(0, 2), batch(0, 1), batch(1, 1)];
    try {
      const { result: full } = await runProgram(engine, 'full batch', (rec) => grads(rec, inputs[0]!));
      const acc = new GradAccumulator(names);
      for (const b of inputs.slice(1)) await runProgram(engine, 'micro-batch', (rec) => acc.add(rec, grads(rec, b)));
      expect(acc.count).toBe(2);
      const { grads: sums, gradScale } = acc.take();
      expect(gradScale).toBe(0.5);
      for (const [i, n] of names.entries()) {
        const want = await full[n]!.read();
        const got = (await sums[i]!.read()).map((v) => v * gradScale);
        let num = 0;
        let den = 0;
        for (let j = 0; j < want.length; j++) {
          num += (got[j]! - want[j]!) ** 2;
          den += want[j]! ** 2;
        }
        expect(Math.sqrt(num / den), n).toBeLessThan(1e-4);
      }
      expect(() => acc.take()).toThrow(/nothing accumulated/);
      for (const t of [...Object.values(full), ...sums]) t.dispose();
    } finally {
      for (const t of inputs.flat()) t.dispose();
      loader.disposeAll();
    }
  });
});
