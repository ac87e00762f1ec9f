// Golden cases `silo_step` and `dps_step`: one guided sampling step each, recorded as one program through
// the samplers in src/solvers/samplers, with the models the manifest points at (../unet_mini,
// ../silo_cnn, ../vae_mini) and SD-1.5's DDPM scheduler at the manifest's set_timesteps(N) (SILO: 999); each
// step's t_index, t and the scheduler values the manifest states are checked against it. Checked: eps, x0_hat,
// the unguided prev_sample, the measurement estimate, the residual norm, the guidance gradient and
// z_prev. An f16 run is reverse mode's mixed precision: f16 weights (UNet, operator, VAE), f32 activations
// and gradients, every quantity checked against MIXED_STEP_TOLERANCE.

import type { Engine } from '../engine/device.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import type { Tensor } from '../engine/tensor.js';
import { runProgram } from '../engine/recorder.js';
import { WeightLoader } from '../models/weights.js';
import { DegradationModel } from '../models/silo/cnn.js';
import { inferDegradationConfig } from '../models/silo/config.js';
import { AutoencoderKL } from '../models/vae/autoencoder.js';
import { parseVaeConfig } from '../models/vae/config.js';
import { DDPMScheduler } from '../solvers/schedulers/ddpm.js';
import { SD15_SCHEDULER_CONFIG } from '../solvers/schedulers/config.js';
import { AvgPoolOperator } from '../solvers/degradations/avgpool.js';
import { siloStep } from '../solvers/samplers/silo.js';
import type { GuidedStep } from '../solvers/samplers/guided.js';
import { unetEpsModel } from '../solvers/samplers/eps-model.js';
import { latentDpsStep } from '../solvers/samplers/pixel.js';
import type { DiffusionPrior } from '../solvers/samplers/denoiser.js';
import type { CaseRunner } from './case.js';
import type { CheckItem, Tolerance } from './compare.js';
import { readJson, readSafetensors, relativeFile, subFolder, type CaseFiles } from './files.js';
import { loadUNetFolder } from './unet.js';
import { caseFileName, goldenInput } from './silo_cnn.js';
import { assertCompared, caseError, checkSeeds, enforceContract, expectStated, isInputName, scheduledSteps, type TensorPattern } from './contract.js';
import { SiloError } from '../engine/errors.js';

type Json = Record<string, unknown>;

function tolerances(manifest: Json): { forward: Tolerance; norm: Tolerance; grad: Tolerance; zPrev: Tolerance } {
  const t = (manifest['suggested_tolerance'] ?? {}) as Record<string, Record<string, number>>;
  const key = Object.keys(t).find((k) => k.startsWith('eps/'));
  const need = (v: Record<string, number> | undefined, what: string) => {
    if (!v) throw new SiloError(`manifest of case ${String(manifest['case'])} has no suggested_tolerance for ${what}`);
    return v;
  };
  const f = need(key ? t[key] : undefined, 'eps/x0_hat/...');
  const n = need(t['residual_norm'], 'residual_norm');
  const g = need(t['grad'], 'grad');
  const z = need(t['z_prev'], 'z_prev');
  return {
    forward: { atol: f['atol'] ?? 0, rtol: f['rtol'] ?? 0 },
    norm: { atol: 0, rtol: n['rtol'] ?? 0 },
    grad: { atolRelativeToMaxAbs: g['atol_relative_to_max_abs']! },
    zPrev: { atol: z['atol'] ?? 0, rtol: z['rtol'] ?? 0 },
  };
}

