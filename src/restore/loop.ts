// The whole restoration: measurement -> (latent samplers: encode once) -> N guided DDPM steps -> decode once.
// Each sampling step is one recorded program with no read-back; the loop waits for it only to report
// progress, to honour an AbortSignal between steps and to time it. The method is a Sampler from the
// registry (registry.ts):
//   silo-cnn / silo-rg  the latent operator compares E(y) with H(x0) or R(features): no autoencoder in the loop;
//   latent-dps / psld   the residual lives in pixel space: decoder (and PSLD's encoder) in every step.
// The report counts dispatches per phase, and autoencoder dispatches inside the loop separately, so
// SILO's claim (zero) is measured, not asserted.
// Never silently wrong: the weights' NaN/Inf checks are awaited first; each step's program also writes
// a 2-float status [residual norm, non-finite count of z_{t-1}] that the loop reads (one tiny read per
// step, which waits anyway); the decoded image's non-finite count is read too. On a bad value the loop
// stops with a NonFiniteStepError naming the step, t, the method and the first non-finite module/stage,
// found by re-running that step from its start latent (kept until the step is verified).

import type { Engine } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import type { ProgramReport, Recorder } from '../engine/recorder.js';
import { runProgram } from '../engine/recorder.js';
import { ArgumentError, SiloError, assertArg } from '../engine/errors.js';
import { shapeString } from '../engine/dtype.js';
import { clamp, scale } from '../engine/ops/elementwise.js';
import { randomNormal } from '../engine/ops/random.js';
import { nonFiniteCount } from '../engine/ops/reduce.js';
import { WeightLoader } from '../models/weights.js';
import { diagnoseDecode, diagnoseStep } from '../solvers/nonfinite-diagnosis.js';
import type { UNet2DConditionModel } from '../models/unet/unet.js';
import type { AutoencoderKL } from '../models/vae/autoencoder.js';
import type { DegradationModel } from '../models/silo/cnn.js';
import type { AggregationNetwork } from '../models/silo/readout.js';
import type { PreserveDegradationNetwork } from '../models/silo/preserve.js';
import { sigmaTimestep } from '../models/silo/config.js';
import type { DDPMScheduler } from '../solvers/schedulers/ddpm.js';
import type { Degradation } from '../solvers/degradations/types.js';
import { usesCfg, type DiffusionPrior } from '../solvers/samplers/denoiser.js';
import { operatorSigmaEmb, type SiloOperator } from '../solvers/samplers/silo.js';
import { unetEpsModel, unetForwardMode, type ForwardMode, type UNetEpsOptions } from '../solvers/samplers/eps-model.js';
import { unetTapeBytes } from '../models/unet/tape-bytes.js';
import type { Scalar } from '../engine/step-value.js';
import { samplerFor, RESTORE_METHODS, type RestoreMethod } from './registry.js';
import { operatorModel, operatorTensors, type StepInputs } from './sampler.js';
import { LATENT_DPS_ETA, SILO_DEFAULT_ETA } from './defaults.js';
import { autoencoderDispatches } from './loop-report.js';
import { StepRunner, type StepPlan } from './step-runner.js';

export { RESTORE_METHODS, type RestoreMethod };

export class RestoreAbortedError extends SiloError {}

/** A step or the decode produced NaN/Inf; the message names the step, t, the method and the first bad module. */
export class NonFiniteStepError extends SiloError {
  constructor(
    message: string,
    /** The step index (0-based), or undefined for the final decode. */
    readonly step: number | undefined,
    readonly t: number | undefined,
    /** The diagnostic pass's finding, e.g. "unet: conv_out output has 64 non-finite values". */
    readonly diagnosis: string,
  ) {
    super(message);
  }
}

export interface RestoreModels {
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  /** DDPM with the model's scheduler config (set_timesteps is called here). */
  scheduler: DDPMScheduler;
  /** Prompt embedding [1, L, D]; `uncond` the negative prompt's, for guidanceScale != 1. */
  text: Tensor;
  uncond?: Tensor;
  /** silo-cnn's operator: SILO's DegradationModel, or (exactly one of the two) its preserve CNN. */
  cnn?: DegradationModel;
  preserve?: PreserveDegradationNetwork;
  /** silo-rg's operator. */
  readout?: AggregationNetwork;
  /** cond_inpaint readout networks: the mask at latent resolution [1, 1, h, w]. */
  readoutMask?: Tensor;
  /**
   * e_sigma for sigma-conditioned operators. Default: the UNet's time embedding at SILO's pseudo-timestep
   * (sigma / 0.1) * 999, as SILO computes it; a UNet whose embedding width differs from the operator's
   * (the tiny test UNets) needs it supplied.
   */
  sigmaEmb?: Tensor;
}

