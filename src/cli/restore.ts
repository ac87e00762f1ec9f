// `silo restore`: one restoration from the command line. Loads the models (a diffusers folder + a SILO
// operator, or the tiny golden models), reads the measurement (or degrades a ground truth with a task),
// runs the chosen sampler with a progress bar, writes the PNG and a JSON report (settings, timings per
// phase, dispatch counts incl. autoencoder dispatches inside the loop, peak GPU bytes, metrics).
// Arguments and paths are checked before the GPU starts; outputs are written only when the whole run
// succeeded, each atomically (a failed run writes nothing, a failed write keeps the old file).
// Ctrl-C stops between two steps and still frees the GPU; a second Ctrl-C exits at once.

import { Engine } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import { SiloError } from '../engine/errors.js';
import { runProgram } from '../engine/recorder.js';
import { readImageFile } from '../io/image-node.js';
import { encodePng } from '../io/png.js';
import { fsReason, removePendingTempFiles, writeFilesAtomic } from '../formats/atomic-write-node.js';
import { chwToRgb8, hasTransparency, imageToCHW, parseBackground, resizeAndCenterCrop, toRgb8, type Rgb } from '../io/image.js';
import type { Image8 } from '../io/types.js';
import type { Degradation } from '../solvers/degradations/types.js';
import { isDegradationTask, makeDegradation, DEGRADATION_TASKS, type DegradationTask } from '../solvers/degradations/tasks.js';
import { loadBlurKernel, type BlurKernel } from '../solvers/degradations/kernel-file.js';
import { addMeasurementNoise } from '../solvers/degradations/noise.js';
import { jpegRoundTrip } from '../solvers/degradations/jpeg.js';
import { consistencyPsnr, msSsim, psnr, psnrY, ssim, unitFromSigned } from '../solvers/metrics.js';
import { restore, RESTORE_METHODS, RestoreAbortedError, type RestoreMethod, type RestoreReport } from '../solvers/restore.js';
import type { ForwardMode } from '../solvers/samplers/eps-model.js';
import { loadRestoreModels } from './restore-models.js';
import { formatDownloadProgress } from '../hub/progress-text.js';
import type { FileProgress } from '../hub/download-node.js';
import { checkPaths, PathError, type InputPath, type OutputPath } from './output-files-node.js';
import { parseNumberArg } from './numbers.js';
import { UsageError } from './usage-error.js';
import type { CliIO } from './silo.js';
import { looksLikePath, parseModelRef } from '../hub/model-ref.js';

const isDirectory = async (p: string) => (await import('node:fs/promises')).stat(p).then((s) => s.isDirectory(), () => false);

export interface RestoreCliOptions {
  model?: string;
  /** --offline: a hub --model from the cache only (HF_HUB_OFFLINE=1 does the same). */
  offline?: boolean;
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
  /** --eta as given; undefined: the method's own default (methodEta). */
  eta?: number;
  seed: number;
  sigma: number;
  prompt: string;
  negativePrompt?: string;
  cfg: number;
  cfgFix: boolean;
  clampW: boolean;
  /** Load weights that hold NaN/Inf (the sampler's checks then name the first bad step and stage). */
  allowNonFiniteWeights: boolean;
  forward: ForwardMode | 'auto';
  /** MiB of UNet activations 'auto' may keep per step. */
  activationBudgetMiB?: number;
  out: string;
  report?: string;
  measurementOut?: string;
  /** What transparent pixels of the input images are composited over (default white). */
  background: Rgb;
  quiet: boolean;
}

/** Image sizes must be multiples of SD's VAE factor (8), checked again against the loaded VAE. */
export const LATENT_FACTOR = 8;
/** Latent-DPS's step size when --eta is not given (restore()'s default for the method). */
export const LATENT_DPS_ETA = 1.0;

/**
 * The eta a method runs with and where it comes from: --eta when given, else SILO's per-task value
 * (undefined here: makeDegradation supplies it), Latent-DPS's 1.0; PSLD has no eta (omega, gamma).
 */
export function methodEta(o: Pick<RestoreCliOptions, 'method' | 'eta'>): { eta?: number; from: string } {
  if (o.method === 'psld') return { from: 'not used: PSLD steps with its own omega 1 and gamma 0.1' };
  if (o.eta !== undefined) return { eta: o.eta, from: '--eta' };
  if (o.method === 'latent-dps') return { eta: LATENT_DPS_ETA, from: 'Latent-DPS default' };
  return { from: "SILO's default for the task" };
}