/**
 * Mixed precision against the f32 golden step. A step with f16 weights equals, bit for bit, the f32 step
 * on the f16-rounded weights (test/solvers/mixed-precision-step.test.ts), so these bound the effect of
 * rounding the weights (2^-11 relative) alone. Measured on lavapipe: every forward quantity (eps, x0,
 * estimates, the residual norm, z_prev) within 1.9e-3 of its max|ref|; the guidance gradient J^T r / |r|
 * within relL2 5.2e-2 and 0.14 max|ref| on silo_step (1.4e-3 on dps_step). The gradient is the
 * sensitive one: r is nearly orthogonal to J's range on the tiny random models, so |J^T r| is small
 * against |J| |r| and the weights' rounding in J is amplified (~40x here). Bounds: ~3x / ~2x the measured.
 */
export const MIXED_STEP_TOLERANCE: { forward: Tolerance; grad: Tolerance } = {
  forward: { atolRelativeToMaxAbs: 5e-3 },
  grad: { atolRelativeToMaxAbs: 0.3, relL2: 0.1 },
};

function upload(engine: Engine, golden: SafetensorsFile, name: string, owned: Tensor[]): Tensor {
  // Inputs are activations: f32 in either mode.
  const t = goldenInput(engine, golden, name, 'f32');
  owned.push(t);
  return t;
}

const weightsNote = (dtype: 'f32' | 'f16') => (dtype === 'f16' ? 'f16 weights, f32 activations' : 'f32');

/** Reads the step's tensors back, with each golden tensor and tolerance. */
async function stepItems(
  step: GuidedStep,
  golden: SafetensorsFile,
  prefix: string,
  names: { estimate: string },
  tol: ReturnType<typeof tolerances>,
  dtype: 'f32' | 'f16',
): Promise<CheckItem[]> {
  const mixed = dtype === 'f16' ? MIXED_STEP_TOLERANCE.forward : undefined;
  const fwd = mixed ?? tol.forward;
  const pairs: [string, Tensor, Tolerance][] = [
    ['eps', step.eps, fwd],
    ['x0_hat', step.x0, fwd],
    ['prev_sample_unguided', step.prev, mixed ?? tol.zPrev],
    [names.estimate, step.estimate, fwd],
  ];
  if (step.extras['decoded']) pairs.push(['decoded_x0_hat', step.extras['decoded'], fwd]);
  const grad = dtype === 'f16' ? MIXED_STEP_TOLERANCE.grad : tol.grad;
  pairs.push(['residual_norm', step.residualNorm, mixed ?? tol.norm], ['grad', step.grad, grad], ['z_prev', step.zPrev, mixed ?? tol.zPrev]);
  const items: CheckItem[] = [];
  for (const [name, t, tl] of pairs) items.push({ name: `${prefix}${name}`, actual: await t.read(), expected: golden.getF32(`${prefix}${name}`), tol: tl });
  return items;
}

function disposeStep(step: GuidedStep): void {
  for (const t of [step.zPrev, step.eps, step.x0, step.prev, step.estimate, step.residualNorm, step.grad, ...Object.values(step.extras)]) t?.dispose();
}

/** The DDPM scheduler of the step cases: SD-1.5's config at the manifest's set_timesteps(N). */
function stepScheduler(files: CaseFiles, manifest: Json): DDPMScheduler {
  const s = new DDPMScheduler({ ...SD15_SCHEDULER_CONFIG });
  s.setTimesteps(scheduledSteps(files, manifest));
  return s;
}

/**
 * A step's t_index, t and the scheduler values the manifest states must be what the case's scheduler and
 * golden t give: a case sampled with another schedule is refused instead of run with the wrong one.
 */
function checkStepChoices(files: CaseFiles, s: Json, where: string, sched: DDPMScheduler, t: number): void {
  const tIndex = s['t_index'];
  if (tIndex !== undefined) {
    if (!Number.isInteger(tIndex) || sched.timesteps[tIndex as number] !== t) {
      const at = sched.timesteps.indexOf(t);
      const n = sched.timesteps.length;
      throw caseError(files, `manifest.json ${where}t_index`, `${JSON.stringify(tIndex)}, but timestep ${t} is ${at < 0 ? `not on the set_timesteps(${n}) schedule` : `at index ${at} of set_timesteps(${n})`}`);
    }
  }
  expectStated(files, `${where}t`, s['t'], t);
  expectStated(files, `${where}alpha_prod_t`, s['alpha_prod_t'], sched.alphasCumprod[t]!, 1e-6);
  const prevT = sched.previousTimestep(t);
  expectStated(files, `${where}alpha_prod_t_prev`, s['alpha_prod_t_prev'], prevT >= 0 ? sched.alphasCumprod[prevT]! : 1, 1e-6);
  expectStated(files, `${where}ddpm_variance`, s['ddpm_variance'], sched.getVariance(t), 1e-5);
}

