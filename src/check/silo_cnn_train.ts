// Golden case `silo_cnn_train`: training steps of SILO's CNN operator on one fixed batch, as SILO's
// trainer runs them: output = DegradationModel(z, sigma_emb), the mean L1 (or MSE) loss against the
// clamped target, the gradient of every parameter, then torch.optim.Adam steps. Checked: the output and
// loss at the initial weights, every grad.<param>, the loss after each step (loss_k) and the parameters
// after the stored steps (after_k.<param>, LayerNorm affines possibly on a subset of rows). The latent
// channel count and batch come from the weights and inputs, so another case of the same format runs too.

import type { Engine } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import { runProgram } from '../engine/recorder.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import { DegradationModel } from '../models/silo/cnn.js';
import { degradationModelTrainingPass } from '../models/silo/cnn-vjp.js';
import { inferDegradationConfig } from '../models/silo/config.js';
import { regressionLoss, type LossKind } from '../engine/ops/loss.js';
import { Adam } from '../solvers/training/adam.js';
import { stateShape, toState } from '../solvers/training/checkpoint.js';
import type { CaseFiles } from './files.js';
import type { CaseRunner } from './case.js';
import type { CheckItem, Tolerance } from './compare.js';
import { buildDisposable, goldenInput, manifestTolerance, readCase } from './silo_cnn.js';
import { caseError, enforceContract } from './contract.js';

type Json = Record<string, unknown>;

interface TrainSetup {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  loss: LossKind;
  clamp?: [number, number];
  /** Rows kept of a [C, H, W] parameter stored as [C, rows, W]. */
  rows?: number[];
}

/** The training choices, read from the manifest; anything it cannot reproduce is refused by name. */
function readSetup(files: CaseFiles, manifest: Json): TrainSetup {
  const training = manifest['training'] as Json | undefined;
  const adam = training?.['adam'] as Json | undefined;
  if (!adam) throw caseError(files, 'manifest.json training.adam', 'missing: the optimizer settings are needed to reproduce the steps');
  const num = (k: string, v: unknown): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw caseError(files, `manifest.json training.adam.${k}`, `not a number: ${JSON.stringify(v)}`);
    return v;
  };
  for (const flag of ['amsgrad', 'maximize']) {
    if (adam[flag] === true) throw caseError(files, `manifest.json training.adam.${flag}`, 'not supported (torch.optim.Adam without it only)');
  }
  for (const k of Object.keys(adam)) {
    if (!['lr', 'betas', 'eps', 'weight_decay', 'amsgrad', 'maximize'].includes(k)) throw caseError(files, `manifest.json training.adam.${k}`, 'an optimizer setting the runner does not understand');
  }
  const betas = adam['betas'];
  if (!Array.isArray(betas) || betas.length !== 2) throw caseError(files, 'manifest.json training.adam.betas', `must be [beta1, beta2], got ${JSON.stringify(betas)}`);
  const lossText = String(training!['loss'] ?? '');
  const loss: LossKind | null = /\bl1_loss\b/.test(lossText) ? 'l1' : /\bmse_loss\b/.test(lossText) ? 'mse' : null;
  if (!loss) throw caseError(files, 'manifest.json training.loss', `names neither F.l1_loss nor F.mse_loss: ${JSON.stringify(lossText)}`);
  const c = /clamp\(\s*(-?[\d.eE+-]+)\s*,\s*(-?[\d.eE+-]+)\s*\)/.exec(lossText);
  const setup: TrainSetup = {
    lr: num('lr', adam['lr']),
    betas: [num('betas[0]', betas[0]), num('betas[1]', betas[1])],
    eps: num('eps', adam['eps'] ?? 1e-8),
    weightDecay: num('weight_decay', adam['weight_decay'] ?? 0),
    loss,
    clamp: c ? [Number(c[1]), Number(c[2])] : undefined,
  };
  const subset = manifest['stored_subset'] as Json | undefined;
  if (subset) {
    const rows = subset['rows'];
    if (!Array.isArray(rows) || rows.some((r) => !Number.isInteger(r) || r < 0)) throw caseError(files, 'manifest.json stored_subset.rows', `must be row indices, got ${JSON.stringify(rows)}`);
    setup.rows = rows as number[];
  }
  return setup;
}