const hex = (c: Rgb) => '#' + c.map((v) => v.toString(16).padStart(2, '0')).join('');

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
  const { data, shape } = imageToCHW(img);
  return engine.tensor(data, shape, 'f32', name);
}

/** Download progress: a redrawn line on a terminal, else a line per file at its end. */
function downloadPrinter(io: CliIO, quiet: boolean) {
  const tty = !!process.stderr.isTTY;
  return (p: FileProgress) => {
    if (quiet) return;
    const end = p.total !== null && p.bytes === p.total;
    if (tty) process.stderr.write(`\r${formatDownloadProgress(p)}   ${end ? '\n' : ''}`);
    else if (end) io.err(formatDownloadProgress(p));
  };
}

/** The paths a run reads and writes, for checkPaths. `modelIsFolder` false: --model is a hub repo id or a URL. */
export function restorePaths(o: RestoreCliOptions, modelIsFolder = true): { inputs: InputPath[]; outputs: OutputPath[] } {
  const inputs: InputPath[] = [];
  if (o.model && modelIsFolder) inputs.push({ flag: 'model', path: o.model, folder: true });
  if (o.golden) inputs.push({ flag: 'golden', path: o.golden, folder: true });
  if (o.operator) inputs.push({ flag: 'operator', path: o.operator });
  if (o.sigmaEmb) inputs.push({ flag: 'sigma-emb', path: o.sigmaEmb.split(':')[0]! }); // file[:tensor], as the loader splits it
  if (o.input) inputs.push({ flag: 'input', path: o.input });
  if (o.groundTruth) inputs.push({ flag: 'ground-truth', path: o.groundTruth });
  if (o.kernel) inputs.push({ flag: 'kernel', path: o.kernel });
  const outputs: OutputPath[] = [{ flag: 'out', path: o.out }];
  if (o.report) outputs.push({ flag: 'report', path: o.report });
  if (o.measurementOut) outputs.push({ flag: 'measurement-out', path: o.measurementOut });
  return { inputs, outputs };
}

async function readInput(flag: string, path: string): Promise<Uint8Array> {
  try {
    const { readFile } = await import('node:fs/promises');
    return await readFile(path);
  } catch (e) {
    throw new PathError(`--${flag} ${path}: ${fsReason(e)}`);
  }
}

/** Reads an input image as RGB, compositing any transparency over the chosen background (and saying so). */
async function readRgb(path: string, o: RestoreCliOptions, io: CliIO) {
  const img = await readImageFile(path);
  if (hasTransparency(img)) io.out(`${path}: has transparent pixels; composited over ${hex(o.background)} (--background)`);
  return toRgb8(img, o.background);
}

