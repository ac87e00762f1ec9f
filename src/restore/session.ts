// A restoration session: models loaded once, then any number of restorations, each from a ground truth
// (degraded here with the task) or a measurement, with progress, an AbortSignal, optional previews,
// metrics and a JSON report. The CLI, the batch runner and the web page all call this; they keep only
// their own files, arguments and progress display. Browser-safe.

import type { Engine } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import { SiloError, type LimitError } from '../engine/errors.js';
import { limitAdvice, restorationBytesPerPixel } from './limit-advice.js';
import { runProgram } from '../engine/recorder.js';
import { chwToRgb8, imageToCHW, resizeAndCenterCrop } from '../io/image.js';
import type { Image8 } from '../io/types.js';
import type { Degradation } from '../solvers/degradations/types.js';
import { makeDegradation, type DegradationTask } from '../solvers/degradations/tasks.js';
import type { BlurKernel } from '../solvers/degradations/kernel-file.js';
import { addMeasurementNoise } from '../solvers/degradations/noise.js';
import { jpegRoundTrip } from '../solvers/degradations/jpeg.js';
import { InpaintingOperator } from '../solvers/degradations/inpaint.js';
import { resizeMaskAntialiased } from '../solvers/degradations/latent-mask.js';
import { consistencyPsnr, msSsim, psnr, psnrY, ssim, unitFromSigned } from '../solvers/metrics.js';
import type { ForwardMode } from '../solvers/samplers/eps-model.js';
import { restore, type RestoreProgress, type RestoreReport } from './loop.js';
import { samplerFor, type RestoreMethod } from './registry.js';
import { operatorModel } from './sampler.js';
import { methodEta, RESTORE_DEFAULTS } from './defaults.js';
import { checkMeasurementShape, measurementFactor, resolveSize } from './size.js';
import type { LoadedModels } from './models.js';

export interface RestoreRequest {
  task: DegradationTask;
  method: RestoreMethod;
  /** An RGB image to degrade with the task (metrics are computed against it); or */
  groundTruth?: Image8;
  /** an RGB measurement, already degraded (size / the task's factor). */
  measurement?: Image8;
  /** Names for messages (e.g. the file names). */
  groundTruthName?: string;
  measurementName?: string;
  /** motion_blur's kernel. */
  motionKernel?: BlurKernel;
  /** The restored image's side (default: the operator's, else the image's). */
  size?: number;
  steps?: number;
  /** The step size (default: methodEta's for the method and task). */
  eta?: number;
  seed?: number;
  sigma?: number;
  prompt?: string;
  negativePrompt?: string;
  cfg?: number;
  cfgFix?: boolean;
  clampW?: boolean;
  forward?: ForwardMode | 'auto';
  /** Bytes of UNet activations 'auto' may keep per step. */
  activationBudget?: number;
  /**
   * The settings the operator was trained and released with (SILO's script for it), used where the
   * request leaves eta, prompt or clampW unset; `source` names it in the report.
   */
  operatorDefaults?: { eta: number; prompt: string; clampW: boolean; source: string };
}

export interface Preview {
  step: number;
  total: number;
  /** D(x0_hat / s) of that step, clamped to [-1, 1], as RGB. */
  image: Image8;
}

export interface RunOptions {
  onProgress?: (p: RestoreProgress) => void;
  signal?: AbortSignal;
  /** Decode the x0 estimate every k steps and hand it to onPreview (costs one decode each). */
  previewEvery?: number;
  onPreview?: (p: Preview) => void | Promise<void>;
  /** Lines worth showing a user (the degradation, the settings, metrics, phase timings). */
  log?: (line: string) => void;
}

/** The settings a restoration ran with, every default filled in. */
export interface ResolvedSettings {
  method: RestoreMethod;
  task: DegradationTask;
  steps: number;
  eta: number | null;
  eta_from: string;
  seed: number;
  sigma: number;
  size: number;
  degradation: string;
  prompt: string;
  negative_prompt: string | null;
  cfg: number;
  cfg_fix: boolean;
  clamp_w: boolean;
  forward: ForwardMode | 'auto';
}

