// Golden case runner for `unet_mini`-format folders: a diffusers UNet2DConditionModel folder
// (config.json + diffusion_pytorch_model.safetensors) and golden.safetensors with the inputs
// (input.sample, input.timestep, input.encoder_hidden_states), `eps`, the SILO readout features
// `readout_hidden_XX`, `temb.time_embedding` at `temb.timesteps`, and `debug.*` module outputs.
// In f32 also `vjp_sample` = d/d sample of sum(input.vjp_cotangent * eps) (the backward ops are f32 only).
// `temb.time_proj` is the UNet's own sinusoid at temb.timesteps, `temb.sd15_time_proj_320` SD-1.5's
// parameter-free 320-channel one with the same flip/shift.

import type { Engine } from '../engine/device.js';
import { runProgram } from '../engine/recorder.js';
import type { Tensor } from '../engine/tensor.js';
import { WeightLoader } from '../models/weights.js';
import { parseUNetConfig } from '../models/unet/config.js';
import { UNet2DConditionModel } from '../models/unet/unet.js';
import { sampleVjp } from '../models/unet/vjp.js';
import type { CaseRunner, CaseOptions } from './case.js';
import type { CheckItem, Tolerance } from './compare.js';
import { readJson, readSafetensors, type CaseFiles } from './files.js';
import { assertCompared, caseError, enforceContract, expectSameConfig, isInputName } from './contract.js';
import { Timesteps } from '../models/unet/embeddings.js';

/**
 * f16 weights and activations: the golden is the exact f32 model, and f16 rounding (2^-11 relative per
 * stored value) compounds through ~40 layers, so f16 runs are held to a bound relative to the tensor's
 * largest value instead (measured on unet_mini with lavapipe: eps and readouts within 0.26 % of their max|ref|).
 */
export const UNET_F16_TOLERANCE: Tolerance = { atolRelativeToMaxAbs: 1e-2, rtol: 1e-2 };

function tolerance(manifest: Record<string, unknown>, key: string, dtype: CaseOptions['dtype']): Tolerance {
  if (dtype === 'f16') return UNET_F16_TOLERANCE;
  const all = (manifest['suggested_tolerance'] ?? {}) as Record<string, { atol?: number; rtol?: number }>;
  const t = all[key];
  if (!t) throw new Error(`unet case manifest has no suggested_tolerance["${key}"]`);
  return { atol: t.atol ?? 0, rtol: t.rtol ?? 0 };
}

/**
 * vjp_sample: the golden README's rule, atol = 1e-3 x max|ref| (a gradient of arbitrary scale; the
 * manifest's note says its atol is to be scaled by max|ref|) with the manifest's rtol.
 */
function vjpTolerance(manifest: Record<string, unknown>): Tolerance {
  const t = ((manifest['suggested_tolerance'] ?? {}) as Record<string, { rtol?: number }>)['vjp_sample'];
  return { atolRelativeToMaxAbs: 1e-3, rtol: t?.rtol ?? 2e-3 };
}

/** Builds the folder's UNet; the caller disposes the returned loader's tensors with `disposeAll()`. */
export async function loadUNetFolder(
  engine: Engine,
  files: CaseFiles,
  names: { config?: string; weights?: string } = {},
  dtype: 'f32' | 'f16' = 'f32',
  activations: 'f32' | 'f16' = dtype,
): Promise<{ model: UNet2DConditionModel; loader: WeightLoader }> {
  const configName = names.config ?? 'config.json';
  const config = parseUNetConfig(await readJson(files, configName), `${files.location}/${configName}`);
  const weights = await readSafetensors(files, names.weights ?? 'diffusion_pytorch_model.safetensors');
  // build(): unexpected tensors and NaN/Inf weights are refused as for every other model.
  let loader!: WeightLoader;
  const model = WeightLoader.build(engine, weights, { dtype, activations }, (w) => ((loader = w), new UNet2DConditionModel(w, config)));
  try {
    await WeightLoader.verify(engine);
  } catch (e) {
    loader.disposeAll();
    throw e;
  }
  return { model, loader };
}

