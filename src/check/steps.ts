// Golden cases `silo_step` and `dps_step`: one guided sampling step each, recorded as one program through
// the samplers in src/solvers/samplers, with the models the manifest points at (../unet_mini,
// ../silo_cnn, ../vae_mini) and SD-1.5's DDPM scheduler at set_timesteps(999). Checked: eps, x0_hat,
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

type Json = Record<string, unknown>;

function tolerances(manifest: Json): { forward: Tolerance; norm: Tolerance; grad: Tolerance; zPrev: Tolerance } {
  const t = (manifest['suggested_tolerance'] ?? {}) as Record<string, Record<string, number>>;
  const key = Object.keys(t).find((k) => k.startsWith('eps/'));
  const need = (v: Record<string, number> | undefined, what: string) => {
    if (!v) throw new Error(`manifest of case ${String(manifest['case'])} has no suggested_tolerance for ${what}`);
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

/** The DDPM scheduler of the step cases: SD-1.5's config, set_timesteps(999) (SILO's default). */
function stepScheduler(): DDPMScheduler {
  const s = new DDPMScheduler({ ...SD15_SCHEDULER_CONFIG });
  s.setTimesteps(999);
  return s;
}

async function loadPrior(engine: Engine, files: CaseFiles, manifest: Json, golden: SafetensorsFile, dtype: 'f32' | 'f16', owned: Tensor[]) {
  const mf = (manifest['files'] ?? {}) as Record<string, string>;
  if (!mf['unet_dir']) throw new Error(`manifest of case ${String(manifest['case'])} names no "unet_dir"`);
  const { model, loader } = await loadUNetFolder(engine, subFolder(files, mf['unet_dir']), {}, dtype);
  const prior: DiffusionPrior = { model: unetEpsModel(model), scheduler: stepScheduler(), text: upload(engine, golden, 'input.prompt_embeds', dtype, owned) };
  return { prior, unet: model, loader };
}

export const runSiloStep: CaseRunner = async (engine, files, manifest, opts) => {
  const dtype = opts.dtype ?? 'f32';
  const tol = tolerances(manifest);
  const golden = await readSafetensors(files, caseFileName(manifest, 'golden'));
  const owned: Tensor[] = [];
  const { prior, unet, loader } = await loadPrior(engine, files, manifest, golden, dtype, owned);
  const op = relativeFile(files, caseFileName(manifest, 'operator_weights'));
  const opWeights = await readSafetensors(op.folder, op.name);
  const config = inferDegradationConfig(opWeights);
  let opLoader: WeightLoader | undefined;
  try {
    const model = WeightLoader.build(engine, opWeights, { dtype }, (w) => {
      opLoader = w;
      return new DegradationModel(w, config);
    });
    const sigmaEmb = config.sigmaCondition ? upload(engine, golden, 'input.sigma_emb', dtype, owned) : undefined;
    const steps = (manifest['steps'] ?? []) as Json[];
    if (steps.length === 0) throw new Error(`manifest of case ${String(manifest['case'])} lists no steps`);
    const items: CheckItem[] = [];
    for (const s of steps) {
      const prefix = String(s['prefix']);
      const t = golden.getIntegers(`${prefix}input.t`)[0]!;
      const eta = Number(s['eta']);
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
    return items;
  } finally {
    for (const t of owned) t.dispose();
    loader.disposeAll();
    opLoader?.disposeAll();
  }
};

export const runDpsStep: CaseRunner = async (engine, files, manifest, opts) => {
  const dtype = opts.dtype ?? 'f32';
  const tol = tolerances(manifest);
  const golden = await readSafetensors(files, caseFileName(manifest, 'golden'));
  const mf = (manifest['files'] ?? {}) as Record<string, string>;
  if (!mf['vae_dir']) throw new Error(`manifest of case ${String(manifest['case'])} names no "vae_dir"`);
  const owned: Tensor[] = [];
  const { prior, unet, loader } = await loadPrior(engine, files, manifest, golden, dtype, owned);
  const vaeFiles = subFolder(files, mf['vae_dir']);
  let vaeLoader: WeightLoader | undefined;
  const A = new AvgPoolOperator(engine, 4);
  try {
    const cfg = parseVaeConfig(await readJson<Json>(vaeFiles, 'config.json'));
    const vaeWeights = await readSafetensors(vaeFiles, 'diffusion_pytorch_model.safetensors');
    const vae = WeightLoader.build(engine, vaeWeights, { dtype }, (w) => {
      vaeLoader = w;
      return new AutoencoderKL(w, cfg);
    });
    const t = golden.getIntegers('input.t')[0]!;
    const scale = Number(manifest['scale'] ?? 1);
    opts.log?.(`dps_step t=${t} scale=${scale}: unet + vae decoder ${dtype}, A = avg_pool2d(4)`);
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
      return items;
    }
    const { result, report } = await runProgram(engine, 'dps_step', (rec) => latentDpsStep(rec, prior, vae, A, y, zt, t, noise, { scale }));
    opts.log?.(`one program: ${report.dispatches} dispatches, peak ${(report.peakLiveBytes / 2 ** 20).toFixed(1)} MiB`);
    const items = await stepItems(result, golden, '', { estimate: 'y_hat' }, tol, dtype);
    disposeStep(result);
    return items;
  } finally {
    for (const t of owned) t.dispose();
    A.dispose();
    loader.disposeAll();
    vaeLoader?.disposeAll();
  }
};