export async function runRestore(o: RestoreCliOptions, io: CliIO): Promise<number> {
  // Everything that can be checked without the GPU is, before it starts: paths, images, the kernel.
  // --model: a path is checked with the other inputs; a repo id is validated here, before any work.
  const modelIsFolder = o.model === undefined || looksLikePath(o.model) || (await parseModelRef(o.model, isDirectory)).kind === 'folder';
  const paths = restorePaths(o, modelIsFolder);
  await checkPaths(paths.inputs, paths.outputs);
  const gtImage = o.groundTruth ? await readRgb(o.groundTruth, o, io) : undefined;
  const inImage = o.input ? await readRgb(o.input, o, io) : undefined;
  const srFactor = o.task === 'sr4' || o.task === 'avgpool4' ? 4 : o.task === 'sr8' ? 8 : 1;
  if (inImage && inImage.width !== inImage.height) throw new SiloError(`${o.input}: the measurement must be square, got ${inImage.width}x${inImage.height}`);
  if (inImage && o.size !== undefined && inImage.width * srFactor !== o.size) {
    throw new SiloError(`${o.input}: the measurement must be ${o.size / srFactor}x${o.size / srFactor} for task ${o.task} at --size ${o.size}, got ${inImage.width}x${inImage.height}`);
  }
  const motionKernel: BlurKernel | undefined = o.kernel ? await loadBlurKernel(await readInput('kernel', o.kernel), o.kernel) : undefined;
  const { eta: etaChoice, from: etaFrom } = methodEta(o);

  const engine = await Engine.create();
  io.out(engine.summary());
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts > 1) {
      // process.exit skips finally blocks: remove a half-saved output's temporary file here.
      removePendingTempFiles();
      process.exit(130);
    }
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
      offline: o.offline,
      onDownload: downloadPrinter(io, o.quiet),
      golden: o.golden,
      operator: o.operator,
      sigmaEmb: o.sigmaEmb,
      prompt: o.prompt,
      negativePrompt: o.negativePrompt,
      needUncond: o.cfg !== 1,
      method: o.method,
      log: (l) => io.out(l),
      allowNonFinite: o.allowNonFiniteWeights,
    });
    for (const n of loaded.notes) io.out(n);
    const loadMs = performance.now() - t0;
    const { models } = loaded;
    const f = models.vae.downFactor;

    // The image size: the operator's latent size fixes it for SILO; else --size, else the largest
    // multiple of the VAE factor that the ground truth (or the measurement times the SR factor) covers.
    const opSize = loaded.operatorLatentSize ? loaded.operatorLatentSize * f : undefined;
    if (o.size !== undefined && o.size % f !== 0) throw new SiloError(`restore: --size ${o.size} is not a multiple of this VAE's factor ${f}`);
    let size = o.size ?? opSize;
    if (!size) size = Math.floor((gtImage ? Math.min(gtImage.width, gtImage.height) : Math.min(inImage!.width, inImage!.height) * srFactor) / f) * f;
    if (size < f) throw new SiloError(`restore: the image is smaller than the VAE factor ${f}`);
    if (opSize && size !== opSize) throw new SiloError(`restore: this operator works on ${opSize}x${opSize} images (latent ${loaded.operatorLatentSize}); --size ${o.size} does not match`);

    const setup = makeDegradation(engine, o.task, size, size, { sigma: o.sigma, eta: etaChoice, motionKernel, seed: o.seed });
    operatorToDispose = setup.operator;
    const A = setup.operator;
    // The eta the sampler gets; the task's description names SILO's eta, which PSLD does not use.
    const eta = o.method === 'psld' ? undefined : setup.eta;
    io.out(eta === undefined ? setup.description.replace(/, eta [^,]*$/, '') : setup.description);

    // The ground truth (resized and centre-cropped to size) and the measurement y.
    let x: Tensor | undefined;
    let y: Tensor;
    if (gtImage) {
      const gt = resizeAndCenterCrop(gtImage, size, size);
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
      const img = inImage!;
      if (img.width !== want || img.height !== want) throw new SiloError(`${o.input}: the measurement must be ${want}x${want} for task ${o.task} at size ${size}, got ${img.width}x${img.height}`);
      y = upload(engine, img, 'measurement');
    }
    owned.push(y);
    // Outputs are kept in memory and written only once the whole run has succeeded.
    const outputs: { path: string; bytes: Uint8Array; what: string }[] = [];
    if (o.measurementOut) outputs.push({ path: o.measurementOut, bytes: await encodePng(chwToRgb8(await y.read(), y.shape)), what: 'measurement' });

    io.out(`${o.method}: ${o.steps} steps, eta ${eta ?? 'n/a'} (${etaFrom}), seed ${o.seed}, sigma ${setup.sigma}, ${size}x${size} image, latent ${size / f}x${size / f}`);
    const result = await restore(engine, models, A, y, {
      method: o.method,
      steps: o.steps,
      seed: o.seed,
      eta,
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
    outputs.push({ path: o.out, bytes: await encodePng(chwToRgb8(out, result.image.shape)), what: 'restored image' });

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
      const report = {
        settings: { ...o, task: o.task, eta: eta ?? null, eta_from: etaFrom, sigma: setup.sigma, size, degradation: setup.description, background: hex(o.background) },
        adapter: engine.summary(),
        models: loaded.notes,
        ...(loaded.model ? { model: loaded.model } : {}),
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
      outputs.push({ path: o.report, bytes: new TextEncoder().encode(JSON.stringify(report, null, 1) + '\n'), what: 'report' });
    }
    await writeFilesAtomic(outputs);
    for (const w of outputs) io.out(`${w.what} written to ${w.path}`);
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

/** Nearest valid sizes for a message: the multiples of LATENT_FACTOR around n. */
function nearestSizes(n: number): string {
  const lo = Math.floor(n / LATENT_FACTOR) * LATENT_FACTOR;
  return lo < LATENT_FACTOR ? `${LATENT_FACTOR}` : `${lo} or ${lo + LATENT_FACTOR}`;
}

/**
 * The restore options from parseArgs' values, all checked before anything loads: numbers strictly
 * (parseNumberArg) and in range, names against their lists, and flags that conflict or would be
 * silently ignored are a UsageError.
 */
export function parseRestoreArgs(values: Record<string, string | boolean | undefined>): RestoreCliOptions {
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const num = (k: string, rule: Parameters<typeof parseNumberArg>[2]): number | undefined => {
    const v = str(k);
    return v === undefined ? undefined : parseNumberArg(k, v, rule);
  };
  const conflict = (cond: unknown, message: string) => {
    if (cond) throw new UsageError(message);
  };
  const method = (str('method') ?? 'silo-cnn') as RestoreMethod;
  if (!RESTORE_METHODS.includes(method)) throw new UsageError(`--method ${method}: expected one of ${RESTORE_METHODS.join(', ')}`);
  const task = str('task') ?? 'gaussian_blur';
  if (!isDegradationTask(task)) throw new UsageError(`--task ${task}: expected one of ${DEGRADATION_TASKS.join(', ')}`);
  const forward = str('forward') ?? 'auto';
  if (forward !== 'auto' && forward !== 'reuse' && forward !== 'recompute') throw new UsageError(`--forward ${forward}: expected auto, reuse or recompute`);

  const size = num('size', { integer: true, above: 0, what: 'an image side in pixels' });
  if (size !== undefined && size % LATENT_FACTOR !== 0) {
    throw new UsageError(`--size ${size}: expected a multiple of ${LATENT_FACTOR} (the VAE's latent factor); nearest valid sizes: ${nearestSizes(size)}`);
  }
  const steps = num('steps', { integer: true, min: 1, max: 999, what: 'a number of steps (DDPM with leading spacing cannot step 1000)' }) ?? 999;
  const eta = num('eta', { above: 0, what: 'a step size' });
  const seed = num('seed', { integer: true, min: 0, what: 'a non-negative integer seed' }) ?? 1000;
  const sigma = num('sigma', { min: 0, what: 'a noise level' }) ?? 0.02;
  const cfg = num('cfg', { what: 'a guidance scale' }) ?? 1;
  const budget = num('activation-budget', { above: 0, what: 'a number of MiB' });
  let background: Rgb;
  try {
    background = parseBackground(str('background') ?? 'white');
  } catch (e) {
    throw new UsageError(`--${(e as Error).message}`);
  }

  const isSilo = method === 'silo-cnn' || method === 'silo-rg';
  conflict(!str('model') && !str('golden'), 'give --model <diffusers folder> or --golden <../shared/golden>');
  conflict(str('model') && str('golden'), '--model and --golden both given; choose one set of models');
  conflict(!str('input') && !str('ground-truth'), 'give --input <measurement> or --ground-truth <image> (degraded with --task)');
  conflict(str('input') && str('ground-truth'), '--input and --ground-truth both given; --input is a measurement, --ground-truth an image to degrade: choose one');
  conflict(task === 'motion_blur' && !str('kernel'), '--task motion_blur needs --kernel <file> (.npy, text, .safetensors or PNG)');
  conflict(task !== 'motion_blur' && str('kernel'), `--kernel is only used by --task motion_blur (the task is ${task})`);
  conflict(!isSilo && str('operator'), `--operator is only used by silo-cnn and silo-rg (the method is ${method})`);
  conflict(!isSilo && str('sigma-emb'), `--sigma-emb is only used by silo-cnn and silo-rg (the method is ${method})`);
  conflict(method === 'silo-rg' && !str('operator'), 'method silo-rg needs --operator <folder with config.json and weights.safetensors>');
  conflict(method === 'silo-cnn' && !str('operator') && !str('golden'), 'method silo-cnn needs --operator <cnn weights.safetensors>');
  conflict(method === 'psld' && eta !== undefined, '--eta does not apply to psld (it steps with its own omega 1 and gamma 0.1)');
  conflict(cfg === 1 && str('negative-prompt') !== undefined, '--negative-prompt has no effect with --cfg 1 (no classifier-free guidance); set --cfg too');
  conflict(cfg === 1 && values['cfg-fix'] === true, '--cfg-fix has no effect with --cfg 1 (no classifier-free guidance); set --cfg too');
  conflict(values['offline'] === true && !str('model'), '--offline only applies to a hub repo id given with --model');
  conflict(forward !== 'auto' && budget !== undefined, `--activation-budget only applies to --forward auto (got --forward ${forward})`);

  return {
    model: str('model'),
    offline: values['offline'] === true,
    golden: str('golden'),
    operator: str('operator'),
    sigmaEmb: str('sigma-emb'),
    method,
    input: str('input'),
    groundTruth: str('ground-truth'),
    task,
    kernel: str('kernel'),
    size,
    steps,
    eta,
    seed,
    sigma,
    prompt: str('prompt') ?? DEFAULT_PROMPT,
    negativePrompt: str('negative-prompt'),
    cfg,
    cfgFix: values['cfg-fix'] === true,
    clampW: values['no-clamp'] !== true,
    allowNonFiniteWeights: values['allow-nonfinite-weights'] === true,
    forward,
    activationBudgetMiB: budget,
    out: str('out') ?? 'restored.png',
    report: str('report'),
    measurementOut: str('measurement-out'),
    background,
    quiet: values['quiet'] === true,
  };
}

export const RESTORE_OPTIONS = {
  model: { type: 'string' },
  offline: { type: 'boolean' },
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
  'allow-nonfinite-weights': { type: 'boolean' },
  forward: { type: 'string' },
  'activation-budget': { type: 'string' },
  out: { type: 'string', short: 'o' },
  report: { type: 'string' },
  'measurement-out': { type: 'string' },
  background: { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
} as const;

export const RESTORE_USAGE = [
  'silo restore (--model <diffusers-dir|url|org/name[@rev]> | --golden <../shared/golden>) [--method silo-cnn|silo-rg|latent-dps|psld]',
  '             (--ground-truth <image> | --input <measurement>) [--task ' + DEGRADATION_TASKS.join('|') + ']',
  '             [--operator <file|dir>] [--steps 999] [--eta X] [--seed 1000] [--sigma 0.02] [--size N] [--out restored.png] [--report r.json]',
  '  --model        a diffusers Stable Diffusion 1.5 folder (unet, vae, text_encoder, tokenizer, scheduler), its http(s) URL,',
  '                 or a Hugging Face repo id org/name[@revision] (an existing folder wins): fetched into the hub cache',
  '                 (HF_HUB_CACHE, HF_HOME; HF_ENDPOINT; HF_TOKEN for gated repos), fp16 weights preferred, resumable',
  '  --offline      a repo id from the cache only (as HF_HUB_OFFLINE=1); names any file that is missing',
  '  --golden       the tiny golden models (unet_mini, vae_mini, clip_text_mini, silo_cnn) for CPU-sized runs',
  '  --operator     silo-cnn: CNN weights .safetensors (silo convert a .pt first); silo-rg: folder with config.json + weights.safetensors',
  '  --sigma-emb    <file.safetensors>[:tensor] e_sigma when the UNet cannot make it (golden: silo_cnn/golden.safetensors by default)',
  '  --ground-truth degrade this image with --task (plus --sigma noise) first; metrics are reported against it',
  '  --input        an already degraded measurement (size / factor for SR); not together with --ground-truth',
  '  --task         the degradation (default gaussian_blur); motion_blur needs --kernel <file>',
  '  --size         image side, a multiple of 8 (default: the operator\'s; else the image\'s shorter side rounded down to a multiple of 8)',
  '  --steps        1..999 DDPM steps (default 999)',
  '  --eta          guidance step size > 0 (default: silo-cnn/silo-rg SILO\'s for the task, 0.5, or 1.0 for inpainting;',
  '                 latent-dps 1.0; psld has none: it steps with omega 1, gamma 0.1). The report records the eta used.',
  '  --seed         a non-negative integer (default 1000); --sigma measurement noise >= 0 (default 0.02)',
  '  --background   white|black|#rrggbb: what transparent pixels of the input images are composited over (default white)',
  '  --prompt, --negative-prompt, --cfg, --cfg-fix   text conditioning and classifier-free guidance (SILO default cfg 1;',
  '                 --negative-prompt and --cfg-fix need --cfg other than 1)',
  '  --no-clamp     do not clamp w = E(y) to [-4, 4]',
  '  --allow-nonfinite-weights   load weights holding NaN/Inf (default: refuse, naming file and tensor); a step or',
  '                 decode that then produces NaN/Inf still stops the run, naming the step, t and the first bad stage',
  '  --forward      auto|reuse|recompute: keep the UNet activations of a step for its VJP, or recompute them (auto: reuse',
  '                 when they fit --activation-budget MiB, > 0, default 1024)',
  '  --out, --report, --measurement-out   output files (the measurement y as a PNG): written only when the run succeeds,',
  '                 each atomically (an existing file is replaced whole or kept); they must differ from each other and',
  '                 from every input, and their folders must exist and be writable (checked before the run starts)',
  '  Numbers are plain decimals; each flag may be given once. Ctrl-C stops between steps (exit 130), writing nothing.',
].join('\n');
