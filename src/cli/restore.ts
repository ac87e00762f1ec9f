// `silo restore`: one restoration from the command line. Loads the models (a diffusers folder + a SILO
// operator, or the tiny golden models), reads the measurement (or degrades a ground truth with a task),
// runs the chosen sampler with a progress bar, writes the PNG and a JSON report (settings, timings per
// phase, dispatch counts incl. autoencoder dispatches inside the loop, peak GPU bytes, metrics).
// Ctrl-C stops between two steps and still frees the GPU; a second Ctrl-C exits at once.

import { Engine } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import { SiloError } from '../engine/errors.js';
import { runProgram } from '../engine/recorder.js';
import { readImageFile, writePng } from '../io/image-node.js';
import { chwToRgb8, imageToCHW, resizeAndCenterCrop, toRgb8 } from '../io/image.js';
import type { Image8 } from '../io/types.js';
import type { Degradation } from '../solvers/degradations/types.js';
import { isDegradationTask, makeDegradation, DEGRADATION_TASKS, type DegradationTask } from '../solvers/degradations/tasks.js';
import { loadBlurKernel } from '../solvers/degradations/kernel-file.js';
import { addMeasurementNoise } from '../solvers/degradations/noise.js';
import { jpegRoundTrip } from '../solvers/degradations/jpeg.js';
import { consistencyPsnr, msSsim, psnr, psnrY, ssim, unitFromSigned } from '../solvers/metrics.js';
import { restore, RESTORE_METHODS, RestoreAbortedError, type RestoreMethod, type RestoreReport } from '../solvers/restore.js';
import type { ForwardMode } from '../solvers/samplers/eps-model.js';
import { loadRestoreModels } from './restore-models.js';
import type { CliIO } from './silo.js';

export interface RestoreCliOptions {
  model?: string;
  golden?: string;
  operator?: string;
  sigmaEmb?: string;
  method: RestoreMethod;
  input?: string;
  groundTruth?: string;
  task: DegradationTask;
  kernel?: string;
  size?: number;
  steps: number;
  eta?: number;
  seed: number;
  sigma: number;
  prompt: string;
  negativePrompt?: string;
  cfg: number;
  cfgFix: boolean;
  clampW: boolean;
  forward: ForwardMode | 'auto';
  /** MiB of UNet activations 'auto' may keep per step. */
  activationBudgetMiB?: number;
  out: string;
  report?: string;
  measurementOut?: string;
  quiet: boolean;
}

export const DEFAULT_PROMPT = 'A high quality photo of a face';

