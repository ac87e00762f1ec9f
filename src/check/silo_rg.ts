// Golden case `silo_rg`: SILO's Readout-Guidance operator (resize + AggregationNetwork) built from the
// case's config.json, run on the 12 readout features input.readout_hidden_XX and input.sigma_emb, and
// checked on `output` and the `debug.*` intermediates (first channels of resized features and of the
// aggregate, the sigma map, the mixing softmax). In f32 it also checks the VJP of sum(input.vjp_cotangent *
// output) with respect to each readout feature (vjp_readout_hidden_XX) under the manifest's relative-L2 rule.
// A cond_inpaint network (random-box inpainting) takes the case's input.cond_inpaint mask [B, 1, 64, 64] in
// both passes; a case whose config and stored inputs disagree on it is refused.

import { runProgram } from '../engine/recorder.js';
import type { Tensor } from '../engine/tensor.js';
import { AggregationNetwork } from '../models/silo/readout.js';
import { aggregationVjp } from '../models/silo/readout-vjp.js';
import { aggregationConfig, type AggregationNetworkConfig } from '../models/silo/config.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import type { CaseRunner } from './case.js';
import type { CheckItem, Tolerance } from './compare.js';
import { readJson, type CaseFiles } from './files.js';
import { assertCompared, caseError, enforceContract, expectSameConfig, isInputName } from './contract.js';
import { buildDisposable, caseFileName, goldenInput, manifestTolerance, readCase, SILO_F16_TOLERANCE } from './silo_cnn.js';

/** The first `c` channels of an NCHW array of `shape`. */
function firstChannels(data: Float32Array, shape: readonly number[], c: number): Float32Array {
  const [n, ch] = [shape[0]!, shape[1]!];
  const inner = shape.slice(2).reduce((a, b) => a * b, 1);
  const out = new Float32Array(n * c * inner);
  for (let b = 0; b < n; b++) out.set(data.subarray(b * ch * inner, (b * ch + c) * inner), b * c * inner);
  return out;
}

/** The manifest's gradient rule (relative L2 error, with a fraction of elements allowed over atol). */
function gradTolerance(manifest: Record<string, unknown>, key: string): Tolerance {
  const all = manifest['suggested_tolerance'] as Record<string, Record<string, number>> | undefined;
  const t = all?.[key];
  if (!t || t['rel_l2'] === undefined) throw new Error(`manifest of case ${String(manifest['case'])} has no rel_l2 suggested_tolerance for "${key}"`);
  return { relL2: t['rel_l2'], atolRelativeToMaxAbs: t['atol_relative_to_max_abs'] ?? 0, maxFractionOverAtol: t['max_fraction_over_atol'] ?? 0 };
}

const hidden = (i: number) => `input.readout_hidden_${String(i).padStart(2, '0')}`;

/** The manifest's own copy of the constructor arguments and its readout description must match the case. */
function checkReadoutChoices(files: CaseFiles, manifest: Record<string, unknown>, json: Record<string, unknown>, config: AggregationNetworkConfig, golden: SafetensorsFile): void {
  expectSameConfig(files, 'config', manifest['config'], caseFileName(manifest, 'config'), json);
  const readout = (manifest['readout'] ?? {}) as Record<string, unknown>;
  const latent = readout['latent_dim'];
  if (latent !== undefined && latent !== config.latentSize) {
    throw caseError(files, 'manifest.json readout.latent_dim', `${JSON.stringify(latent)}: features are resized to ${config.latentSize} (the network's LayerNorm([1, ${config.latentSize}, ${config.latentSize}]))`);
  }
  const hw = readout['feature_hw'];
  if (hw !== undefined) {
    if (!Array.isArray(hw)) throw caseError(files, 'manifest.json readout.feature_hw', 'must be a list of [h, w]');
    hw.forEach((want, i) => {
      const shape = golden.has(hidden(i)) ? golden.info(hidden(i)).shape.slice(2) : null;
      if (JSON.stringify(shape) !== JSON.stringify(want)) {
        throw caseError(files, `manifest.json readout.feature_hw[${i}]`, `${JSON.stringify(want)}, but ${hidden(i)} is ${shape ? JSON.stringify(shape) : 'missing'}`);
      }
    });
  }
}

