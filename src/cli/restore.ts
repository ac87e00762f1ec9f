// `silo restore`: one restoration from the command line, a thin surface on the restoration layer
// (src/restore/): this file parses and checks arguments, reads and writes files, and draws the progress
// bar; the session loads nothing itself and does the measurement, the sampling, the metrics and the report.
// Arguments and paths are checked before the GPU starts; outputs are written only when the whole run
// succeeded, each atomically (a failed run writes nothing, a failed write keeps the old file).
// Ctrl-C stops between two steps and still frees the GPU; a second Ctrl-C exits at once.

import { loadTuning } from '../engine/tuning.js';
import { cliTuningStore } from './tuning-file.js';
import { Engine } from '../engine/device.js';
import { readImageFile } from '../io/image-node.js';
import { encodePng } from '../io/png.js';
import { fsReason, removePendingTempFiles, writeFilesAtomic } from '../formats/atomic-write-node.js';
import { hasTransparency, parseBackground, toRgb8, type Rgb } from '../io/image.js';
import { isDegradationTask, DEGRADATION_TASKS, type DegradationTask } from '../solvers/degradations/tasks.js';
import { loadBlurKernel, type BlurKernel } from '../solvers/degradations/kernel-file.js';
import { RestoreAbortedError } from '../restore/loop.js';
import { RESTORE_METHODS, isRestoreMethod, samplerFor, type RestoreMethod } from '../restore/registry.js';
import { RESTORE_DEFAULTS, defaultMethod } from '../restore/defaults.js';
import { OperatorNotReleasedError, releasedOperator } from '../hub/silo-operators.js';
import { LATENT_FACTOR, checkMeasurementShape, nearestSizes } from '../restore/size.js';
import { loadModels, type WeightsDtype } from '../restore/models.js';
import type { DType } from '../engine/dtype.js';
import { resolveModelSpec, type ResolvedModels } from '../restore/models-node.js';
import { RestorationSession, type RestoreRequest } from '../restore/session.js';
import type { ForwardMode } from '../solvers/samplers/eps-model.js';
import { downloadPrinter, fmtTime, progressPrinter } from './progress.js';
import { checkPaths, PathError, type InputPath, type OutputPath } from './output-files-node.js';
import { parseNumberArg } from './numbers.js';
import { UsageError } from './usage-error.js';
import type { CliIO } from './silo.js';
import type { BatchCliOptions } from './restore-batch.js';
import { looksLikePath, parseModelRef } from '../hub/model-ref.js';

const isDirectory = async (p: string) => (await import('node:fs/promises')).stat(p).then((s) => s.isDirectory(), () => false);

export interface RestoreCliOptions {
  model?: string;
  /** --offline: a hub --model from the cache only (HF_HUB_OFFLINE=1 does the same). */
  offline?: boolean;
  /** --dataset: the released operator's training set where a task has both (inpaint_center: ffhq or coco). */
  dataset?: 'ffhq' | 'coco';
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
  /** undefined: the released operator's prompt, else SILO's FFHQ prompt. */
  prompt?: string;
  negativePrompt?: string;
  cfg: number;
  cfgFix: boolean;
  /** --clamp / --no-clamp; undefined: the released operator's setting, else clamp. */
  clampW?: boolean;
  /** Load weights that hold NaN/Inf (the sampler's checks then name the first bad step and stage). */
  allowNonFiniteWeights: boolean;
  forward: ForwardMode | 'auto';
  /** --dtype: the weights' storage (f16: mixed precision, activations and gradients f32; auto: f16 with shader-f16). */
  weights: WeightsDtype;
  /** MiB of UNet activations 'auto' may keep per step. */
  activationBudgetMiB?: number;
  out: string;
  report?: string;
  measurementOut?: string;
  /** What transparent pixels of the input images are composited over (default white). */
  background: Rgb;
  quiet: boolean;
  /** --batch: many images into --out-dir (restore-batch.ts); --input/--ground-truth/--out are then unused. */
  batch?: BatchCliOptions;
}

const hex = (c: Rgb) => '#' + c.map((v) => v.toString(16).padStart(2, '0')).join('');

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

export async function readInput(flag: string, path: string): Promise<Uint8Array> {
  try {
    const { readFile } = await import('node:fs/promises');
    return await readFile(path);
  } catch (e) {
    throw new PathError(`--${flag} ${path}: ${fsReason(e)}`);
  }
}