/** The stored rows of a [C, H, W] parameter when the golden keeps only those; the values unchanged otherwise. */
function storedPart(files: CaseFiles, golden: SafetensorsFile, key: string, shape: readonly number[], v: Float32Array, rows?: number[]): Float32Array {
  const stored = golden.info(key).shape;
  if (stored.length === shape.length && stored.every((d, i) => d === shape[i])) return v;
  const [c, h, w] = shape as [number, number, number];
  if (!rows || shape.length !== 3 || stored.length !== 3 || stored[0] !== c || stored[1] !== rows.length || stored[2] !== w || rows.some((r) => r >= h)) {
    throw caseError(files, `golden tensor "${key}"`, `shape [${stored.join(', ')}] is neither the parameter's [${shape.join(', ')}] nor its stored_subset rows`);
  }
  const out = new Float32Array(c * rows.length * w);
  for (let ch = 0; ch < c; ch++) rows.forEach((r, j) => out.set(v.subarray((ch * h + r) * w, (ch * h + r + 1) * w), (ch * rows.length + j) * w));
  return out;
}

function afterTolerance(manifest: Json, k: number, base: Float32Array): Tolerance {
  const t = (manifest['suggested_tolerance'] as Record<string, Record<string, number>> | undefined)?.[`after_${k}.*`];
  if (!t || t['atol'] === undefined) throw new Error(`manifest of case ${String(manifest['case'])} has no suggested_tolerance for "after_${k}.*"`);
  const tol: Tolerance = { atol: t['atol'], rtol: t['rtol'] ?? 0, maxFractionOverAtol: t['max_fraction_over_atol'] ?? 0 };
  if (t['max_abs'] !== undefined) tol.maxAbs = t['max_abs'];
  if (t['update_rel_l2'] !== undefined) tol.update = { base, relL2: t['update_rel_l2'] };
  return tol;
}

function gradTolerance(manifest: Json): Tolerance {
  const t = (manifest['suggested_tolerance'] as Record<string, Record<string, number>> | undefined)?.['grad.*'];
  if (!t || t['rel_l2'] === undefined) throw new Error(`manifest of case ${String(manifest['case'])} has no suggested_tolerance for "grad.*"`);
  return { relL2: t['rel_l2'], atolRelativeToMaxAbs: t['atol_relative_to_max_abs'] ?? 0, maxFractionOverAtol: t['max_fraction_over_atol'] ?? 0 };
}