export const runUNetCase: CaseRunner = async (engine, files, manifest, opts) => {
  const dtype = opts.dtype ?? 'f32';
  const mf = (manifest['files'] ?? {}) as Record<string, string>;
  const { model, loader } = await loadUNetFolder(engine, files, { config: mf['config'], weights: mf['weights'] }, dtype);
  const golden = await readSafetensors(files, mf['golden'] ?? 'golden.safetensors');
  try {
    const configName = mf['config'] ?? 'config.json';
    expectSameConfig(files, 'config', manifest['config'], configName, await readJson(files, configName));
    enforceContract(files, manifest, golden, {
      runner: 'unet',
    files: ['config', 'weights', 'golden'],
      tensors: [
        'input.sample', 'input.timestep', 'input.encoder_hidden_states', 'input.vjp_cotangent', 'eps', 'vjp_sample',
        /^readout_hidden_\d\d$/, 'temb.timesteps', 'temb.time_proj', 'temb.time_embedding', 'temb.sd15_time_proj_320', /^debug\./,
      ],
      choices: ['config', 'input_seeds'],
      described: ['conditioning_sensitivity', 'weights'],
      weightSeeds: ['seed'],
    });
    if (golden.has('vjp_sample') !== golden.has('input.vjp_cotangent')) {
      throw caseError(files, 'golden tensor "input.vjp_cotangent"', golden.has('vjp_sample') ? 'missing: the case stores vjp_sample' : 'stored without vjp_sample');
    }
  } catch (e) {
    loader.disposeAll();
    throw e;
  }
  const inputs: Tensor[] = [];
  const outputs: Tensor[] = [];
  try {
    const upload = (name: string) => {
      const t = engine.tensor(golden.getF32(name), golden.info(name).shape, dtype, name);
      inputs.push(t);
      return t;
    };
    const sample = upload('input.sample');
    const context = upload('input.encoder_hidden_states');
    const timestep = golden.getIntegers('input.timestep');
    // temb.timesteps are float64 in the file; diffusers casts timesteps to float32 before the sinusoid.
    const tembSteps = golden.has('temb.timesteps') ? Array.from(golden.getF32('temb.timesteps')) : null;
    const sd15Proj = new Timesteps(320, model.config.flipSinToCos, model.config.freqShift);
    const t0 = performance.now();
    const { result } = await runProgram(engine, 'unet-case', (rec) => ({
      ...model.forward(rec, sample, timestep.length === 1 ? timestep[0]! : timestep, context, { readout: true, debug: true }),
      temb: tembSteps ? model.timeEmbedding(rec, tembSteps) : undefined,
      timeProj: tembSteps ? model.timeProj.forward(rec, tembSteps, 'f32') : undefined,
      sd15Proj: tembSteps ? sd15Proj.forward(rec, tembSteps, 'f32') : undefined,
    }));
    for (const t of [result.eps, result.temb, result.timeProj, result.sd15Proj, ...result.readout!, ...Object.values(result.debug!)]) if (t) outputs.push(t);
    const items: CheckItem[] = [];
    const add = async (name: string, t: Tensor, tolKey: string) => {
      items.push({ name, actual: await t.read(), expected: golden.getF32(name), tol: tolerance(manifest, tolKey, dtype) });
    };
    await add('eps', result.eps, 'eps');
    opts.log?.(`unet forward (${dtype}, ${model.config.blockOutChannels.join('/')} channels) ran in ${(performance.now() - t0).toFixed(0)} ms`);
    const goldenReadouts = golden.names().filter((n) => n.startsWith('readout_hidden_')).length;
    if (goldenReadouts !== result.readout!.length) {
      throw new Error(`${files.location}: the golden has ${goldenReadouts} readout_hidden_XX tensors, the model produced ${result.readout!.length}`);
    }
    for (const [i, t] of result.readout!.entries()) await add(`readout_hidden_${String(i).padStart(2, '0')}`, t, 'readout_hidden_xx');
    if (result.temb && golden.has('temb.time_embedding')) await add('temb.time_embedding', result.temb, 'temb.time_embedding');
    // The sinusoids are computed on the host in f64 and uploaded in f32 whatever the run's dtype.
    const projTol = (key: string) => ({ atol: ((manifest['suggested_tolerance'] ?? {}) as Record<string, { atol?: number }>)[key]?.atol ?? 1e-4, rtol: 0 });
    if (result.timeProj && golden.has('temb.time_proj')) items.push({ name: 'temb.time_proj', actual: await result.timeProj.read(), expected: golden.getF32('temb.time_proj'), tol: projTol('temb.time_proj') });
    if (result.sd15Proj && golden.has('temb.sd15_time_proj_320')) items.push({ name: 'temb.sd15_time_proj_320', actual: await result.sd15Proj.read(), expected: golden.getF32('temb.sd15_time_proj_320'), tol: projTol('temb.time_proj') });
    for (const [k, t] of Object.entries(result.debug!)) {
      if (golden.has(`debug.${k}`)) await add(`debug.${k}`, t, 'debug.*');
    }
    if (dtype === 'f32' && golden.has('vjp_sample')) {
      const cotangent = upload('input.vjp_cotangent');
      const t1 = performance.now();
      const { result: grad } = await runProgram(engine, 'unet-vjp', (rec) =>
        sampleVjp(rec, model, sample, timestep.length === 1 ? timestep[0]! : timestep, context, cotangent),
      );
      outputs.push(grad);
      items.push({ name: 'vjp_sample', actual: await grad.read(), expected: golden.getF32('vjp_sample'), tol: vjpTolerance(manifest) });
      opts.log?.(`unet sample VJP ran in ${(performance.now() - t1).toFixed(0)} ms`);
    } else if (golden.has('vjp_sample')) opts.log?.('unet: vjp_sample not checked (the backward ops are f32 only)');
    // Inputs that are read: temb.timesteps feeds the temb.* items. Every other tensor must have been compared.
    assertCompared(files, golden, items, (n) => isInputName(n) || n === 'temb.timesteps', (n) => dtype !== 'f32' && n === 'vjp_sample');
    return items;
  } finally {
    for (const t of [...inputs, ...outputs]) t.dispose();
    loader.disposeAll();
  }
};