/** Reads an input image as RGB, compositing any transparency over the chosen background (and saying so). */
export async function readRgb(path: string, background: Rgb, io: CliIO) {
  const img = await readImageFile(path);
  if (hasTransparency(img)) io.out(`${path}: has transparent pixels; composited over ${hex(background)} (--background)`);
  return toRgb8(img, background);
}

/** The session request for these options (images already read). */
export function restoreRequest(o: RestoreCliOptions, images: { groundTruth?: RestoreRequest['groundTruth']; measurement?: RestoreRequest['measurement'] }, motionKernel?: BlurKernel): RestoreRequest {
  return {
    task: o.task,
    method: o.method,
    groundTruth: images.groundTruth,
    measurement: images.measurement,
    groundTruthName: o.groundTruth,
    measurementName: o.input,
    motionKernel,
    size: o.size,
    steps: o.steps,
    eta: o.eta,
    seed: o.seed,
    sigma: o.sigma,
    prompt: o.prompt,
    negativePrompt: o.negativePrompt,
    cfg: o.cfg,
    cfgFix: o.cfgFix,
    clampW: o.clampW,
    forward: o.forward,
    activationBudget: o.activationBudgetMiB !== undefined ? o.activationBudgetMiB * 2 ** 20 : undefined,
  };
}

/**
 * The models these options name, resolved to folders: a hub prior and SILO's released operator are
 * downloaded here, before the GPU starts (a download problem never costs a device).
 */
export async function resolveModels(o: RestoreCliOptions, io: CliIO): Promise<ResolvedModels> {
  return resolveModelSpec({
    task: o.task,
    method: o.method,
    dataset: o.dataset,
    model: o.model,
    offline: o.offline,
    golden: o.golden,
    operator: o.operator,
    operatorKind: samplerFor(o.method).operator,
    sigmaEmb: o.sigmaEmb,
    allowNonFinite: o.allowNonFiniteWeights,
    onDownload: downloadPrinter(io, o.quiet),
    log: (l) => io.out(l),
  });
}

/** Loads resolved models into a session; the released operator's settings become the request defaults. */
export async function openSession(
  engine: Engine,
  resolved: ResolvedModels,
  io: CliIO,
  weights: WeightsDtype,
): Promise<{ session: RestorationSession; loadMs: number; weights: DType; operatorDefaults?: RestoreRequest['operatorDefaults'] }> {
  const t0 = performance.now();
  const { spec, provenance, released } = resolved;
  const models = await loadModels(engine, { ...spec, weights });
  for (const n of models.notes) io.out(n);
  const operator = released && { ...released.release, checkpoint: released.entry.path, dataset: released.entry.dataset, script: released.entry.script };
  const operatorDefaults = released && { eta: released.entry.eta, prompt: released.entry.prompt, clampW: released.entry.clamp, source: `SILO's ${released.entry.script}` };
  return { session: new RestorationSession(engine, models, { model: provenance, operator }), loadMs: performance.now() - t0, weights: models.weights, operatorDefaults };
}

/** Ctrl-C: the first stops between two steps (through the returned signal), a second exits at once. */
export function interruptHandler(io: CliIO): { signal: AbortSignal; release(): void } {
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
  return { signal: controller.signal, release: () => process.off('SIGINT', onSigint) };
}

/** The CLI's own settings for the report (the session adds the resolved ones). */
export function cliSettings(o: RestoreCliOptions): Record<string, unknown> {
  const { background, quiet: _quiet, batch: _batch, ...rest } = o;
  return { ...rest, background: hex(background) };
}