export interface RestoreProgress {
  /** Steps done (1-based) of total. */
  step: number;
  total: number;
  t: number;
  elapsedMs: number;
  /** Residual norm of the step just done, when it was read back (every `residualEvery` steps). */
  residual?: number;
}

export interface RestoreOptions {
  method: RestoreMethod;
  /** DDPM inference steps (SILO: 999). */
  steps: number;
  /** Random seed for z_T, the DDPM noise and the posterior sample of E(y). */
  seed: number;
  /** SILO's step size eta (0.5 blur/SR/JPEG, 1.0 inpainting); Latent-DPS's scale. */
  eta?: number;
  /** Measurement noise sigma (images in [-1, 1]); conditions SILO's operators. Default 0.02. */
  sigma?: number;
  /** SILO's --clamp: w = clamp(E(y), -4, 4). Default true. */
  clampW?: boolean;
  /** SILO's element-wise gradient clamp (default 1). */
  gradClamp?: number;
  guidanceScale?: number;
  cfgFix?: boolean;
  /** PSLD weights (default omega 1, gamma 0.1). */
  psldOmega?: number;
  psldGamma?: number;
  /** Read the residual norm back every k steps for progress (0: never; default 0). */
  residualEvery?: number;
  /** The restored image's [H, W] when A changes the size (super-resolution); default y's size. */
  imageSize?: [number, number];
  /** The UNet's forward mode in a guided step (default 'auto': keep its activations when they fit the budget). */
  forward?: ForwardMode | 'auto';
  /** Bytes of UNet activations 'auto' may keep per step (default DEFAULT_ACTIVATION_BUDGET, 1 GiB). */
  activationBudget?: number;
  /**
   * Capture the first guided step and replay it for the following ones (default true): the same numbers
   * bit for bit, with a fraction of the JavaScript per step. Steps of another shape (the last, which adds
   * no noise) are recorded.
   */
  replay?: boolean;
  onProgress?: (p: RestoreProgress) => void;
  signal?: AbortSignal;
  /** Decode the step's x0 estimate every k steps (not the last) and pass it to onPreview; 0 or undefined: never. */
  previewEvery?: number;
  onPreview?: (p: { step: number; total: number; image: Float32Array; shape: number[] }) => void | Promise<void>;
}

export interface PhaseReport {
  ms: number;
  dispatches: number;
  /** Dispatches inside vae_* / taesd_* scopes. */
  autoencoderDispatches: number;
  peakLiveBytes: number;
}

export interface RestoreReport {
  method: RestoreMethod;
  steps: number;
  timesteps: [number, number];
  encode: PhaseReport;
  loop: PhaseReport & {
    perStepMs: number;
    perStepDispatches: number;
    /** Steps that replayed a captured step. */
    replayedSteps: number;
    /** JavaScript time per step to record (or re-encode a replay) and submit it (ms, mean over the loop). */
    perStepEncodeMs: number;
    /** Of which the loop waited for (a replay encoded while the previous step ran exposes only its submit). */
    perStepExposedEncodeMs: number;
  };
  decode: PhaseReport;
  /** The preview decodes (outside the loop's counts: they are a display choice, not the method's cost). */
  previews: { count: number; ms: number; dispatches: number };
  /** Residual norms read back (step index, value). */
  residuals: [number, number][];
  finalResidual: number;
  /** Whether each step's UNet forward kept its activations for the VJP or the VJP recomputed them. */
  forwardMode: ForwardMode;
  /** Bytes of UNet activations a 'reuse' step keeps (unetTapeBytes of the step's UNet batch). */
  unetTapeBytes: number;
}

export interface RestoreResult {
  /** D(z_0 / s) clamped to [-1, 1], [1, 3, H, W]. */
  image: Tensor;
  latent: Tensor;
  report: RestoreReport;
}

export { autoencoderDispatches };

function phase(report: ProgramReport, ms: number): PhaseReport {
  return { ms, dispatches: report.dispatches, autoencoderDispatches: autoencoderDispatches(report), peakLiveBytes: report.peakLiveBytes };
}

/** Random streams of one restoration (Philox offsets under the seed). */
const STREAM_ZT = 0;
const STREAM_POSTERIOR = 2 ** 40;