async function loadPrior(engine: Engine, files: CaseFiles, manifest: Json, golden: SafetensorsFile, dtype: 'f32' | 'f16', owned: Tensor[]) {
  const mf = (manifest['files'] ?? {}) as Record<string, string>;
  if (!mf['unet_dir']) throw caseError(files, 'manifest.json files.unet_dir', 'missing');
  const scheduler = stepScheduler(files, manifest);
  const { model, loader } = await loadUNetFolder(engine, subFolder(files, mf['unet_dir']), {}, dtype, 'f32');
  try {
    const prior: DiffusionPrior = { model: unetEpsModel(model), scheduler, text: upload(engine, golden, 'input.prompt_embeds', owned) };
    return { prior, scheduler, loader };
  } catch (e) {
    loader.disposeAll();
    throw e;
  }
}

/** Keys of a silo_step `steps[]` entry: what the runner reads, and statistics it does not need. */
const STEP_KEYS = new Set(['prefix', 't_index', 't', 'eta', 'alpha_prod_t', 'alpha_prod_t_prev', 'ddpm_variance', 'seeds', 'residual_norm', 'grad_max_abs', 'fraction_of_grad_entries_clipped']);
const STEP_OUTPUTS = ['eps', 'x0_hat', 'prev_sample_unguided', 'residual_norm', 'grad', 'z_prev'];
const STEP_INPUTS = ['z_t', 't', 'ddpm_noise'];
const escape = (p: string) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function siloSteps(files: CaseFiles, manifest: Json): Json[] {
  const steps = manifest['steps'];
  if (!Array.isArray(steps) || steps.length === 0) throw caseError(files, 'manifest.json "steps"', 'must list at least one step');
  steps.forEach((s: Json, i) => {
    if (!s || typeof s !== 'object' || typeof s['prefix'] !== 'string') throw caseError(files, `manifest.json steps[${i}].prefix`, 'missing');
    for (const k of Object.keys(s)) {
      if (!STEP_KEYS.has(k)) throw caseError(files, `manifest.json steps[${i}].${k}`, `a choice the silo_step runner does not understand (it reads: ${[...STEP_KEYS].join(', ')})`);
    }
  });
  return steps as Json[];
}