export interface RestorationResult {
  image: Image8;
  /** The measurement y as RGB (what the sampler was given). */
  measurement: Image8;
  metrics: Record<string, number | null>;
  settings: ResolvedSettings;
  /** The JSON report (settings, adapter, models, timings, dispatches, memory, residuals, metrics). */
  report: Record<string, unknown>;
}

function upload(engine: Engine, img: Image8, name: string): Tensor {
  const { data, shape } = imageToCHW(img);
  return engine.tensor(data, shape, 'f32', name);
}

export class RestorationSession {
  constructor(
    readonly engine: Engine,
    readonly models: LoadedModels,
    /** Where the prior came from (hub provenance, folder, URL), recorded in every report. */
    readonly provenance: { model?: unknown; operator?: unknown } = {},
  ) {}

  /** How many times its latent sides the UNet halves without remainder (2^(down blocks - 1)). */
  get unetMultiple(): number {
    return 2 ** (this.models.base.unet.config.blockOutChannels.length - 1);
  }

  /** Restored sides are multiples of this (the VAE's factor times the UNet's multiple; SD-1.5: 64). */
  get sizeMultiple(): number {
    return this.models.base.vae.downFactor * this.unetMultiple;
  }

  /** What a LimitError met at `size` with `method` means for the user: the limit, the need, and a size that fits. */
  limitAdvice(e: LimitError, size: number, method: RestoreMethod): string {
    const { unet, vae } = this.models.base;
    const inLoop = samplerFor(method).space === 'pixel' ? vae.config : undefined;
    return limitAdvice(e, size, this.sizeMultiple, restorationBytesPerPixel(unet.config, vae.downFactor, inLoop));
  }