export const runSiloRg: CaseRunner = async (engine, files, manifest, opts) => {
  const dtype = opts.dtype ?? 'f32';
  const json = await readJson<Record<string, unknown>>(files, caseFileName(manifest, 'config'));
  // Keys starting with "_" are annotations, not constructor arguments.
  const config = aggregationConfig(Object.fromEntries(Object.entries(json).filter(([k]) => !k.startsWith('_'))));
  const { weights, golden } = await readCase(files, manifest);
  const groups = config.featureDims.length * config.saveTimestep.length;
  const index = (n: string) => Number(/(\d+)$/.exec(n)![1]);
  enforceContract(files, manifest, golden, {
    runner: 'silo_rg',
    files: ['weights', 'golden', 'config'],
    tensors: [
      (n: string) => /^input\.readout_hidden_\d\d$/.test(n) && index(n) < groups,
      'input.sigma_emb',
      'input.vjp_cotangent',
      'input.cond_inpaint',
      'output',
      (n: string) => /^vjp_readout_hidden_\d\d$/.test(n) && index(n) < groups,
      (n: string) => /^debug\.resized_\d\d$/.test(n) && index(n) < groups,
      'debug.sigma_map',
      'debug.aggregated',
      'debug.mixing_softmax',
    ],
    choices: ['config', 'readout'],
    described: ['sigma_emb', 'architecture', 'feature_width_reduction'],
    weightSeeds: ['weights', 'constructor_manual_seed'],
  });
  checkReadoutChoices(files, manifest, json, config, golden);
  // Inputs the network's options call for, and none it would ignore.
  const need = (name: string, wanted: boolean, why: string) => {
    if (wanted && !golden.has(name)) throw caseError(files, `golden tensor "${name}"`, `missing: ${why}`);
    if (!wanted && golden.has(name)) throw caseError(files, `golden tensor "${name}"`, `stored, but the network does not take it (${why})`);
  };
  need('input.sigma_emb', config.sigmaCondition, `config sigma_condition = ${config.sigmaCondition}`);
  need('input.cond_inpaint', config.condInpaint, `config cond_inpaint = ${config.condInpaint}`);
  const hasVjps = golden.names().some((n) => n.startsWith('vjp_readout_hidden_'));
  need('input.vjp_cotangent', hasVjps, hasVjps ? 'the case stores vjp_readout_hidden_XX' : 'the case stores no vjp_readout_hidden_XX');
  opts.log?.(`silo_rg: AggregationNetwork(feature_dims=[${config.featureDims.join(', ')}], projection_dim=${config.projectionDim}), ${dtype}`);
  const { model, dispose } = buildDisposable(engine, weights, dtype, (w) => new AggregationNetwork(w, config));
  const inputs: Tensor[] = [];
  try {
    const features = Array.from({ length: model.groups }, (_, i) => goldenInput(engine, golden, hidden(i), dtype));
    inputs.push(...features);
    const sigmaEmb = config.sigmaCondition ? goldenInput(engine, golden, 'input.sigma_emb', dtype) : undefined;
    if (sigmaEmb) inputs.push(sigmaEmb);
    const mask = config.condInpaint ? goldenInput(engine, golden, 'input.cond_inpaint', dtype) : undefined;
    if (mask) inputs.push(mask);
    const { result } = await runProgram(engine, 'silo_rg', (rec) => model.forwardWithDebug(rec, features, sigmaEmb, mask));
    const f16 = dtype === 'f16' ? SILO_F16_TOLERANCE.silo_rg : undefined;
    const items: CheckItem[] = [];
    const push = async (name: string, t: Tensor | Float32Array, tolKey: string, channels?: number) => {
      const data = t instanceof Float32Array ? t : await t.read();
      const actual = channels === undefined || t instanceof Float32Array ? data : firstChannels(data, t.shape, channels);
      items.push({ name, actual, expected: golden.getF32(name), tol: manifestTolerance(manifest, tolKey, f16) });
    };
    await push('output', result.output, 'output');
    if (result.sigmaMap) await push('debug.sigma_map', result.sigmaMap, 'debug.*');
    for (const name of golden.names()) {
      const m = /^debug\.resized_(\d+)$/.exec(name);
      if (m) await push(name, result.resized[Number(m[1])]!, 'debug.*', golden.info(name).shape[1]);
    }
    await push('debug.aggregated', result.aggregated, 'debug.*', golden.info('debug.aggregated').shape[1]);
    // The mixing softmax is a load-time constant of the model (folded into the block outputs' scale).
    await push('debug.mixing_softmax', model.mixing, 'debug.*');
    for (const t of [result.output, result.sigmaMap, result.aggregated, ...result.resized]) t?.dispose();
    // The backward ops are f32 only; golden VJPs are checked in f32 runs.
    if (dtype === 'f32' && golden.names().includes('input.vjp_cotangent')) {
      const cot = goldenInput(engine, golden, 'input.vjp_cotangent', 'f32');
      inputs.push(cot);
      const { result: vjp } = await runProgram(engine, 'silo_rg_vjp', (rec) => aggregationVjp(rec, model, features, sigmaEmb, cot, mask));
      const tol = gradTolerance(manifest, 'vjp_readout_hidden_XX');
      vjp.output.dispose();
      for (const [i, g] of vjp.gradFeatures.entries()) {
        const name = `vjp_readout_hidden_${String(i).padStart(2, '0')}`;
        items.push({ name, actual: await g.read(), expected: golden.getF32(name), tol });
        g.dispose();
      }
    }
    if (dtype !== 'f32' && hasVjps) opts.log?.('silo_rg: vjp_readout_hidden_XX not checked (the backward ops are f32 only)');
    assertCompared(files, golden, items, isInputName, (n) => dtype !== 'f32' && n.startsWith('vjp_'));
    return items;
  } finally {
    for (const t of inputs) t.dispose();
    dispose();
  }
};