export const runSiloStep: CaseRunner = async (engine, files, manifest, opts) => {
  const dtype = opts.dtype ?? 'f32';
  const tol = tolerances(manifest);
  const golden = await readSafetensors(files, caseFileName(manifest, 'golden'));
  const allSteps = siloSteps(files, manifest);
  const prefixes = allSteps.map((s) => escape(String(s['prefix'])));
  const steps = opts.maxSteps !== undefined ? allSteps.slice(0, Math.max(1, opts.maxSteps)) : allSteps;
  const skippedPrefixes = allSteps.slice(steps.length).map((s) => String(s['prefix']));
  if (skippedPrefixes.length) opts.log?.(`silo_step: steps ${skippedPrefixes.join(', ')} not run (maxSteps ${opts.maxSteps}): their tensors are not compared`);
  const stepTensors: TensorPattern[] = [
    new RegExp(`^(${prefixes.join('|')})(input\\.(${[...STEP_INPUTS, 'w'].join('|')})|${[...STEP_OUTPUTS, 'w_hat'].join('|')})$`),
  ];
  enforceContract(files, manifest, golden, {
    runner: 'silo_step',
    files: ['golden', 'unet_dir', 'operator_weights'],
    tensors: ['input.prompt_embeds', 'input.sigma_emb', ...stepTensors],
    choices: ['scheduler', 'steps'],
    described: ['models'],
  });
  allSteps.forEach((s, i) => checkSeeds(files, golden, `steps[${i}].seeds`, s['seeds'], String(s['prefix']), []));
  const op = relativeFile(files, caseFileName(manifest, 'operator_weights'));
  const opWeights = await readSafetensors(op.folder, op.name);
  const config = inferDegradationConfig(opWeights);
  if (config.sigmaCondition !== golden.has('input.sigma_emb')) {
    throw caseError(files, 'golden tensor "input.sigma_emb"', config.sigmaCondition ? 'missing: the operator is sigma-conditioned' : 'stored, but the operator has no sigma conditioning to take it');
  }
  const owned: Tensor[] = [];
  const { prior, scheduler, loader } = await loadPrior(engine, files, manifest, golden, dtype, owned);
  let opLoader: WeightLoader | undefined;
  try {
    const model = WeightLoader.build(engine, opWeights, { dtype, activations: 'f32' }, (w) => {
      opLoader = w;
      return new DegradationModel(w, config);
    });
    const sigmaEmb = config.sigmaCondition ? upload(engine, golden, 'input.sigma_emb', owned) : undefined;
    const items: CheckItem[] = [];
    for (const [i, s] of steps.entries()) {
      const prefix = String(s['prefix']);
      const t = golden.getIntegers(`${prefix}input.t`)[0]!;
      checkStepChoices(files, s, `steps[${i}].`, scheduler, t);
      const eta = s['eta'];
      if (typeof eta !== 'number' || !Number.isFinite(eta)) throw caseError(files, `manifest.json steps[${i}].eta`, `must be a number, got ${JSON.stringify(eta)}`);
      opts.log?.(`${prefix} t=${t} eta=${eta}: unet ${weightsNote(dtype)}, operator DegradationModel(sigma_condition=${config.sigmaCondition})`);
      const zt = upload(engine, golden, `${prefix}input.z_t`, owned);
      const w = upload(engine, golden, `${prefix}input.w`, owned);
      const noise = upload(engine, golden, `${prefix}input.ddpm_noise`, owned);
      const { result, report } = await runProgram(engine, 'silo_step', (rec) => siloStep(rec, prior, { kind: 'cnn', model, sigmaEmb }, w, zt, t, noise, { eta }));
      opts.log?.(`${prefix} one program: ${report.dispatches} dispatches, peak ${(report.peakLiveBytes / 2 ** 20).toFixed(1)} MiB`);
      items.push(...(await stepItems(result, golden, prefix, { estimate: 'w_hat' }, tol, dtype)));
      disposeStep(result);
    }
    const skipped = (n: string) => skippedPrefixes.some((p) => n.startsWith(p));
    assertCompared(files, golden, items, isInputName, skipped);
    return items;
  } finally {
    for (const t of owned) t.dispose();
    loader.disposeAll();
    opLoader?.disposeAll();
  }
};

/** The measurement operator a dps_step case names: `avg_pool2d(image, k)` (the only one it stores data for). */
function dpsPoolFactor(files: CaseFiles, manifest: Json): number {
  const text = manifest['measurement'];
  const m = typeof text === 'string' ? /^input\.y = avg_pool2d\(image, (\d+)\)( \+ [0-9.]+\*N\(0,1\))?/.exec(text) : null;
  if (!m) throw caseError(files, 'manifest.json "measurement"', `${JSON.stringify(text)} is not understood (supported: "input.y = avg_pool2d(image, k) [+ s*N(0,1)] ...")`);
  return Number(m[1]);
}