  /** Restores one image. Nothing of the request stays on the GPU afterwards. */
  async run(req: RestoreRequest, opts: RunOptions = {}): Promise<RestorationResult> {
    const { engine, models } = this;
    const log = opts.log ?? (() => {});
    const sampler = samplerFor(req.method);
    if (!req.groundTruth === !req.measurement) throw new SiloError('restore: give either a ground truth to degrade or a measurement, not both and not neither');
    if (sampler.operator && !operatorModel(models.base, sampler.operator)) {
      throw new SiloError(`restore: method ${req.method} needs a ${sampler.operator === 'cnn' ? 'CNN' : 'readout'} operator, and none was loaded`);
    }
    if (!sampler.usesEta && req.eta !== undefined) throw new SiloError(`restore: ${sampler.label} takes no eta (it steps with its own weights)`);
    const dims = (i?: Image8): [number, number] | undefined => (i ? [i.width, i.height] : undefined);
    checkMeasurementShape({ task: req.task, size: req.size, measurement: dims(req.measurement), measurementName: req.measurementName });
    const f = models.base.vae.downFactor;
    const size = resolveSize({
      task: req.task, size: req.size, groundTruth: dims(req.groundTruth), measurement: dims(req.measurement), measurementName: req.measurementName,
      vaeFactor: f, unetMultiple: this.unetMultiple, operatorSize: models.operatorLatentSize ? models.operatorLatentSize * f : undefined,
    });
    const seed = req.seed ?? RESTORE_DEFAULTS.seed;
    const steps = req.steps ?? RESTORE_DEFAULTS.steps;
    const cfg = req.cfg ?? RESTORE_DEFAULTS.cfg;
    const od = sampler.space === 'latent' ? req.operatorDefaults : undefined;
    const prompt = req.prompt ?? od?.prompt ?? RESTORE_DEFAULTS.prompt;
    const clampW = req.clampW ?? od?.clampW ?? RESTORE_DEFAULTS.clampW;
    const { eta: etaChoice, from: etaFrom } = req.eta === undefined && od ? { eta: od.eta, from: od.source } : methodEta(req.method, req.task, req.eta);

    const owned: Tensor[] = [];
    let A: Degradation | undefined;
    try {
      const setup = makeDegradation(engine, req.task, size, size, { sigma: req.sigma ?? RESTORE_DEFAULTS.sigma, eta: etaChoice, motionKernel: req.motionKernel, seed });
      A = setup.operator;
      const eta = sampler.usesEta ? setup.eta : undefined;
      log(eta === undefined ? setup.description.replace(/, eta [^,]*$/, '') : setup.description);

      // The ground truth (resized and centre-cropped to size) and the measurement y.
      let x: Tensor | undefined;
      let y: Tensor;
      if (req.groundTruth) {
        const gt = resizeAndCenterCrop(req.groundTruth, size, size);
        x = upload(engine, gt, 'ground_truth');
        owned.push(x);
        if (req.task === 'jpeg10') {
          // The real codec, entropy coding included; then the noise on the GPU.
          const jpeg = jpegRoundTrip(gt.data, size, size, 10);
          const clean = upload(engine, { width: size, height: size, channels: 3, data: jpeg }, 'jpeg');
          owned.push(clean);
          y = (await runProgram(engine, 'measurement', (rec) => addMeasurementNoise(rec, clean, setup.sigma, seed, 1))).result;
        } else {
          y = (await runProgram(engine, 'measurement', (rec) => rec.engine.tidy(() => addMeasurementNoise(rec, A!.apply(rec, x!), setup.sigma, seed, 1)))).result;
        }
      } else {
        const want = size / measurementFactor(req.task);
        const img = req.measurement!;
        if (img.width !== want || img.height !== want) throw new SiloError(`${req.measurementName ?? 'the measurement'}: the measurement must be ${want}x${want} for task ${req.task} at size ${size}, got ${img.width}x${img.height}`);
        y = upload(engine, img, 'measurement');
      }
      owned.push(y);
      const measurement = chwToRgb8(await y.read(), y.shape);

      // A cond_inpaint readout operator (SILO's random-box inpainting) also reads the mask at latent size.
      let readoutMask: Tensor | undefined;
      const readout = sampler.operator === 'readout' ? models.base.readout : undefined;
      if (readout?.config.condInpaint) {
        if (!(A instanceof InpaintingOperator)) throw new SiloError(`restore: this readout operator was trained for inpainting (cond_inpaint: it reads the mask), but task ${req.task} has no mask`);
        const n = readout.config.latentSize;
        readoutMask = engine.tensor(resizeMaskAntialiased(A.mask, A.height, A.width, n, n), [1, 1, n, n], 'f32', 'readout_mask');
        owned.push(readoutMask);
      }

      const text = await models.embed(prompt);
      const uncond = cfg !== 1 ? await models.embed(req.negativePrompt ?? '') : undefined;
      log(`${req.method}: ${steps} steps, eta ${eta ?? 'n/a'} (${etaFrom}), seed ${seed}, sigma ${setup.sigma}, ${size}x${size} image, latent ${size / f}x${size / f}`);
      const result = await restore(engine, { ...models.base, text, uncond, readoutMask }, A, y, {
        method: req.method,
        steps,
        seed,
        eta,
        sigma: setup.sigma,
        clampW,
        guidanceScale: cfg,
        cfgFix: req.cfgFix,
        forward: req.forward,
        activationBudget: req.activationBudget,
        imageSize: [size, size],
        residualEvery: Math.max(1, Math.floor(steps / 20)),
        onProgress: opts.onProgress,
        signal: opts.signal,
        previewEvery: opts.previewEvery,
        onPreview: opts.onPreview ? async (p) => opts.onPreview!({ step: p.step, total: p.total, image: chwToRgb8(p.image, p.shape) }) : undefined,
      });
      owned.push(result.image, result.latent);
      const out = await result.image.read();
      const image = chwToRgb8(out, result.image.shape);

      const metrics: Record<string, number | null> = {};
      metrics['consistency_psnr_vs_measurement'] = await measurementPsnr(engine, A, result.image, y);
      if (x) {
        const gt = await x.read();
        const shape = x.shape;
        const u = unitFromSigned(out);
        const v = unitFromSigned(gt);
        metrics['psnr'] = psnr(out, gt, 2);
        metrics['psnr_y'] = psnrY(u, v, shape);
        metrics['ssim'] = ssim(u, v, shape);
        metrics['ms_ssim'] = size >= 176 ? msSsim(u, v, shape) : null;
        metrics['consistency_psnr'] = await consistencyPsnr(A, result.image, x);
      }
      for (const [k, v] of Object.entries(metrics)) log(`${k}: ${v === null ? 'n/a (image too small)' : v.toFixed(3)}`);
      for (const line of phaseLines(result.report)) log(line);

      const settings: ResolvedSettings = {
        method: req.method, task: req.task, steps, eta: eta ?? null, eta_from: etaFrom, seed, sigma: setup.sigma, size,
        degradation: setup.description, prompt, negative_prompt: req.negativePrompt ?? null, cfg, cfg_fix: req.cfgFix ?? false,
        clamp_w: clampW, forward: req.forward ?? 'auto',
      };
      const r = result.report;
      const report = {
        settings,
        adapter: engine.summary(),
        models: models.notes,
        ...(this.provenance.model ? { model: this.provenance.model } : {}),
        ...(this.provenance.operator ? { operator: this.provenance.operator } : {}),
        timings_ms: { encode: r.encode.ms, loop: r.loop.ms, per_step: r.loop.perStepMs, per_step_encode: r.loop.perStepEncodeMs, per_step_encode_exposed: r.loop.perStepExposedEncodeMs, decode: r.decode.ms, previews: r.previews.ms },
        replayed_steps: r.loop.replayedSteps,
        dispatches: {
          encode: r.encode.dispatches,
          loop: r.loop.dispatches,
          per_step: r.loop.perStepDispatches,
          autoencoder_in_loop: r.loop.autoencoderDispatches,
          decode: r.decode.dispatches,
          previews: r.previews.dispatches,
        },
        peak_gpu_bytes: { encode: r.encode.peakLiveBytes, loop_step: r.loop.peakLiveBytes, decode: r.decode.peakLiveBytes, pool_live: engine.pool.stats.peakLiveBytes, pool_allocated: engine.pool.stats.peakAllocatedBytes },
        unet_forward: { mode: r.forwardMode, kept_activation_bytes: r.unetTapeBytes },
        residuals: r.residuals,
        final_residual: r.finalResidual,
        metrics,
      };
      return { image, measurement, metrics, settings, report };
    } finally {
      for (const t of owned) t.dispose();
      A?.dispose();
    }
  }

