// Training SILO's CNN operator against the silo_cnn_train golden case (SILO's DegradationModel, L1 loss
// against the clamped target, torch.optim.Adam, all in float64): the output and loss at the initial
// weights, the gradient of every one of the 42 parameters (degradationModelGrads + regressionLoss), and
// the parameters and losses after 1 and 3 Adam steps (src/solvers/training/adam.ts), with the README's
// tolerances. Linear weights are compared in the state dict's [out, in] layout whatever the loader holds.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import type { SafetensorsFile } from '../../src/formats/safetensors.js';
import { transpose2d } from '../../src/formats/safetensors.js';
import { WeightLoader } from '../../src/models/weights.js';
import { DegradationModel } from '../../src/models/silo/cnn.js';
import { degradationModelGrads } from '../../src/models/silo/cnn-vjp.js';
import { inferDegradationConfig } from '../../src/models/silo/config.js';
import { regressionLoss } from '../../src/engine/ops/loss.js';
import { Adam } from '../../src/solvers/training/adam.js';
import { getEngine, expectClose } from '../helpers/engine.js';
import { goldenDir } from '../helpers/golden.js';

let engine: Engine;
let weights: SafetensorsFile;
let golden: SafetensorsFile;
let model: DegradationModel;
let loader: WeightLoader;
const LR = 1e-4;

beforeAll(async () => {
  engine = await getEngine();
  weights = await readSafetensorsFile(`${goldenDir('silo_cnn_train')}/weights.safetensors`);
  golden = await readSafetensorsFile(`${goldenDir('silo_cnn_train')}/golden.safetensors`);
  const config = inferDegradationConfig(weights);
  model = WeightLoader.build(engine, weights, {}, (w) => {
    loader = w;
    return new DegradationModel(w, config);
  });
});
afterAll(() => loader?.disposeAll());

const input = (name: string) => engine.tensor(golden.getF32(name), golden.info(name).shape, 'f32', name);

/** A parameter's values in the state dict's layout ([out, in] for Linear weights). */
async function stateValues(name: string, t: Tensor): Promise<Float32Array> {
  const v = await t.read();
  const lin = name.startsWith('sigma_condition_precondition.') && name.endsWith('.weight');
  return lin && model.sigmaPre0!.transposed ? transpose2d(v, t.shape[0]!, t.shape[1]!) : v;
}

/** rows 0::9 of a [C, 64, 64] LayerNorm affine, as the golden stores after_k of those. */
function rows9(v: Float32Array, c: number): Float32Array {
  const out = new Float32Array(c * 8 * 64);
  for (let ch = 0; ch < c; ch++) for (let r = 0; r < 8; r++) out.set(v.subarray((ch * 64 + 9 * r) * 64, (ch * 64 + 9 * r + 1) * 64), (ch * 8 + r) * 64);
  return out;
}

function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

