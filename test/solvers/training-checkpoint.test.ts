// Training checkpoints (src/solvers/training/checkpoint.ts) on SILO's CNN operator with the
// silo_cnn_train case's weights and batch: a run checkpointed after one Adam step and resumed from the
// file continues bit for bit like the uninterrupted run (parameters and both moments), the file loads as
// the operator itself (state-dict names and layout), an export holds the parameters only, and damaged
// checkpoints are refused by name.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import { parseSafetensors, serializeSafetensors, type SafetensorsFile, type TensorSource } from '../../src/formats/safetensors.js';
import { WeightLoader } from '../../src/models/weights.js';
import { DegradationModel } from '../../src/models/silo/cnn.js';
import { degradationModelGrads } from '../../src/models/silo/cnn-vjp.js';
import { inferDegradationConfig } from '../../src/models/silo/config.js';
import { regressionLoss } from '../../src/engine/ops/loss.js';
import { Adam } from '../../src/solvers/training/adam.js';
import { CHECKPOINT_FORMAT, checkpointInfo, checkpointParameters, checkpointTensors, exportParameters, resumeOptimizer } from '../../src/solvers/training/checkpoint.js';
import { getEngine } from '../helpers/engine.js';
import { goldenDir } from '../helpers/golden.js';

let engine: Engine;
let weights: SafetensorsFile;
let golden: SafetensorsFile;
let inputs: Tensor[];
const loaders: WeightLoader[] = [];

beforeAll(async () => {
  engine = await getEngine();
  weights = await readSafetensorsFile(`${goldenDir('silo_cnn_train')}/weights.safetensors`);
  golden = await readSafetensorsFile(`${goldenDir('silo_cnn_train')}/golden.safetensors`);
  inputs = ['input.z', 'input.target', 'input.sigma_emb'].map((n) => engine.tensor(golden.getF32(n), golden.info(n).shape, 'f32', n));
});
afterAll(() => {
  for (const l of loaders) l.disposeAll();
  for (const t of inputs ?? []) t.dispose();
});

function build(source: TensorSource): DegradationModel {
  return WeightLoader.build(engine, source, {}, (w) => {
    loaders.push(w);
    return new DegradationModel(w, inferDegradationConfig(weights));
  });
}

async function train(model: DegradationModel, opt: Adam, steps: number): Promise<void> {
  const [z, target, emb] = inputs as [Tensor, Tensor, Tensor];
  const params = model.parameters();
  for (let k = 0; k < steps; k++) {
    await runProgram(engine, 'train step', (rec) => {
      const l = regressionLoss(rec, model.forward(rec, z, emb), target, { clamp: [-4, 4] });
      const g = degradationModelGrads(rec, model, z, emb, l.grad).params!;
      opt.update(rec, params.map((p) => g[p.name]!));
    });
  }
}

const read = async (ts: readonly Tensor[]) => Promise.all(ts.map(async (t) => Array.from(await t.read())));

describe('training checkpoints', () => {
  it('resuming from a checkpoint continues exactly like the uninterrupted run', async () => {
    const a = build(weights);
    const optA = new Adam(engine, a.parameters(), { lr: 1e-3 });
    await train(a, optA, 1);
    const ckpt = await checkpointTensors(a.parameters(), optA, { task: 'test' });
    const bytes = serializeSafetensors(ckpt.tensors, ckpt.metadata);
    await train(a, optA, 2);

    const file = parseSafetensors(bytes, 'ckpt.safetensors');
    expect(checkpointInfo(file).step).toBe(1);
    expect(file.metadata).toMatchObject({ task: 'test', format: CHECKPOINT_FORMAT, step: '1' });
    expect(JSON.parse(file.metadata['optimizer']!)).toEqual({ lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, decoupled: false });
    const b = build(checkpointParameters(file));
    const optB = new Adam(engine, b.parameters(), { lr: 1e-3 });
    expect(resumeOptimizer(file, b.parameters(), optB)).toBe(1);
    await train(b, optB, 2);

    expect(optB.step).toBe(3);
    expect(await read(b.parameters().map((p) => p.tensor))).toEqual(await read(a.parameters().map((p) => p.tensor)));
    expect(await read(optB.m)).toEqual(await read(optA.m));
    expect(await read(optB.v)).toEqual(await read(optA.v));
    // The checkpoint moved every parameter away from the initial weights (a step was really taken).
    expect(Array.from(file.getF32('encoder.0.weight'))).not.toEqual(Array.from(weights.getF32('encoder.0.weight')));
    optA.dispose();
    optB.dispose();
  });

  it('an export holds the parameters alone, by state-dict name and layout, and loads strictly', async () => {
    const m = build(weights);
    const ex = await exportParameters(m.parameters(), { operator: 'cnn' });
    expect(Object.keys(ex.tensors).sort()).toEqual(weights.names().slice().sort());
    const file = parseSafetensors(serializeSafetensors(ex.tensors, ex.metadata), 'op.safetensors');
    for (const n of weights.names()) {
      expect(file.info(n).shape, n).toEqual(weights.info(n).shape);
      expect(Array.from(file.getF32(n)), n).toEqual(Array.from(weights.getF32(n)));
    }
    build(file); // strict: every tensor used, none missing
  });

  it('refuses damaged checkpoints, naming the file and the tensor', async () => {
    const m = build(weights);
    const opt = new Adam(engine, m.parameters(), { lr: 1e-3 });
    const ckpt = await checkpointTensors(m.parameters(), opt);
    const without = { ...ckpt.tensors };
    delete without['optimizer.exp_avg_sq.decoder.4.bias'];
    const missing = parseSafetensors(serializeSafetensors(without, ckpt.metadata), 'missing.safetensors');
    expect(() => resumeOptimizer(missing, m.parameters(), opt)).toThrow(/missing\.safetensors: missing tensor "optimizer\.exp_avg_sq\.decoder\.4\.bias"/);
    const badStep = parseSafetensors(serializeSafetensors(ckpt.tensors, { ...ckpt.metadata, step: '1.5' }), 'step.safetensors');
    expect(() => resumeOptimizer(badStep, m.parameters(), opt)).toThrow(/step\.safetensors: metadata step "1\.5" is not a step count/);
    expect(() => checkpointInfo(weights)).toThrow(/weights\.safetensors: not a training checkpoint/);
    const params = checkpointParameters(parseSafetensors(serializeSafetensors(ckpt.tensors, ckpt.metadata), 'c.safetensors'));
    expect(params.names().some((n) => n.startsWith('optimizer.'))).toBe(false);
    expect(() => params.getF32('optimizer.exp_avg.encoder.0.bias')).toThrow(/is optimizer state, not a parameter/);
    opt.dispose();
  });
});