  dispose(): void {
    this.models.dispose();
  }
}

/** PSNR of A(output) against the measurement itself (what a user without ground truth can check). */
async function measurementPsnr(engine: Engine, A: Degradation, image: Tensor, y: Tensor): Promise<number> {
  const { result } = await runProgram(engine, 'measurement_psnr', (rec) => A.apply(rec, image));
  try {
    return psnr(await result.read(), await y.read(), 2);
  } finally {
    result.dispose();
  }
}

function phaseLines(r: RestoreReport): string[] {
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  return [
    `encode ${r.encode.ms.toFixed(0)} ms (${r.encode.dispatches} dispatches, peak ${mib(r.encode.peakLiveBytes)})`,
    `loop ${r.steps} steps in ${(r.loop.ms / 1000).toFixed(1)} s (${r.loop.perStepMs.toFixed(0)} ms/step, ${r.loop.perStepDispatches.toFixed(0)} dispatches/step, ` +
      `${r.loop.replayedSteps} replayed, ${r.loop.perStepEncodeMs.toFixed(1)} ms/step to encode (${r.loop.perStepExposedEncodeMs.toFixed(1)} ms not overlapped), ` +
      `${r.loop.autoencoderDispatches} autoencoder dispatches in the loop, peak ${mib(r.loop.peakLiveBytes)})`,
    `UNet forward mode: ${r.forwardMode} (a reuse step keeps ${mib(r.unetTapeBytes)} of activations)`,
    `decode ${r.decode.ms.toFixed(0)} ms (${r.decode.dispatches} dispatches, peak ${mib(r.decode.peakLiveBytes)})`,
  ];
}