export async function runRestore(o: RestoreCliOptions, io: CliIO): Promise<number> {
  // Everything that can be checked without the GPU is, before it starts: paths, images, the kernel.
  // --model: a path is checked with the other inputs; a repo id is validated here, before any work.
  const modelIsFolder = o.model === undefined || looksLikePath(o.model) || (await parseModelRef(o.model, isDirectory)).kind === 'folder';
  const paths = restorePaths(o, modelIsFolder);
  await checkPaths(paths.inputs, paths.outputs);
  const groundTruth = o.groundTruth ? await readRgb(o.groundTruth, o.background, io) : undefined;
  const measurement = o.input ? await readRgb(o.input, o.background, io) : undefined;
  checkMeasurementShape({ task: o.task, size: o.size, measurement: measurement && [measurement.width, measurement.height], measurementName: o.input });
  const motionKernel: BlurKernel | undefined = o.kernel ? await loadBlurKernel(await readInput('kernel', o.kernel), o.kernel) : undefined;

  const resolved = await resolveModels(o, io);
  const engine = await Engine.create();
  // Kernel choices `silo tune` measured on this adapter, if any (a damaged or foreign table is reported and skipped).
  await loadTuning(engine.tuning, cliTuningStore(), (l) => io.err(l));
  io.out(engine.summary());
  const interrupt = interruptHandler(io);
  let session: RestorationSession | undefined;
  try {
    const opened = await openSession(engine, resolved, io, o.weights);
    session = opened.session;
    const result = await session.run({ ...restoreRequest(o, { groundTruth, measurement }, motionKernel), operatorDefaults: opened.operatorDefaults }, {
      onProgress: progressPrinter(io, o.quiet),
      signal: interrupt.signal,
      log: (l) => io.out(l),
    });
    io.out(`load ${fmtTime(opened.loadMs)}`);
    // Outputs are kept in memory and written only once the whole run has succeeded.
    const outputs: { path: string; bytes: Uint8Array; what: string }[] = [];
    if (o.measurementOut) outputs.push({ path: o.measurementOut, bytes: await encodePng(result.measurement), what: 'measurement' });
    outputs.push({ path: o.out, bytes: await encodePng(result.image), what: 'restored image' });
    if (o.report) {
      const r = result.report as { settings: object; timings_ms: object };
      const report = { ...r, settings: { ...cliSettings(o), weights: opened.weights, ...r.settings }, timings_ms: { load: opened.loadMs, ...r.timings_ms } };
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
    interrupt.release();
    session?.dispose();
    engine.destroy();
  }
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
  const task = str('task') ?? 'gaussian_blur';
  if (!isDegradationTask(task)) throw new UsageError(`--task ${task}: expected one of ${DEGRADATION_TASKS.join(', ')}`);
  const operatorPath = str('operator');
  const datasetName = str('dataset');
  if (datasetName !== undefined && datasetName !== 'ffhq' && datasetName !== 'coco') throw new UsageError(`--dataset ${datasetName}: expected ffhq or coco`);
  const dataset = datasetName as 'ffhq' | 'coco' | undefined;
  const released = () => {
    try {
      return releasedOperator(task, str('method'), dataset).method;
    } catch (e) {
      if (e instanceof OperatorNotReleasedError) throw new UsageError(e.message);
      throw e;
    }
  };
  // No --method: what the models given imply, else the method of the operator SILO released for the task.
  const methodName = str('method') ?? defaultMethod({ operator: operatorPath === undefined ? undefined : operatorPath.endsWith('.safetensors') ? 'file' : 'folder', golden: !!str('golden') }) ?? released();
  if (!isRestoreMethod(methodName)) throw new UsageError(`--method ${methodName}: expected one of ${RESTORE_METHODS.join(', ')}`);
  const method: RestoreMethod = methodName;
  const forward = str('forward') ?? 'auto';
  if (forward !== 'auto' && forward !== 'reuse' && forward !== 'recompute') throw new UsageError(`--forward ${forward}: expected auto, reuse or recompute`);

  const size = num('size', { integer: true, above: 0, what: 'an image side in pixels' });
  if (size !== undefined && size % LATENT_FACTOR !== 0) {
    throw new UsageError(`--size ${size}: expected a multiple of ${LATENT_FACTOR} (the VAE's latent factor); nearest valid sizes: ${nearestSizes(size)}`);
  }
  const steps = num('steps', { integer: true, min: 1, max: 999, what: 'a number of steps (DDPM with leading spacing cannot step 1000)' }) ?? RESTORE_DEFAULTS.steps;
  const eta = num('eta', { above: 0, what: 'a step size' });
  const seed = num('seed', { integer: true, min: 0, what: 'a non-negative integer seed' }) ?? RESTORE_DEFAULTS.seed;
  const sigma = num('sigma', { min: 0, what: 'a noise level' }) ?? RESTORE_DEFAULTS.sigma;
  const cfg = num('cfg', { what: 'a guidance scale' }) ?? RESTORE_DEFAULTS.cfg;
  const budget = num('activation-budget', { above: 0, what: 'a number of MiB' });
  const weights = str('dtype') ?? RESTORE_DEFAULTS.weights;
  if (weights !== 'f32' && weights !== 'f16' && weights !== 'auto') throw new UsageError(`--dtype ${weights}: expected f32, f16 or auto`);
  let background: Rgb;
  try {
    background = parseBackground(str('background') ?? 'white');
  } catch (e) {
    throw new UsageError(`--${(e as Error).message}`);
  }

  const sampler = samplerFor(method);
  const isSilo = sampler.space === 'latent';
  conflict(str('model') && str('golden'), '--model and --golden both given; choose one set of models');
  const batch = str('batch');
  if (batch !== undefined) {
    for (const f of ['input', 'ground-truth', 'out', 'report', 'measurement-out']) conflict(values[f] !== undefined, `--${f} does not apply to --batch (each item's image and report go to --out-dir)`);
    conflict(!str('out-dir'), '--batch needs --out-dir <folder> (each item writes <id>.png and <id>.json there)');
  } else {
    for (const f of ['out-dir', 'shard', 'batch-as']) conflict(values[f] !== undefined, `--${f} only applies to --batch`);
  }
  const batchAs = str('batch-as') ?? 'input';
  conflict(batchAs !== 'input' && batchAs !== 'ground-truth', `--batch-as ${batchAs}: expected input or ground-truth`);
  conflict(batch === undefined && !str('input') && !str('ground-truth'), 'give --input <measurement> or --ground-truth <image> (degraded with --task), or --batch <folder|list.jsonl>');
  conflict(str('input') && str('ground-truth'), '--input and --ground-truth both given; --input is a measurement, --ground-truth an image to degrade: choose one');
  conflict(task === 'motion_blur' && !str('kernel'), '--task motion_blur needs --kernel <file> (.npy, text, .safetensors or PNG)');
  conflict(task !== 'motion_blur' && str('kernel'), `--kernel is only used by --task motion_blur (the task is ${task})`);
  conflict(!isSilo && str('operator'), `--operator is only used by silo-cnn and silo-rg (the method is ${method})`);
  conflict(!isSilo && str('sigma-emb'), `--sigma-emb is only used by silo-cnn and silo-rg (the method is ${method})`);
  conflict(method === 'silo-rg' && !operatorPath && str('golden'), 'method silo-rg with --golden needs --operator <folder with config.json and weights.safetensors>');
  // A latent method without --operator takes SILO's released one: say now if there is none.
  if (isSilo && !operatorPath && !str('golden')) released();
  conflict(values['clamp'] === true && values['no-clamp'] === true, '--clamp and --no-clamp both given');
  conflict(dataset !== undefined && (!isSilo || operatorPath !== undefined || str('golden') !== undefined), '--dataset picks one of SILO\'s released operators: it applies to silo-cnn/silo-rg without --operator and --golden');
  conflict((values['clamp'] === true || values['no-clamp'] === true) && !isSilo, `--clamp/--no-clamp only apply to silo-cnn and silo-rg (they clamp w = E(y)); the method is ${method}`);
  conflict(!sampler.usesEta && eta !== undefined, `--eta does not apply to ${method} (it steps with its own weights)`);
  conflict(cfg === 1 && str('negative-prompt') !== undefined, '--negative-prompt has no effect with --cfg 1 (no classifier-free guidance); set --cfg too');
  conflict(cfg === 1 && values['cfg-fix'] === true, '--cfg-fix has no effect with --cfg 1 (no classifier-free guidance); set --cfg too');
  conflict(values['offline'] === true && str('golden'), '--offline applies to downloads (a hub --model, SILO\'s released operators), not to --golden');
  conflict(forward !== 'auto' && budget !== undefined, `--activation-budget only applies to --forward auto (got --forward ${forward})`);

  return {
    model: str('model'),
    offline: values['offline'] === true,
    dataset,
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
    prompt: str('prompt'),
    negativePrompt: str('negative-prompt'),
    cfg,
    cfgFix: values['cfg-fix'] === true,
    clampW: values['no-clamp'] === true ? false : values['clamp'] === true ? true : undefined,
    allowNonFiniteWeights: values['allow-nonfinite-weights'] === true,
    forward,
    weights,
    activationBudgetMiB: budget,
    out: str('out') ?? 'restored.png',
    report: str('report'),
    measurementOut: str('measurement-out'),
    background,
    quiet: values['quiet'] === true,
    ...(batch !== undefined ? { batch: { batch, outDir: str('out-dir')!, shard: str('shard'), batchAs: batchAs as 'input' | 'ground-truth' } } : {}),
  };
}

export const RESTORE_OPTIONS = {
  model: { type: 'string' },
  offline: { type: 'boolean' },
  dataset: { type: 'string' },
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
  clamp: { type: 'boolean' },
  'allow-nonfinite-weights': { type: 'boolean' },
  forward: { type: 'string' },
  'activation-budget': { type: 'string' },
  dtype: { type: 'string' },
  out: { type: 'string', short: 'o' },
  report: { type: 'string' },
  'measurement-out': { type: 'string' },
  background: { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
  batch: { type: 'string' },
  'out-dir': { type: 'string' },
  shard: { type: 'string' },
  'batch-as': { type: 'string' },
} as const;

export const RESTORE_USAGE = [
  'silo restore [<measurement>] [--task ' + DEGRADATION_TASKS.join('|') + '] [--model <diffusers-dir|url|org/name[@rev]> | --golden <../shared/golden>]',
  '             [--method silo-cnn|silo-rg|latent-dps|psld] (--input <measurement> | --ground-truth <image> | --batch <folder|list.jsonl> --out-dir D [--shard i/N])',
  '             [--operator <file|dir>] [--steps 999] [--eta X] [--seed 1000] [--sigma 0.02] [--size N] [--out restored.png] [--report r.json]',
  '  <measurement>  the degraded photo to restore (as --input)',
  '  SILO\'s own weights by default: without --operator, silo-cnn/silo-rg take the operator SILO released for --task',
  '                 (silo pull; e.g. sr4 -> the SR x4 readout operator, sr8 -> the SR x8 CNN), and without --model the',
  '                 prior its script samples with (stablediffusionapi/realistic-vision-v51 from the hub); fetched on',
  '                 first use with progress, cached',
  '  --model        a diffusers Stable Diffusion 1.5 folder (unet, vae, text_encoder, tokenizer, scheduler), its http(s) URL,',
  '                 or a Hugging Face repo id org/name[@revision] (an existing folder wins): fetched into the hub cache',
  '                 (HF_HUB_CACHE, HF_HOME; HF_ENDPOINT; HF_TOKEN for gated repos), fp16 weights preferred, resumable',
  '  --offline      hub models and SILO\'s operators from the caches only (as HF_HUB_OFFLINE=1); names anything missing',
  '  --dataset      ffhq|coco: which released operator where SILO trained one on each (inpaint_center, sr4; default ffhq)',
  '  --method       default: silo-rg for a --operator folder, silo-cnn for a .safetensors file or --golden, else the',
  '                 method of the operator SILO released for the task',
  '  --golden       the tiny golden models (unet_mini, vae_mini, clip_text_mini, silo_cnn) for CPU-sized runs',
  '  --operator     silo-cnn: CNN weights .safetensors (DegradationModel or the "preserve" network; silo convert a .pt first);',
  '                 silo-rg: folder with config.json + weights.safetensors',
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
  '  --clamp, --no-clamp   clamp w = E(y) to [-4, 4] or not (default: as SILO\'s script for the released operator;',
  '                 otherwise clamp)',
  '  --allow-nonfinite-weights   load weights holding NaN/Inf (default: refuse, naming file and tensor); a step or',
  '                 decode that then produces NaN/Inf still stops the run, naming the step, t and the first bad stage',
  '  --forward      auto|reuse|recompute: keep the UNet activations of a step for its VJP, or recompute them (auto: reuse',
  '                 when they fit --activation-budget MiB, > 0, default 1024)',
  '  --dtype        f32|f16|auto: the weights\' storage (default auto: f16 where the adapter has shader-f16). f16 halves',
  '                 the models\' memory; activations, kept tapes and gradients stay f32 (mixed precision)',
  '  --out, --report, --measurement-out   output files (the measurement y as a PNG): written only when the run succeeds,',
  '                 each atomically (an existing file is replaced whole or kept); they must differ from each other and',
  '                 from every input, and their folders must exist and be writable (checked before the run starts)',
  '  --batch        a folder of images (.png/.jpg) or a JSON-lines list ({"input": path} or {"ground_truth": path}, optional',
  '                 "id", "seed", "prompt"; relative paths start at the list\'s folder): all restored on one model load into',
  '                 --out-dir as <id>.png + <id>.json (the report), each pair written whole; a rerun skips finished items.',
  '                 --batch-as input|ground-truth says what a folder\'s images are (default input). A failed item is',
  '                 recorded and the batch goes on (exit 1 at the end); summary.json lists every item and mean metrics',
  '  --shard i/N    restore only items k with k mod N = i (0 <= i < N); --shard N takes i from JOB_COMPLETION_INDEX',
  '                 (a Kubernetes Indexed Job sets it): N machines cover one batch, each writing summary-i-of-N.json',
  '  Numbers are plain decimals; each flag may be given once. Ctrl-C stops between steps (exit 130), writing nothing.',
].join('\n');
