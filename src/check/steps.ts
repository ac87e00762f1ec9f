// Golden cases `silo_step` and `dps_step`: one guided sampling step each, recorded as one program through
// the samplers in src/solvers/samplers, with the models the manifest points at (../unet_mini,
// ../silo_cnn, ../vae_mini) and SD-1.5's DDPM scheduler at the manifest's set_timesteps(N) (SILO: 999); each
// step's t_index, t and the scheduler values the manifest states are checked against it. Checked: eps, x0_hat,
// the unguided prev_sample, the measurement estimate, the residual norm, the guidance gradient and
// z_prev. The gradients are f32 only: an f16 run checks the forward quantities alone.

import type { Engine } from '../engine/device.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import type { Tensor } from '../engine/tensor.js';
import { runProgram } from '../engine/recorder.js';
import { scale as scaleTensor } from '../engine/ops/elementwise.js';
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
import { loadUNetFolder, UNET_F16_TOLERANCE } from './unet.js';
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

function upload(engine: Engine, golden: SafetensorsFile, name: string, dtype: 'f32' | 'f16', owned: Tensor[]): Tensor {
  const t = goldenInput(engine, golden, name, dtype);
  owned.push(t);
  return t;
}

/** Reads the step's tensors back, with each golden tensor and tolerance. */
async function stepItems(
  step: GuidedStep,
  golden: SafetensorsFile,
  prefix: string,
  names: { estimate: string },
  tol: ReturnType<typeof tolerances>,
  dtype: 'f32' | 'f16',
): Promise<CheckItem[]> {
  const fwd = dtype === 'f16' ? UNET_F16_TOLERANCE : tol.forward;
  const pairs: [string, Tensor, Tolerance][] = [
    ['eps', step.eps, fwd],
    ['x0_hat', step.x0, fwd],
    ['prev_sample_unguided', step.prev, dtype === 'f16' ? UNET_F16_TOLERANCE : tol.zPrev],
    [names.estimate, step.estimate, fwd],
  ];
  if (step.extras['decoded']) pairs.push(['decoded_x0_hat', step.extras['decoded'], fwd]);
  if (dtype === 'f32') pairs.push(['residual_norm', step.residualNorm, tol.norm], ['grad', step.grad, tol.grad], ['z_prev', step.zPrev, tol.zPrev]);
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
  const { model, loader } = await loadUNetFolder(engine, subFolder(files, mf['unet_dir']), {}, dtype);
  try {
    const prior: DiffusionPrior = { model: unetEpsModel(model), scheduler, text: upload(engine, golden, 'input.prompt_embeds', dtype, owned) };
    return { prior, scheduler, unet: model, loader };
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
  const { prior, scheduler, unet, loader } = await loadPrior(engine, files, manifest, golden, dtype, owned);
  let opLoader: WeightLoader | undefined;
  try {
    const model = WeightLoader.build(engine, opWeights, { dtype }, (w) => {
      opLoader = w;
      return new DegradationModel(w, config);
    });
    const sigmaEmb = config.sigmaCondition ? upload(engine, golden, 'input.sigma_emb', dtype, owned) : undefined;
    const items: CheckItem[] = [];
    for (const [i, s] of steps.entries()) {
      const prefix = String(s['prefix']);
      const t = golden.getIntegers(`${prefix}input.t`)[0]!;
      checkStepChoices(files, s, `steps[${i}].`, scheduler, t);
      const eta = s['eta'];
      if (typeof eta !== 'number' || !Number.isFinite(eta)) throw caseError(files, `manifest.json steps[${i}].eta`, `must be a number, got ${JSON.stringify(eta)}`);
      opts.log?.(`${prefix} t=${t} eta=${eta}: unet ${dtype}, operator DegradationModel(sigma_condition=${config.sigmaCondition})`);
      const zt = upload(engine, golden, `${prefix}input.z_t`, dtype, owned);
      const w = upload(engine, golden, `${prefix}input.w`, dtype, owned);
      const noise = upload(engine, golden, `${prefix}input.ddpm_noise`, dtype, owned);
      if (dtype === 'f16') {
        // Forward only: the same quantities without the gradient.
        const { result } = await runProgram(engine, 'silo_step_forward', (rec) => {
          const eps = unet.forward(rec, zt, t, prior.text).eps;
          const st = prior.scheduler.step(rec, eps, t, zt, { noise });
          const estimate = model.forward(rec, st.predOriginalSample, sigmaEmb);
          return { eps, x0: st.predOriginalSample, prev: st.prevSample, estimate, extras: {} } as unknown as GuidedStep;
        });
        items.push(...(await stepItems(result, golden, prefix, { estimate: 'w_hat' }, tol, dtype)));
        disposeStep(result);
        continue;
      }
      const { result, report } = await runProgram(engine, 'silo_step', (rec) => siloStep(rec, prior, { kind: 'cnn', model, sigmaEmb }, w, zt, t, noise, { eta }));
      opts.log?.(`${prefix} one program: ${report.dispatches} dispatches, peak ${(report.peakLiveBytes / 2 ** 20).toFixed(1)} MiB`);
      items.push(...(await stepItems(result, golden, prefix, { estimate: 'w_hat' }, tol, dtype)));
      disposeStep(result);
    }
    if (dtype !== 'f32') opts.log?.('silo_step: residual_norm, grad and z_prev not checked (the backward ops are f32 only)');
    const skipped = (n: string) => skippedPrefixes.some((p) => n.startsWith(p)) || (dtype !== 'f32' && /\.(residual_norm|grad|z_prev)$/.test(n));
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
  const { prior, scheduler, unet, loader } = await loadPrior(engine, files, manifest, golden, dtype, owned);
  const vaeFiles = subFolder(files, mf['vae_dir']);
  let vaeLoader: WeightLoader | undefined;
  const A = new AvgPoolOperator(engine, factor);
  try {
    const cfg = parseVaeConfig(await readJson<Json>(vaeFiles, 'config.json'));
    const vaeWeights = await readSafetensors(vaeFiles, 'diffusion_pytorch_model.safetensors');
    const vae = WeightLoader.build(engine, vaeWeights, { dtype }, (w) => {
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
    opts.log?.(`dps_step t=${t} scale=${scale}: unet + vae decoder ${dtype}, A = avg_pool2d(${factor}), set_timesteps(${scheduler.timesteps.length})`);
    const zt = upload(engine, golden, 'input.z_t', dtype, owned);
    const y = upload(engine, golden, 'input.y', dtype, owned);
    const noise = upload(engine, golden, 'input.ddpm_noise', dtype, owned);
    if (dtype === 'f16') {
      const { result } = await runProgram(engine, 'dps_step_forward', (rec) => {
        const eps = unet.forward(rec, zt, t, prior.text).eps;
        const st = prior.scheduler.step(rec, eps, t, zt, { noise });
        const u = rec.engine.tidy(() => vae.decode(rec, scaleTensor(rec, st.predOriginalSample, 1 / vae.scalingFactor), { tiling: 'off' }));
        return { eps, x0: st.predOriginalSample, prev: st.prevSample, extras: { decoded: u }, estimate: A.apply(rec, u) } as unknown as GuidedStep;
      });
      const items = await stepItems(result, golden, '', { estimate: 'y_hat' }, tol, dtype);
      disposeStep(result);
      opts.log?.('dps_step: residual_norm, grad and z_prev not checked (the backward ops are f32 only)');
      assertCompared(files, golden, items, isInputName, (n) => /^(residual_norm|grad|z_prev)$/.test(n));
      return items;
    }
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