function fmtTime(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** A progress bar on a terminal (\r redraws), plain lines every ~10 % otherwise. */
function progressPrinter(io: CliIO, quiet: boolean) {
  const tty = !!process.stderr.isTTY;
  let lastPct = -1;
  return (p: { step: number; total: number; t: number; elapsedMs: number; residual?: number }) => {
    if (quiet) return;
    const eta = (p.elapsedMs / p.step) * (p.total - p.step);
    const res = p.residual !== undefined ? `, residual ${p.residual.toPrecision(4)}` : '';
    const pct = Math.floor((100 * p.step) / p.total);
    if (tty) {
      const width = 30;
      const fill = Math.round((width * p.step) / p.total);
      process.stderr.write(`\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${p.step}/${p.total} t=${p.t} ${fmtTime(p.elapsedMs)} elapsed, ETA ${fmtTime(eta)}${res}   `);
      if (p.step === p.total) process.stderr.write('\n');
    } else if (pct >= lastPct + 10 || p.step === p.total || p.step === 1) {
      lastPct = pct;
      io.err(`step ${p.step}/${p.total} (t=${p.t}) ${fmtTime(p.elapsedMs)} elapsed, ETA ${fmtTime(eta)}${res}`);
    }
  };
}

function upload(engine: Engine, img: Image8, name: string): Tensor {
  const { data, shape } = imageToCHW(toRgb8(img));
  return engine.tensor(data, shape, 'f32', name);
}

export async function runRestore(o: RestoreCliOptions, io: CliIO): Promise<number> {
  if (!o.input && !o.groundTruth) throw new SiloError('restore: give --input <measurement> or --ground-truth <image> with --task');
  const engine = await Engine.create();
  io.out(engine.summary());
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts > 1) process.exit(130);
    io.err('\nstopping after the current step (Ctrl-C again to exit now)');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  const owned: Tensor[] = [];
  let loaded: Awaited<ReturnType<typeof loadRestoreModels>> | undefined;
  let operatorToDispose: { dispose(): void } | undefined;
  try {
    const t0 = performance.now();
    loaded = await loadRestoreModels(engine, {
      model: o.model,
      golden: o.golden,
      operator: o.operator,
      sigmaEmb: o.sigmaEmb,
      prompt: o.prompt,
      negativePrompt: o.negativePrompt,
      needUncond: o.cfg !== 1,
      method: o.method,
      log: (l) => io.out(l),
    });
    for (const n of loaded.notes) io.out(n);
    const loadMs = performance.now() - t0;
    const { models } = loaded;
    const f = models.vae.downFactor;

    // The image size: the operator's latent size fixes it for SILO; else --size or the input's own.
    const opSize = loaded.operatorLatentSize ? loaded.operatorLatentSize * f : undefined;
    const srFactor = o.task === 'sr4' || o.task === 'avgpool4' ? 4 : o.task === 'sr8' ? 8 : 1;
    let size = o.size ?? opSize;
    const gtImage = o.groundTruth ? await readImageFile(o.groundTruth) : undefined;
    const inImage = o.input ? await readImageFile(o.input) : undefined;
    if (!size) size = gtImage ? Math.min(gtImage.width, gtImage.height) : Math.min(inImage!.width, inImage!.height) * srFactor;
    size = Math.floor(size / f) * f;
    if (size < f) throw new SiloError(`restore: image size ${size} is smaller than the VAE factor ${f}`);
    if (opSize && size !== opSize) throw new SiloError(`restore: this operator works on ${opSize}x${opSize} images (latent ${loaded.operatorLatentSize}); --size ${o.size} does not match`);

    const motionKernel = o.kernel ? await loadBlurKernel(await (await import('node:fs/promises')).readFile(o.kernel), o.kernel) : undefined;
    const setup = makeDegradation(engine, o.task, size, size, { sigma: o.sigma, eta: o.eta, motionKernel, seed: o.seed });
    operatorToDispose = setup.operator;
    const A = setup.operator;
    io.out(setup.description);

    // The ground truth (resized and centre-cropped to size) and the measurement y.
    let x: Tensor | undefined;
    let y: Tensor;
    if (gtImage) {
      const gt = resizeAndCenterCrop(toRgb8(gtImage), size, size);
      x = upload(engine, gt, 'ground_truth');
      owned.push(x);
      if (o.task === 'jpeg10') {
        // The real codec, entropy coding included; then the noise on the GPU.
        const jpeg = jpegRoundTrip(gt.data, size, size, 10);
        const clean = upload(engine, { width: size, height: size, channels: 3, data: jpeg }, 'jpeg');
        y = (await runProgram(engine, 'measurement', (rec) => addMeasurementNoise(rec, clean, setup.sigma, o.seed, 1))).result;
        clean.dispose();
      } else {
        y = (await runProgram(engine, 'measurement', (rec) => rec.engine.tidy(() => addMeasurementNoise(rec, A.apply(rec, x!), setup.sigma, o.seed, 1)))).result;
      }
    } else {
      const want = size / srFactor;
      const img = toRgb8(inImage!);
      if (img.width !== want || img.height !== want) throw new SiloError(`${o.input}: the measurement must be ${want}x${want} for task ${o.task} at size ${size}, got ${img.width}x${img.height}`);
      y = upload(engine, img, 'measurement');
    }
    owned.push(y);
    if (o.measurementOut) {
      await writePng(o.measurementOut, chwToRgb8(await y.read(), y.shape));
      io.out(`measurement written to ${o.measurementOut}`);
    }

    io.out(`${o.method}: ${o.steps} steps, eta ${setup.eta}, seed ${o.seed}, sigma ${setup.sigma}, ${size}x${size} image, latent ${size / f}x${size / f}`);
    const result = await restore(engine, models, A, y, {
      method: o.method,
      steps: o.steps,
      seed: o.seed,
      eta: setup.eta,
      sigma: setup.sigma,
      clampW: o.clampW,
      guidanceScale: o.cfg,
      cfgFix: o.cfgFix,
      forward: o.forward,
      activationBudget: o.activationBudgetMiB !== undefined ? o.activationBudgetMiB * 2 ** 20 : undefined,
      imageSize: [size, size],
      residualEvery: Math.max(1, Math.floor(o.steps / 20)),
      onProgress: progressPrinter(io, o.quiet),
      signal: controller.signal,
    });
    owned.push(result.image, result.latent);
    const out = await result.image.read();
    await writePng(o.out, chwToRgb8(out, result.image.shape));
    io.out(`restored image written to ${o.out}`);

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
    for (const [k, v] of Object.entries(metrics)) io.out(`${k}: ${v === null ? 'n/a (image too small)' : v.toFixed(3)}`);
    printPhases(io, result.report, loadMs);
    if (o.report) {
      const { writeFile } = await import('node:fs/promises');
      const report = {
        settings: { ...o, task: o.task, eta: setup.eta, sigma: setup.sigma, size, degradation: setup.description },
        adapter: engine.summary(),
        models: loaded.notes,
        timings_ms: { load: loadMs, encode: result.report.encode.ms, loop: result.report.loop.ms, per_step: result.report.loop.perStepMs, decode: result.report.decode.ms },
        dispatches: {
          encode: result.report.encode.dispatches,
          loop: result.report.loop.dispatches,
          per_step: result.report.loop.perStepDispatches,
          autoencoder_in_loop: result.report.loop.autoencoderDispatches,
          decode: result.report.decode.dispatches,
        },
        peak_gpu_bytes: { encode: result.report.encode.peakLiveBytes, loop_step: result.report.loop.peakLiveBytes, decode: result.report.decode.peakLiveBytes, pool_live: engine.pool.stats.peakLiveBytes, pool_allocated: engine.pool.stats.peakAllocatedBytes },
        unet_forward: { mode: result.report.forwardMode, kept_activation_bytes: result.report.unetTapeBytes },
        residuals: result.report.residuals,
        final_residual: result.report.finalResidual,
        metrics,
      };
      await writeFile(o.report, JSON.stringify(report, null, 1) + '\n');
      io.out(`report written to ${o.report}`);
    }
    return 0;
  } catch (e) {
    if (e instanceof RestoreAbortedError) {
      io.err(e.message);
      return 130;
    }
    throw e;
  } finally {
    process.off('SIGINT', onSigint);
    for (const t of owned) t.dispose();
    operatorToDispose?.dispose();
    loaded?.dispose();
    engine.destroy();
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

function printPhases(io: CliIO, r: RestoreReport, loadMs: number): void {
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  io.out(`load ${fmtTime(loadMs)}; encode ${r.encode.ms.toFixed(0)} ms (${r.encode.dispatches} dispatches, peak ${mib(r.encode.peakLiveBytes)})`);
  io.out(
    `loop ${r.steps} steps in ${(r.loop.ms / 1000).toFixed(1)} s (${r.loop.perStepMs.toFixed(0)} ms/step, ${r.loop.perStepDispatches.toFixed(0)} dispatches/step, ` +
      `${r.loop.autoencoderDispatches} autoencoder dispatches in the loop, peak ${mib(r.loop.peakLiveBytes)})`,
  );
  io.out(`UNet forward mode: ${r.forwardMode} (a reuse step keeps ${mib(r.unetTapeBytes)} of activations)`);
  io.out(`decode ${r.decode.ms.toFixed(0)} ms (${r.decode.dispatches} dispatches, peak ${mib(r.decode.peakLiveBytes)})`);
}

export function parseRestoreArgs(values: Record<string, string | boolean | undefined>): RestoreCliOptions {
  const num = (k: string, dflt?: number, int = false): number | undefined => {
    const v = values[k];
    if (v === undefined) return dflt;
    const n = Number(v);
    if (typeof v !== 'string' || !Number.isFinite(n) || (int && !Number.isInteger(n))) throw new SiloError(`--${k} ${String(v)}: expected ${int ? 'an integer' : 'a number'}`);
    return n;
  };
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const method = (str('method') ?? 'silo-cnn') as RestoreMethod;
  if (!RESTORE_METHODS.includes(method)) throw new SiloError(`--method ${method}: expected one of ${RESTORE_METHODS.join(', ')}`);
  const task = str('task') ?? 'gaussian_blur';
  if (!isDegradationTask(task)) throw new SiloError(`--task ${task}: expected one of ${DEGRADATION_TASKS.join(', ')}`);
  if (task === 'motion_blur' && !str('kernel')) throw new SiloError('--task motion_blur needs --kernel <file> (.npy, text, .safetensors or PNG)');
  const forward = str('forward') ?? 'auto';
  if (forward !== 'auto' && forward !== 'reuse' && forward !== 'recompute') throw new SiloError(`--forward ${forward}: expected auto, reuse or recompute`);
  const budget = num('activation-budget');
  if (budget !== undefined && budget < 0) throw new SiloError(`--activation-budget ${budget}: expected a non-negative number of MiB`);
  const steps = num('steps', 999, true)!;
  if (steps < 1 || steps > 999) throw new SiloError(`--steps ${steps}: expected 1..999 (DDPM with SD-1.5's leading spacing cannot step 1000)`);
  return {
    model: str('model'),
    golden: str('golden'),
    operator: str('operator'),
    sigmaEmb: str('sigma-emb'),
    method,
    input: str('input'),
    groundTruth: str('ground-truth'),
    task,
    kernel: str('kernel'),
    size: num('size', undefined, true),
    steps,
    eta: num('eta'),
    seed: num('seed', 1000, true)!,
    sigma: num('sigma', 0.02)!,
    prompt: str('prompt') ?? DEFAULT_PROMPT,
    negativePrompt: str('negative-prompt'),
    cfg: num('cfg', 1)!,
    cfgFix: values['cfg-fix'] === true,
    clampW: values['no-clamp'] !== true,
    forward,
    activationBudgetMiB: budget,
    out: str('out') ?? 'restored.png',
    report: str('report'),
    measurementOut: str('measurement-out'),
    quiet: values['quiet'] === true,
  };
}

export const RESTORE_OPTIONS = {
  model: { type: 'string' },
  golden: { type: 'string' },
  operator: { type: 'string' },
  'sigma-emb': { type: 'string' },
  method: { type: 'string' },
  input: { type: 'string' },
  'ground-truth': { type: 'string' },
  task: { type: 'string' },
  kernel: { type: 'string' },
  size: { type: 'string' },
  steps: { type: 'string' },
  eta: { type: 'string' },
  seed: { type: 'string' },
  sigma: { type: 'string' },
  prompt: { type: 'string' },
  'negative-prompt': { type: 'string' },
  cfg: { type: 'string' },
  'cfg-fix': { type: 'boolean' },
  'no-clamp': { type: 'boolean' },
  forward: { type: 'string' },
  'activation-budget': { type: 'string' },
  out: { type: 'string', short: 'o' },
  report: { type: 'string' },
  'measurement-out': { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
} as const;

export const RESTORE_USAGE = [
  'silo restore (--model <diffusers-dir> | --golden <../shared/golden>) [--method silo-cnn|silo-rg|latent-dps|psld]',
  '             (--ground-truth <image> | --input <measurement>) [--task ' + DEGRADATION_TASKS.join('|') + ']',
  '             [--operator <file|dir>] [--steps 999] [--eta X] [--seed 1000] [--sigma 0.02] [--size N] [--out restored.png] [--report r.json]',
  '  --model        a diffusers Stable Diffusion 1.5 folder (unet, vae, text_encoder, tokenizer, scheduler)',
  '  --golden       the tiny golden models (unet_mini, vae_mini, clip_text_mini, silo_cnn) for CPU-sized runs',
  '  --operator     silo-cnn: CNN weights .safetensors (silo convert a .pt first); silo-rg: folder with config.json + weights.safetensors',
  '  --sigma-emb    <file.safetensors>[:tensor] e_sigma when the UNet cannot make it (golden: silo_cnn/golden.safetensors by default)',
  '  --ground-truth degrade this image with --task (plus --sigma noise) first; metrics are reported against it',
  '  --input        an already degraded measurement (size / factor for SR)',
  '  --task         the degradation (default gaussian_blur); motion_blur needs --kernel <file>',
  '  --eta          guidance step size (default SILO\'s for the task; latent-dps: 1.0)',
  '  --prompt, --negative-prompt, --cfg, --cfg-fix   text conditioning and classifier-free guidance (SILO default cfg 1)',
  '  --no-clamp     do not clamp w = E(y) to [-4, 4]',
  '  --forward      auto|reuse|recompute: keep the UNet activations of a step for its VJP, or recompute them (auto: reuse',
  '                 when they fit --activation-budget MiB, default 1024)',
  '  --measurement-out   also save the measurement y as a PNG',
  '  Ctrl-C stops between steps (exit 130).',
].join('\n');