export const runSiloCnnTrain: CaseRunner = async (engine: Engine, files, manifest, opts) => {
  if ((opts.dtype ?? 'f32') !== 'f32') throw caseError(files, '--dtype', 'training keeps f32 master weights and gradients: run this case in f32');
  const { weights, golden } = await readCase(files, manifest);
  const config = inferDegradationConfig(weights);
  const names = weights.names();
  enforceContract(files, manifest, golden, {
    runner: 'silo_cnn_train',
    files: ['weights', 'golden'],
    tensors: ['input.z', 'input.target', 'input.sigma_emb', 'output', 'loss', /^loss_\d+$/, /^grad\./, /^after_\d+\./],
    choices: ['training', 'stored_subset', 'trainable_parameters'],
    described: ['reference_checks', 'inputs', 'latent_channels', 'after_k_rule'],
    // input.sigma_emb_row drew the one row that input.sigma_emb repeats (stored): provenance, not an input.
    weightSeeds: ['constructor_manual_seed', 'weights', 'input.sigma_emb_row'],
  });
  const setup = readSetup(files, manifest);
  const trainable = (manifest['trainable_parameters'] as Json | undefined)?.['names'];
  if (trainable !== undefined && (!Array.isArray(trainable) || JSON.stringify([...trainable].sort()) !== JSON.stringify([...names].sort()))) {
    throw caseError(files, 'manifest.json trainable_parameters.names', 'must list every tensor of the weights (SILO trains model.parameters())');
  }
  if (config.sigmaCondition !== golden.has('input.sigma_emb')) {
    throw caseError(files, 'golden tensor "input.sigma_emb"', config.sigmaCondition ? 'missing: the weights are sigma-conditioned' : 'stored, but the weights have no sigma conditioning to take it');
  }
  const steps = Math.max(0, ...golden.names().flatMap((n) => [/^loss_(\d+)$/.exec(n), /^after_(\d+)\./.exec(n)]).filter((m) => m).map((m) => Number(m![1])));
  opts.log?.(`silo_cnn_train: DegradationModel(latent_dim=${config.latentDim}, sigma_condition=${config.sigmaCondition}), ${setup.loss} loss${setup.clamp ? ` against the target clamped to [${setup.clamp.join(', ')}]` : ''}, Adam lr ${setup.lr}, ${steps} step(s)`);

  const { model, dispose } = buildDisposable(engine, weights, 'f32', (w) => new DegradationModel(w, config));
  const z = goldenInput(engine, golden, 'input.z', 'f32');
  const target = goldenInput(engine, golden, 'input.target', 'f32');
  const emb = config.sigmaCondition ? goldenInput(engine, golden, 'input.sigma_emb', 'f32') : undefined;
  const params = model.parameters();
  const opt = new Adam(engine, params, { lr: setup.lr, betas: setup.betas, eps: setup.eps, weightDecay: setup.weightDecay });
  const items: CheckItem[] = [];
  try {
    const w0 = new Map<string, Float32Array>();
    for (const p of params) w0.set(p.name, toState(p, await p.tensor.read()));
    const lossTol = manifestTolerance(manifest, 'loss');
    for (let k = 0; k <= steps; k++) {
      const update = k < steps;
      const { result } = await runProgram(engine, `silo_cnn_train step ${k + 1}`, (rec) => {
        // The trainer's path: one forward that keeps its tape for the gradients.
        const pass = degradationModelTrainingPass(rec, model, z, emb);
        const output = pass.output;
        const l = regressionLoss(rec, output, target, { kind: setup.loss, clamp: setup.clamp });
        if (!update) return { output, loss: l.loss, grads: {} as Record<string, Tensor> };
        const g = pass.grads(l.grad);
        // The initial gradients are compared: copies, since the step below reads them in the same program.
        opt.update(rec, params.map((p) => g[p.name]!));
        return { output, loss: l.loss, grads: k === 0 ? g : ({} as Record<string, Tensor>) };
      });
      const lossName = k === 0 ? 'loss' : `loss_${k}`;
      if (golden.has(lossName)) items.push({ name: lossName, actual: await result.loss.read(), expected: golden.getF32(lossName), tol: lossTol });
      if (k === 0) {
        items.push({ name: 'output', actual: await result.output.read(), expected: golden.getF32('output'), tol: manifestTolerance(manifest, 'output') });
        const gt = gradTolerance(manifest);
        for (const p of params) {
          const key = `grad.${p.name}`;
          if (golden.has(key)) items.push({ name: key, actual: toState(p, await result.grads[p.name]!.read()), expected: golden.getF32(key), tol: gt });
        }
      }
      for (const t of [result.output, result.loss, ...Object.values(result.grads)]) t.dispose();
      const after = k + 1;
      if (update && golden.names().some((n) => n.startsWith(`after_${after}.`))) {
        for (const p of params) {
          const key = `after_${after}.${p.name}`;
          if (!golden.has(key)) continue;
          const shape = stateShape(p);
          const actual = storedPart(files, golden, key, shape, toState(p, await p.tensor.read()), setup.rows);
          const base = storedPart(files, golden, key, shape, w0.get(p.name)!, setup.rows);
          items.push({ name: key, actual, expected: golden.getF32(key), tol: afterTolerance(manifest, after, base) });
        }
      }
    }
    return items;
  } finally {
    opt.dispose();
    for (const t of [z, target, emb]) t?.dispose();
    dispose();
  }
};