/** The step size when none is given: the defaults table's (defaults.ts) task-independent value. */
function defaultEta(method: RestoreMethod): number {
  return method === 'latent-dps' ? LATENT_DPS_ETA : SILO_DEFAULT_ETA;
}

const OPERATOR_FIELD = { cnn: 'a CNN operator (models.cnn or models.preserve)', readout: 'the readout operator (models.readout)' } as const;

function checkModels(m: RestoreModels, o: RestoreOptions): void {
  const sampler = samplerFor(o.method);
  assertArg(Number.isInteger(o.steps) && o.steps >= 1, `restore: steps must be a positive integer, got ${o.steps}`);
  assertArg(Number.isSafeInteger(o.seed) && o.seed >= 0, `restore: seed must be a non-negative integer, got ${o.seed}`);
  if (sampler.operator) assertArg(operatorModel(m, sampler.operator), `restore: method ${o.method} needs ${OPERATOR_FIELD[sampler.operator]}`);
  assertArg(!(m.cnn && m.preserve), 'restore: models.cnn and models.preserve are both set; silo-cnn guides with exactly one CNN operator');
  const sigma = o.sigma ?? 0.02;
  assertArg(Number.isFinite(sigma) && sigma >= 0, `restore: sigma must be >= 0, got ${sigma}`);
}

/**
 * Restores `y` (the measurement A(x) + noise, [1, 3, h, w] in [-1, 1]) degraded by `A`. The result's
 * tensors belong to the caller.
 */
