// Golden case `silo_cnn`: SILO's DegradationModel on input.z / input.sigma_emb, checked on `output` and
// `debug.sigma_map`, and in f32 on `vjp_z` (the reverse pass, cnn-vjp.ts). The case folder has no config.json (SILO ships bare state dicts): the constructor
// arguments are read off the weights' shapes, as a user's checkpoint would be loaded.

import type { Engine } from '../engine/device.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import type { Tensor } from '../engine/tensor.js';
import { runProgram } from '../engine/recorder.js';
import { WeightLoader } from '../models/weights.js';
import { DegradationModel } from '../models/silo/cnn.js';
import { degradationModelVjp } from '../models/silo/cnn-vjp.js';
import { inferDegradationConfig } from '../models/silo/config.js';
import type { CaseRunner } from './case.js';
import type { CheckItem, Tolerance } from './compare.js';
import { readSafetensors, type CaseFiles } from './files.js';
import { assertCompared, caseError, enforceContract, isInputName } from './contract.js';

/**
 * With f16 storage every parameter and activation is rounded to 11 significant bits (2^-11 = 4.9e-4
 * relative) after each op. These bounds are ~3x the largest errors lavapipe's f16 runs of the cases
 * measured (silo_cnn output 3.2e-3 abs for values up to 2.2).
 */
export const SILO_F16_TOLERANCE: Record<'silo_cnn' | 'silo_rg', Tolerance> = {
  silo_cnn: { atol: 1e-2, rtol: 1e-2 },
  silo_rg: { atol: 1e-2, rtol: 1e-2 },
};

/** The manifest's suggested element-wise tolerance for `key`, widened to `f16` when the run stored f16. */
export function manifestTolerance(manifest: Record<string, unknown>, key: string, f16?: Tolerance): Tolerance {
  const all = manifest['suggested_tolerance'] as Record<string, { atol?: number; rtol?: number }> | undefined;
  const t = all?.[key];
  if (!t || t.atol === undefined) throw new Error(`manifest of case ${String(manifest['case'])} has no element-wise suggested_tolerance for "${key}"`);
  const base = { atol: t.atol, rtol: t.rtol ?? 0 };
  return f16 ? { atol: Math.max(base.atol, f16.atol ?? 0), rtol: Math.max(base.rtol, f16.rtol ?? 0) } : base;
}

export function caseFileName(manifest: Record<string, unknown>, kind: string): string {
  const files = manifest['files'] as Record<string, string> | undefined;
  const name = files?.[kind];
  if (!name) throw new Error(`manifest of case ${String(manifest['case'])} names no "${kind}" file`);
  return name;
}

/** Builds a model and returns it with a function that frees its parameters. */
export function buildDisposable<T>(engine: Engine, source: SafetensorsFile, dtype: 'f32' | 'f16', make: (w: WeightLoader) => T): { model: T; dispose: () => void } {
  let loader: WeightLoader | undefined;
  const model = WeightLoader.build(engine, source, { dtype }, (w) => {
    loader = w;
    return make(w);
  });
  return { model, dispose: () => loader!.disposeAll() };
}

/** Uploads golden tensor `name` in the run's storage dtype. */
export function goldenInput(engine: Engine, golden: SafetensorsFile, name: string, dtype: 'f32' | 'f16'): Tensor {
  return engine.tensor(golden.getF32(name), golden.info(name).shape, dtype, name);
}

export async function readCase(files: CaseFiles, manifest: Record<string, unknown>): Promise<{ weights: SafetensorsFile; golden: SafetensorsFile }> {
  const [weights, golden] = await Promise.all([
    readSafetensors(files, caseFileName(manifest, 'weights')),
    readSafetensors(files, caseFileName(manifest, 'golden')),
  ]);
  return { weights, golden };
}

/** The manifest's gradient tolerance for `key` ({atol_relative_to_max_abs}, optionally rel_l2 / max_fraction_over_atol). */
export function manifestGradTolerance(manifest: Record<string, unknown>, key: string): Tolerance {
  const all = manifest['suggested_tolerance'] as Record<string, Record<string, number>> | undefined;
  const t = all?.[key];
  if (!t || t['atol_relative_to_max_abs'] === undefined) throw new Error(`manifest of case ${String(manifest['case'])} has no atol_relative_to_max_abs suggested_tolerance for "${key}"`);
  const tol: Tolerance = { atolRelativeToMaxAbs: t['atol_relative_to_max_abs'] };
  if (t['rel_l2'] !== undefined) tol.relL2 = t['rel_l2'];
  if (t['max_fraction_over_atol'] !== undefined) tol.maxFractionOverAtol = t['max_fraction_over_atol'];
  return tol;
}