export const runDpsStep: CaseRunner = async (engine, files, manifest, opts) => {
  const dtype = opts.dtype ?? 'f32';
  const tol = tolerances(manifest);
  const golden = await readSafetensors(files, caseFileName(manifest, 'golden'));
  enforceContract(files, manifest, golden, {
    runner: 'dps_step',
    files: ['golden', 'unet_dir', 'vae_dir'],
    tensors: [
      ...['prompt_embeds', 'y', 'z_t', 't', 'ddpm_noise'].map((n) => `input.${n}`),
      ...STEP_OUTPUTS, 'decoded_x0_hat', 'y_hat',
    ],
    choices: ['scheduler', 'measurement', 't_index', 't', 'scale', 'latent_hw', 'alpha_prod_t', 'seeds'],
    described: ['models', 'residual_norm', 'grad_max_abs'],
  });
  const mf = (manifest['files'] ?? {}) as Record<string, string>;
  if (!mf['vae_dir']) throw caseError(files, 'manifest.json files.vae_dir', 'missing');
  const factor = dpsPoolFactor(files, manifest);
  const scale = manifest['scale'] ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw caseError(files, 'manifest.json "scale"', `must be a number, got ${JSON.stringify(scale)}`);
  const ztShape = golden.info('input.z_t').shape;
  const hw = manifest['latent_hw'];
  if (hw !== undefined && JSON.stringify(hw) !== JSON.stringify(ztShape.slice(2))) {
    throw caseError(files, 'manifest.json "latent_hw"', `${JSON.stringify(hw)}, but input.z_t is ${JSON.stringify(ztShape)}`);
  }
  const owned: Tensor[] = [];
  const { prior, scheduler, loader } = await loadPrior(engine, files, manifest, golden, dtype, owned);
  const vaeFiles = subFolder(files, mf['vae_dir']);
  let vaeLoader: WeightLoader | undefined;
  const A = new AvgPoolOperator(engine, factor);
  try {
    const cfg = parseVaeConfig(await readJson<Json>(vaeFiles, 'config.json'));
    const vaeWeights = await readSafetensors(vaeFiles, 'diffusion_pytorch_model.safetensors');
    const vae = WeightLoader.build(engine, vaeWeights, { dtype, activations: 'f32' }, (w) => {
      vaeLoader = w;
      return new AutoencoderKL(w, cfg);
    });
    const t = golden.getIntegers('input.t')[0]!;
    checkStepChoices(files, manifest, '', scheduler, t);
    const yShape = golden.info('input.y').shape;
    const want = ztShape.slice(2).map((d) => (d * vae.downFactor) / factor);
    if (JSON.stringify(yShape.slice(2)) !== JSON.stringify(want)) {
      throw caseError(files, 'golden tensor "input.y"', `${JSON.stringify(yShape)} is not avg_pool2d(decode(z_t), ${factor}) of a ${JSON.stringify(ztShape)} latent`);
    }
    opts.log?.(`dps_step t=${t} scale=${scale}: unet + vae decoder ${weightsNote(dtype)}, A = avg_pool2d(${factor}), set_timesteps(${scheduler.timesteps.length})`);
    const zt = upload(engine, golden, 'input.z_t', owned);
    const y = upload(engine, golden, 'input.y', owned);
    const noise = upload(engine, golden, 'input.ddpm_noise', owned);
    const { result, report } = await runProgram(engine, 'dps_step', (rec) => latentDpsStep(rec, prior, vae, A, y, zt, t, noise, { scale }));
    opts.log?.(`one program: ${report.dispatches} dispatches, peak ${(report.peakLiveBytes / 2 ** 20).toFixed(1)} MiB`);
    const items = await stepItems(result, golden, '', { estimate: 'y_hat' }, tol, dtype);
    disposeStep(result);
    assertCompared(files, golden, items, isInputName);
    return items;
  } finally {
    for (const t of owned) t.dispose();
    A.dispose();
    loader.disposeAll();
    vaeLoader?.disposeAll();
  }
};