export async function restore(engine: Engine, models: RestoreModels, A: Degradation, y: Tensor, opts: RestoreOptions): Promise<RestoreResult> {
  checkModels(models, opts);
  // Models built since the last check (WeightLoader.build) must have finite weights before they run.
  await WeightLoader.verify(engine);
  assertArg(y.rank === 4 && y.shape[0] === 1, `restore: the measurement must be [1, C, h, w], got ${shapeString(y.shape)}`);
  const { unet, vae, scheduler } = models;
  const s = vae.scalingFactor;
  const sigma = opts.sigma ?? 0.02;
  const sampler = samplerFor(opts.method);
  const eta = sampler.usesEta ? (opts.eta ?? defaultEta(opts.method)) : undefined;
  const isSilo = sampler.space === 'latent';
  scheduler.setTimesteps(opts.steps);
  const timesteps = scheduler.timesteps.slice();
  const epsOpts: UNetEpsOptions = { forward: opts.forward, activationBudget: opts.activationBudget };
  const prior: DiffusionPrior = { model: unetEpsModel(unet, epsOpts), scheduler, text: models.text, uncond: models.uncond, guidanceScale: opts.guidanceScale, cfgFix: opts.cfgFix };

  const owned: Tensor[] = [];
  let runner: StepRunner | undefined;
  const keep = <T extends Tensor>(t: T) => (owned.push(t), t);
  // The loop's latent and last residual norm stay owned too, so an abort or error mid-loop frees them.
  const replace = <T extends Tensor>(old: Tensor | undefined, next: T): T => {
    old?.dispose();
    const i = old ? owned.indexOf(old) : -1;
    if (i >= 0) owned[i] = next;
    else owned.push(next);
    return next;
  };
  try {
    // Phase 1: the latent measurement w = E(y) * s (SILO), the sigma embedding and z_T.
    const t0 = performance.now();
    const enc = await runProgram(
      engine,
      'restore/encode',
      (rec) => {
        let w: Tensor | undefined;
        let sigmaEmb = models.sigmaEmb;
        if (isSilo) {
          w = rec.engine.tidy(() => {
            const full = A.upsampleMeasurement ? A.upsampleMeasurement(rec, y) : y;
            const post = vae.encode(rec, full);
            const z = vae.sample(rec, post, randomNormal(rec, post.mean.shape, opts.seed, { offset: STREAM_POSTERIOR, name: 'posterior_noise' }));
            const scaled = scale(rec, z, s);
            return opts.clampW === false ? scaled : clamp(rec, scaled, -4, 4);
          });
          // The preserve CNN embeds sigma itself: no UNet embedding for it.
          const op = sampler.operator ? operatorModel(models, sampler.operator)?.config : undefined;
          if (op && 'sigmaCondition' in op && op.sigmaCondition && !sigmaEmb) sigmaEmb = unet.timeEmbedding(rec, sigmaTimestep(sigma));
        }
        const latentShape = w ? w.shape : latentShapeFor(A, y, vae, unet, opts.imageSize);
        const zT = randomNormal(rec, latentShape, opts.seed, { offset: STREAM_ZT, name: 'z_T' });
        return { w, sigmaEmb, zT };
      },
      { wait: true },
    );
    const { w, zT } = enc.result;
    if (w) keep(w);
    keep(zT);
    if (enc.result.sigmaEmb && enc.result.sigmaEmb !== models.sigmaEmb) keep(enc.result.sigmaEmb);
    const sigmaEmb = enc.result.sigmaEmb;
    const encodeReport = phase(enc.report, performance.now() - t0);

    const operator: SiloOperator | undefined = sampler.makeOperator?.(models, sigmaEmb, sigma);
    operatorTensors(operator).forEach(keep);
    const stepInputs: StepInputs = { prior, vae, A, y, w, operator, eta, gradClamp: opts.gradClamp, psldOmega: opts.psldOmega, psldGamma: opts.psldGamma };

    // Phase 2: the guided DDPM loop, one program per step.
    let z = zT;
    const loopStart = performance.now();
    let loopDispatches = 0;
    let loopAutoencoder = 0;
    let loopPeak = 0;
    const residuals: [number, number][] = [];
    const previews = { count: 0, ms: 0, dispatches: 0 };
    let lastNorm: Tensor | undefined;
    let replayedSteps = 0;
    let encodeMs = 0;
    let exposedEncodeMs = 0;
    // The step as recorded by the loop (noise stream `noiseOffset`), also replayed by the diagnostic pass.
    const recordStep = (rec: Recorder, zIn: Tensor, t: Scalar, noiseOffset: Scalar | undefined) => {
      const noise = noiseOffset !== undefined ? randomNormal(rec, zIn.shape, opts.seed, { offset: noiseOffset, name: 'ddpm_noise' }) : undefined;
      // The noise is freed even when the step throws (a bad option found while recording).
      try {
        return sampler.step(rec, stepInputs, zIn, t, noise);
      } finally {
        noise?.dispose();
      }
    };
    runner = new StepRunner(engine, recordStep, opts.replay !== false && prior.model.replayable === true);
    const every = opts.previewEvery ?? 0;
    const plans: StepPlan[] = timesteps.map((t, i) => ({
      i,
      t,
      noisy: scheduler.stepCoefficients(t).noiseStd !== 0,
      keepX0: every > 0 && !!opts.onPreview && (i + 1) % every === 0 && i < timesteps.length - 1,
    }));
    for (const plan of plans) {
      const { i, t, noisy, keepX0: previewDue } = plan;
      if (opts.signal?.aborted) throw new RestoreAbortedError(`restore: stopped after ${i} of ${timesteps.length} steps`);
      const result = await runner.run(plan, z, plans[i + 1]);
      // The x0 estimate stays for a preview (freed once decoded, or with the others on an error).
      if (result.x0) owned.push(result.x0);
      // z (this step's start) stays until the new latent is verified: the diagnosis re-runs from it.
      owned.push(result.zPrev);
      lastNorm = replace(lastNorm, result.residualNorm);
      const [stepResidual, badLatent] = [result.status[0]!, result.status[1]!];
      if (!Number.isFinite(stepResidual) || badLatent !== 0) {
        runner.release();
        const diagnosis = await diagnoseStep(engine, {
          method: opts.method, unet, vae, zt: z, t, text: models.text, uncond: usesCfg(prior) ? models.uncond : undefined,
          w, y, sigmaEmb: operatorSigmaEmb(operator), replay: (rec) => recordStep(rec, z, t, noisy ? i + 1 : undefined),
        });
        throw new NonFiniteStepError(
          `restore: step ${i} of ${timesteps.length} (t=${t}, method ${opts.method}) produced non-finite values ` +
            `(residual norm ${stepResidual}, ${badLatent} non-finite value(s) in z_{t-1}); first non-finite: ${diagnosis}`,
          i, t, diagnosis,
        );
      }
      owned.splice(owned.indexOf(z), 1);
      z.dispose();
      z = result.zPrev;
      loopDispatches += result.dispatches;
      loopAutoencoder += result.autoencoderDispatches;
      loopPeak = Math.max(loopPeak, result.peakLiveBytes);
      if (result.replayed) replayedSteps++;
      encodeMs += result.encodeMs;
      exposedEncodeMs += result.exposedEncodeMs;
      if (previewDue) {
        const p0 = performance.now();
        const x0 = result.x0!;
        const dec = await runProgram(engine, `restore/preview_${i}`, (rec) => rec.engine.tidy(() => clamp(rec, vae.decode(rec, scale(rec, x0, 1 / s)), -1, 1)), { wait: true });
        owned.splice(owned.indexOf(x0), 1);
        x0.dispose();
        try {
          const image = await dec.result.read();
          previews.count++;
          previews.dispatches += dec.report.dispatches;
          previews.ms += performance.now() - p0;
          await opts.onPreview!({ step: i + 1, total: timesteps.length, image, shape: dec.result.shape.slice() });
        } finally {
          dec.result.dispose();
        }
      }
      const resEvery = opts.residualEvery ?? 0;
      let residual: number | undefined;
      if (resEvery > 0 && ((i + 1) % resEvery === 0 || i === timesteps.length - 1)) {
        residual = stepResidual;
        residuals.push([i, residual]);
      }
      opts.onProgress?.({ step: i + 1, total: timesteps.length, t, elapsedMs: performance.now() - loopStart, residual });
    }
    // Previews are a display choice, not the method's cost: their decodes are reported apart.
    const loopMs = performance.now() - loopStart - previews.ms;
    const finalResidual = lastNorm ? (await lastNorm.read())[0]! : NaN;
    if (lastNorm) owned.splice(owned.indexOf(lastNorm), 1);
    lastNorm?.dispose();

    // Phase 3: decode once.
    const t2 = performance.now();
    const dec = await runProgram(
      engine,
      'restore/decode',
      (rec) =>
        rec.engine.tidy(() => {
          // Counted before the clamp, which would turn +-Inf into +-1 (NaN it keeps).
          const raw = vae.decode(rec, scale(rec, z, 1 / s));
          return { image: clamp(rec, raw, -1, 1), bad: nonFiniteCount(rec, raw) };
        }),
      { wait: true },
    );
    keep(dec.result.image);
    let badPixels: number;
    try {
      badPixels = (await dec.result.bad.read())[0]!;
    } finally {
      dec.result.bad.dispose();
    }
    if (badPixels !== 0) {
      const diagnosis = await diagnoseDecode(engine, vae, z);
      throw new NonFiniteStepError(
        `restore: the decoded image has ${badPixels} non-finite value(s) after ${timesteps.length} finite steps (method ${opts.method}); first non-finite: ${diagnosis}`,
        undefined, undefined, diagnosis,
      );
    }
    owned.splice(owned.indexOf(dec.result.image), 1);
    const decodeReport = phase(dec.report, performance.now() - t2);
    owned.splice(owned.indexOf(z), 1);
    const n = timesteps.length;
    // The UNet batch is 2 under classifier-free guidance.
    const batchShape = [usesCfg(prior) ? 2 : 1, ...z.shape.slice(1)];
    return {
      image: dec.result.image,
      latent: z,
      report: {
        method: opts.method,
        steps: n,
        timesteps: [timesteps[0]!, timesteps[n - 1]!],
        encode: encodeReport,
        loop: {
          ms: loopMs, dispatches: loopDispatches, autoencoderDispatches: loopAutoencoder, peakLiveBytes: loopPeak,
          perStepMs: loopMs / n, perStepDispatches: loopDispatches / n, replayedSteps, perStepEncodeMs: encodeMs / n,
          perStepExposedEncodeMs: exposedEncodeMs / n,
        },
        decode: decodeReport,
        previews,
        residuals,
        finalResidual,
        forwardMode: unetForwardMode(unet, batchShape, epsOpts),
        unetTapeBytes: unetTapeBytes(unet, batchShape),
      },
    };
  } finally {
    runner?.release();
    for (const t of owned) t.dispose();
  }
}

/** The latent shape for pixel-space methods: the full image size (A's input) over the VAE factor. */
function latentShapeFor(A: Degradation, y: Tensor, vae: AutoencoderKL, unet: UNet2DConditionModel, size?: [number, number]): number[] {
  const f = vae.downFactor;
  assertArg(size || !A.upsampleMeasurement, `restore: ${A.name} changes the image size: pass imageSize (the restored image's [H, W])`);
  const [h, w] = size ?? [y.shape[2]!, y.shape[3]!];
  assertArg(h % f === 0 && w % f === 0, `restore: the image size ${h}x${w} must be a multiple of the VAE factor ${f}`);
  return [1, unet.config.inChannels, h / f, w / f];
}