async function checkVjp(
  engine: Engine,
  model: DegradationModel,
  z: Tensor,
  sigmaEmb: Tensor | undefined,
  golden: SafetensorsFile,
  manifest: Record<string, unknown>,
): Promise<CheckItem> {
  const cotangent = goldenInput(engine, golden, 'input.vjp_cotangent', 'f32');
  try {
    const { result } = await runProgram(engine, 'silo_cnn_vjp', (rec) => degradationModelVjp(rec, model, z, sigmaEmb, cotangent));
    const actual = await result.read();
    result.dispose();
    return { name: 'vjp_z', actual, expected: golden.getF32('vjp_z'), tol: manifestGradTolerance(manifest, 'vjp_z') };
  } finally {
    cotangent.dispose();
  }
}

export const runSiloCnn: CaseRunner = async (engine, files, manifest, opts) => {
  const dtype = opts.dtype ?? 'f32';
  const { weights, golden } = await readCase(files, manifest);
  const config = inferDegradationConfig(weights);
  enforceContract(files, manifest, golden, {
    runner: 'silo_cnn',
    files: ['weights', 'golden'],
    tensors: ['input.z', 'input.sigma_emb', 'input.vjp_cotangent', 'output', 'vjp_z', 'debug.sigma_map'],
    choices: [],
    described: ['sigma_emb', 'architecture'],
  });
  // The weights decide whether the operator is sigma-conditioned; a stored sigma_emb it would not read is refused.
  if (config.sigmaCondition !== golden.has('input.sigma_emb')) {
    throw caseError(files, 'golden tensor "input.sigma_emb"', config.sigmaCondition ? 'missing: the weights are sigma-conditioned' : 'stored, but the weights have no sigma conditioning to take it');
  }
  if (golden.has('vjp_z') !== golden.has('input.vjp_cotangent')) {
    throw caseError(files, 'golden tensor "input.vjp_cotangent"', golden.has('vjp_z') ? 'missing: the case stores vjp_z' : 'stored without vjp_z');
  }
  opts.log?.(`silo_cnn: DegradationModel(latent_dim=${config.latentDim}, output_dim=${config.outputDim}, sigma_condition=${config.sigmaCondition}, layer_norm=True), ${dtype}`);
  const { model, dispose } = buildDisposable(engine, weights, dtype, (w) => new DegradationModel(w, config));
  const z = goldenInput(engine, golden, 'input.z', dtype);
  const sigmaEmb = config.sigmaCondition ? goldenInput(engine, golden, 'input.sigma_emb', dtype) : undefined;
  try {
    const { result } = await runProgram(engine, 'silo_cnn', (rec) => model.forwardWithDebug(rec, z, sigmaEmb));
    const f16 = dtype === 'f16' ? SILO_F16_TOLERANCE.silo_cnn : undefined;
    // The manifest gives no separate tolerance for the sigma map: it takes the output's.
    const tol = manifestTolerance(manifest, 'output', f16);
    const items: CheckItem[] = [{ name: 'output', actual: await result.output.read(), expected: golden.getF32('output'), tol }];
    if (result.sigmaMap && golden.has('debug.sigma_map')) items.push({ name: 'debug.sigma_map', actual: await result.sigmaMap.read(), expected: golden.getF32('debug.sigma_map'), tol });
    result.output.dispose();
    result.sigmaMap?.dispose();
    // The backward ops are f32 only: an f16 run checks the forward alone.
    if (dtype === 'f32' && golden.has('vjp_z')) items.push(await checkVjp(engine, model, z, sigmaEmb, golden, manifest));
    else if (golden.has('vjp_z')) opts.log?.('silo_cnn: vjp_z not checked (the backward ops are f32 only)');
    assertCompared(files, golden, items, isInputName, (n) => dtype !== 'f32' && n === 'vjp_z');
    return items;
  } finally {
    z.dispose();
    sigmaEmb?.dispose();
    dispose();
  }
};