describe('SILO CNN operator training (silo_cnn_train golden)', () => {
  it('the model lists the 42 parameters of the state dict, in its order', () => {
    const names = model.parameters().map((p) => p.name);
    expect(names.length).toBe(42);
    expect(new Set(names)).toEqual(new Set(weights.names()));
    expect(names.slice(0, 5)).toEqual(['sigma_condition_precondition.0.weight', 'sigma_condition_precondition.0.bias', 'sigma_condition_precondition.2.weight', 'sigma_condition_precondition.2.bias', 'encoder.0.weight']);
  });

  it('output, L1 loss against the clamped target, and the gradient of every parameter', async () => {
    const [z, target, emb] = [input('input.z'), input('input.target'), input('input.sigma_emb')];
    try {
      const { result } = await runProgram(engine, 'cnn grads', (rec) => {
        const output = model.forward(rec, z, emb);
        const l = regressionLoss(rec, output, target, { kind: 'l1', clamp: [-4, 4] });
        const g = degradationModelGrads(rec, model, z, emb, l.grad);
        return { output, loss: l.loss, params: g.params! };
      });
      expectClose(await result.output.read(), golden.getF32('output'), { atol: 1e-4, rtol: 1e-3 }, 'output');
      const loss = (await result.loss.read())[0]!;
      expect(Math.abs(loss - golden.getF32('loss')[0]!)).toBeLessThan(1e-6 + 1e-5 * Math.abs(golden.getF32('loss')[0]!));
      expect(Object.keys(result.params).sort()).toEqual(weights.names().slice().sort());
      for (const p of model.parameters()) {
        const got = await stateValues(p.name, result.params[p.name]!);
        const ref = golden.getF32(`grad.${p.name}`);
        expect(got.length, p.name).toBe(ref.length);
        const max = ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        const over = got.filter((v, i) => Math.abs(v - ref[i]!) > 1e-3 * max).length;
        expect(relL2(got, ref), `grad.${p.name} rel. L2`).toBeLessThanOrEqual(1e-2);
        expect(over, `grad.${p.name}: elements over 1e-3 max|ref|`).toBeLessThanOrEqual(0.05 * ref.length);
      }
      for (const t of [result.output, result.loss, ...Object.values(result.params)]) t.dispose();
    } finally {
      for (const t of [z, target, emb]) t.dispose();
    }
  });

  it('three Adam steps (lr 1e-4): the losses after 1, 2 and 3 updates and the parameters after 1 and 3', async () => {
    const [z, target, emb] = [input('input.z'), input('input.target'), input('input.sigma_emb')];
    // Train a copy: the shared model keeps the initial weights for the other tests.
    const config = inferDegradationConfig(weights);
    let copyLoader!: WeightLoader;
    const copy = WeightLoader.build(engine, weights, {}, (w) => {
      copyLoader = w;
      return new DegradationModel(w, config);
    });
    const params = copy.parameters();
    const w0 = new Map<string, Float32Array>();
    for (const p of params) w0.set(p.name, await stateValues(p.name, p.tensor));
    const opt = new Adam(engine, params, { lr: LR });
    try {
      const losses: number[] = [];
      for (let k = 1; k <= 3; k++) {
        const { result } = await runProgram(engine, `train step ${k}`, (rec) => {
          const output = copy.forward(rec, z, emb);
          const l = regressionLoss(rec, output, target, { kind: 'l1', clamp: [-4, 4] });
          const g = degradationModelGrads(rec, copy, z, emb, l.grad);
          opt.update(rec, params.map((p) => g.params![p.name]!));
          for (const t of Object.values(g.params!)) t.dispose();
          return l.loss;
        });
        losses.push((await result.read())[0]!);
        result.dispose();
        if (k === 1 || k === 3) {
          for (const p of params) {
            let got = await stateValues(p.name, p.tensor);
            let start = w0.get(p.name)!;
            const ref = golden.getF32(`after_${k}.${p.name}`);
            if (ref.length !== got.length) {
              got = rows9(got, p.tensor.shape[0]!);
              start = rows9(start, p.tensor.shape[0]!);
            }
            const atol = k === 1 ? 1e-6 + 1e-3 * LR : 0.1 * 3 * LR;
            const far = got.filter((v, i) => Math.abs(v - ref[i]!) > atol).length;
            expect(far, `after_${k}.${p.name}: elements over ${atol}`).toBeLessThanOrEqual(Math.max(1, Math.ceil(0.01 * ref.length)));
            const worst = got.reduce((m, v, i) => Math.max(m, Math.abs(v - ref[i]!)), 0);
            expect(worst, `after_${k}.${p.name}: worst element`).toBeLessThanOrEqual(2 * k * LR * 1.01 + 1e-6);
            const upd = got.map((v, i) => v - start[i]!);
            const refUpd = ref.map((v, i) => v - start[i]!);
            expect(relL2(upd, refUpd), `after_${k}.${p.name}: update rel. L2`).toBeLessThanOrEqual(0.1);
          }
        }
      }
      const { result: last } = await runProgram(engine, 'loss after 3 steps', (rec) => regressionLoss(rec, copy.forward(rec, z, emb), target, { clamp: [-4, 4] }).loss);
      losses.push((await last.read())[0]!);
      last.dispose();
      // losses[0] is the initial loss; losses[k] the loss after k updates (loss_k).
      for (const [i, name] of ['loss', 'loss_1', 'loss_2', 'loss_3'].entries()) {
        const ref = golden.getF32(name)[0]!;
        expect(Math.abs(losses[i]! - ref), name).toBeLessThan(1e-6 + 1e-5 * Math.abs(ref));
      }
      expect(losses[2]!).toBeLessThan(losses[0]!);
    } finally {
      opt.dispose();
      copyLoader.disposeAll();
      for (const t of [z, target, emb]) t.dispose();
    }
  });
});
