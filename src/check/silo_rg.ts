// Golden case `silo_rg`: SILO's Readout-Guidance operator (resize + AggregationNetwork) built from the
// case's config.json, run on the 12 readout features input.readout_hidden_XX and input.sigma_emb, and
// checked on `output` and the `debug.*` intermediates (first channels of resized features and of the
// aggregate, the sigma map, the mixing softmax). In f32 it also checks the VJP of sum(input.vjp_cotangent *
// output) with respect to each readout feature (vjp_readout_hidden_XX) under the manifest's relative-L2 rule.

import { runProgram } from '../engine/recorder.js';
import type { Tensor } from '../engine/tensor.js';
import { AggregationNetwork } from '../models/silo/readout.js';
import { aggregationVjp } from '../models/silo/readout-vjp.js';
import { aggregationConfig } from '../models/silo/config.js';
import type { CaseRunner } from './case.js';
import type { CheckItem, Tolerance } from './compare.js';
import { readJson } from './files.js';
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

export const runSiloRg: CaseRunner = async (engine, files, manifest, opts) => {
  const dtype = opts.dtype ?? 'f32';
  const json = await readJson<Record<string, unknown>>(files, caseFileName(manifest, 'config'));
  // Keys starting with "_" are annotations, not constructor arguments.
  const config = aggregationConfig(Object.fromEntries(Object.entries(json).filter(([k]) => !k.startsWith('_'))));
  const { weights, golden } = await readCase(files, manifest);
  opts.log?.(`silo_rg: AggregationNetwork(feature_dims=[${config.featureDims.join(', ')}], projection_dim=${config.projectionDim}), ${dtype}`);
  const { model, dispose } = buildDisposable(engine, weights, dtype, (w) => new AggregationNetwork(w, config));
  const inputs: Tensor[] = [];
  try {
    const features = Array.from({ length: model.groups }, (_, i) => goldenInput(engine, golden, `input.readout_hidden_${String(i).padStart(2, '0')}`, dtype));
    inputs.push(...features);
    const sigmaEmb = config.sigmaCondition ? goldenInput(engine, golden, 'input.sigma_emb', dtype) : undefined;
    if (sigmaEmb) inputs.push(sigmaEmb);
    const { result } = await runProgram(engine, 'silo_rg', (rec) => model.forwardWithDebug(rec, features, sigmaEmb));
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
      const { result: vjp } = await runProgram(engine, 'silo_rg_vjp', (rec) => aggregationVjp(rec, model, features, sigmaEmb, cot));
      const tol = gradTolerance(manifest, 'vjp_readout_hidden_XX');
      vjp.output.dispose();
      for (const [i, g] of vjp.gradFeatures.entries()) {
        const name = `vjp_readout_hidden_${String(i).padStart(2, '0')}`;
        items.push({ name, actual: await g.read(), expected: golden.getF32(name), tol });
        g.dispose();
      }
    }
    return items;
  } finally {
    for (const t of inputs) t.dispose();
    dispose();
  }
};
