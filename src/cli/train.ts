// `silo train`: trains SILO's CNN operator (for a TAESD-family autoencoder or SD's VAE) or its readout
// operator (for a Stable Diffusion prior) and a degradation on a folder of images (the session logic is
// src/solvers/training/session.ts; here: arguments, files, progress, Ctrl-C). The output folder gets
// checkpoint.safetensors (every --checkpoint-every steps, at the end and on Ctrl-C; written atomically),
// the trained operator as restore --operator reads it (operator.safetensors for the CNN, the folder
// operator/ with config.json and weights.safetensors for the readout operator), loss.csv,
// validation.json and curve.svg.

import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../engine/device.js';
import { readSafetensorsFile } from '../formats/safetensors-node.js';
import { writeFileAtomic } from '../formats/atomic-write-node.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import { dirFolder } from '../formats/folder-node.js';
import { SiloError } from '../engine/errors.js';
import { loadTrainModels, type TrainModelSource } from '../solvers/training/models.js';
import { readTrainingImages } from '../solvers/training/data-node.js';
import { CNN_DEFAULTS, READOUT_DEFAULTS, TrainSession, type TrainSettings } from '../solvers/training/session.js';
import { curveSvg, lossCsv } from '../solvers/training/curve.js';
import type { StepReport, ValidationReport } from '../solvers/training/trainer.js';
import { isDegradationTask, DEGRADATION_TASKS } from '../solvers/degradations/tasks.js';
import { serializeSafetensors } from '../formats/safetensors.js';
import { parseNumberArg } from './numbers.js';
import { loadBlurKernel } from '../solvers/degradations/kernel-file.js';
import { UsageError } from './usage-error.js';
import { fmtTime } from './progress.js';
import { interruptHandler, readInput } from './restore.js';
import type { CliIO } from './silo.js';

export const TRAIN_USAGE = [
  'silo train --task <task> (--encoder <encoder.safetensors> | --model <sd folder>) --data <folder|list.txt|image>... --out <folder> [options]',
  '  trains a SILO latent operator H so that H(E(x), e_sigma) matches E(A(x) + sigma n)',
  '  --operator cnn|readout the operator (default cnn). readout: SILO-RG\'s operator on the prior UNet\'s readout',
  '                         features of E(x) at t = 0 (empty prompt); needs --model; AdamW, lr 2e-4, sigma-max 0.1',
  `  --task                 the degradation A (${DEGRADATION_TASKS.join(', ')}); motion_blur needs --kernel <file>`,
  '  --kernel F             motion_blur\'s kernel (.npy, text, .safetensors or PNG; normalised on load)',
  '  --encoder / --decoder  a TAESD-family autoencoder (.safetensors; convert a .pth with silo convert); the decoder',
  '                         adds decoded PSNR to validation; e_sigma is the sinusoid of SILO\'s pseudo-timestep (width 320)',
  '  --model                a diffusers Stable Diffusion folder instead: its VAE (posterior sample x scaling_factor) is the',
  '                         encoder and decoder, its UNet\'s time embedding gives e_sigma (SILO\'s setup; for the CNN only',
  '                         that part of the UNet is loaded; the readout operator loads the UNet and the text encoder too)',
  '  --data                 training images: folders (searched recursively), .txt lists or image files; repeatable',
  '  --validate             held-out images, same forms; removed from the training set; repeatable',
  '  --size N               crop side in pixels (default 128); the latent side is N / the encoder factor',
  '  --steps N              train until N optimizer steps (default 1000; a resumed run counts on)',
  '  --batch N              crops per micro-batch (default 16)   --accumulate K  micro-batches per step (default 1)',
  '  --lr X                 Adam learning rate (default 1e-4; readout 2e-4)   --clip X  clip the global gradient norm',
  '  --schedule constant|linear|cosine  [--warmup N]             learning-rate schedule (decay over --steps)',
  '  --loss l1|mse          (default l1)   --clamp X|none  clamp the target to [-X, X] (default 4)',
  '  --sigma-max X          sigma ~ U(0, X) per batch (default 0.04; readout 0.1)   --val-sigma X  held-out sigma (default 0)',
  '  --jitter b,c,s,h|none  colour jitter (default 0.1,0.1,0.1,0.02)   --seed N (default 0)',
  '  --width N              the operator\'s hidden widths x N (default 1: SILO\'s module, made for 4-channel latents;',
  '                         wider latents such as TAEF2\'s 32 channels pass through 16 at width 1)',
  '  --crop-scale lo,hi     RandomResizedCrop\'s area fraction (default 0.75,1, SILO\'s; lower lo adds zoomed-in crops)',
  '  --cache N              encode N fixed crops once and train on them (default 0: new crops every step)',
  '  --cache-file F         save the cache to F, or reuse it if F exists and matches the run',
  '  --val-every N / --checkpoint-every N   (default 100 / 100)',
  '  --resume F             continue from a checkpoint (same settings and data; bit for bit on the same adapter)',
  '  --quiet                no per-step lines',
  '  Ctrl-C stops after the current step and writes a checkpoint; a second Ctrl-C exits at once',
].join('\n');

export const TRAIN_OPTIONS = {
  operator: { type: 'string' },
  task: { type: 'string' },
  kernel: { type: 'string' },
  encoder: { type: 'string' },
  decoder: { type: 'string' },
  model: { type: 'string' },
  data: { type: 'string', multiple: true },
  validate: { type: 'string', multiple: true },
  out: { type: 'string' },
  size: { type: 'string' },
  steps: { type: 'string' },
  batch: { type: 'string' },
  accumulate: { type: 'string' },
  lr: { type: 'string' },
  clip: { type: 'string' },
  schedule: { type: 'string' },
  warmup: { type: 'string' },
  loss: { type: 'string' },
  clamp: { type: 'string' },
  'sigma-max': { type: 'string' },
  'val-sigma': { type: 'string' },
  jitter: { type: 'string' },
  'crop-scale': { type: 'string' },
  width: { type: 'string' },
  seed: { type: 'string' },
  cache: { type: 'string' },
  'cache-file': { type: 'string' },
  'val-every': { type: 'string' },
  'checkpoint-every': { type: 'string' },
  resume: { type: 'string' },
  quiet: { type: 'boolean' },
} as const;

type Values = { [K in keyof typeof TRAIN_OPTIONS]?: (typeof TRAIN_OPTIONS)[K] extends { multiple: true } ? string[] : (typeof TRAIN_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

export interface TrainCliOptions {
  settings: TrainSettings;
  /** A TAESD-family encoder file, or (with `model`) undefined. */
  encoder?: string;
  decoder?: string;
  /** A diffusers SD folder (VAE + UNet time embedding). */
  model?: string;
  /** motion_blur's kernel file. */
  kernel?: string;
  data: string[];
  validate: string[];
  out: string;
  steps: number;
  valSigma: number;
  valEvery: number;
  checkpointEvery: number;
  cacheFile?: string;
  resume?: string;
  quiet: boolean;
}

function num(flag: string, text: string | undefined, dflt: number, rule: Parameters<typeof parseNumberArg>[2]): number {
  if (text === undefined) return dflt;
  try {
    return parseNumberArg(flag, text, rule);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** Arguments to options, every mistake a UsageError naming the flag (nothing touches the GPU or files). */
export function parseTrainArgs(v: Values): TrainCliOptions {
  const operator = v.operator ?? 'cnn';
  if (operator !== 'cnn' && operator !== 'readout') throw new UsageError(`--operator ${operator}: expected cnn or readout`);
  if (operator === 'readout' && !v.model) throw new UsageError('--operator readout reads the prior UNet\'s features: it needs --model (a diffusers Stable Diffusion folder with unet, vae, text_encoder and tokenizer)');
  if (operator === 'readout' && v.width !== undefined) throw new UsageError('--width widens the CNN operator only (the readout operator keeps SILO\'s widths)');
  const defaults = operator === 'readout' ? READOUT_DEFAULTS : CNN_DEFAULTS;
  if (!v.task) throw new UsageError('--task is required');
  if (!isDegradationTask(v.task)) throw new UsageError(`--task ${v.task}: expected one of ${DEGRADATION_TASKS.join(', ')}`);
  if (v.task === 'motion_blur' && !v.kernel) throw new UsageError('--task motion_blur needs --kernel <file> (.npy, text, .safetensors or PNG)');
  if (v.task !== 'motion_blur' && v.kernel) throw new UsageError(`--kernel is only used by --task motion_blur (the task is ${v.task})`);
  if (!v.encoder && !v.model) throw new UsageError('--encoder (a TAESD-family encoder .safetensors, e.g. taef2_encoder.safetensors) or --model (a diffusers SD folder) is required');
  if (v.encoder && v.model) throw new UsageError('--encoder and --model: give one autoencoder');
  if (v.decoder && v.model) throw new UsageError('--decoder goes with --encoder; --model brings its own VAE decoder');
  if (!v.data?.length) throw new UsageError('--data is required (a folder, a .txt list or images)');
  if (!v.out) throw new UsageError('--out is required (the folder for checkpoints, the operator and the curves)');
  const steps = num('steps', v.steps, 1000, { integer: true, min: 1 });
  const schedule = v.schedule ?? 'constant';
  if (schedule !== 'constant' && schedule !== 'linear' && schedule !== 'cosine') throw new UsageError(`--schedule ${schedule}: expected constant, linear or cosine`);
  const loss = v.loss ?? 'l1';
  if (loss !== 'l1' && loss !== 'mse') throw new UsageError(`--loss ${loss}: expected l1 or mse`);
  let clamp: [number, number] | undefined = CNN_DEFAULTS.clamp;
  if (v.clamp === 'none') clamp = undefined;
  else if (v.clamp !== undefined) {
    const c = num('clamp', v.clamp, 4, { above: 0 });
    clamp = [-c, c];
  }
  let jitter = CNN_DEFAULTS.jitter;
  if (v.jitter === 'none') jitter = {};
  else if (v.jitter !== undefined) {
    const parts = v.jitter.split(',');
    if (parts.length !== 4) throw new UsageError(`--jitter ${v.jitter}: expected brightness,contrast,saturation,hue (e.g. 0.1,0.1,0.1,0.02) or none`);
    const [b, c, s, h] = parts.map((p, i) => num('jitter', p.trim(), 0, { min: 0, max: i === 3 ? 0.5 : undefined }));
    jitter = { brightness: b!, contrast: c!, saturation: s!, hue: h! };
  }
  let cropScale = CNN_DEFAULTS.cropScale;
  if (v['crop-scale'] !== undefined) {
    const parts = v['crop-scale'].split(',');
    if (parts.length !== 2) throw new UsageError(`--crop-scale ${v['crop-scale']}: expected lo,hi (e.g. 0.75,1)`);
    const [lo, hi] = parts.map((p) => num('crop-scale', p.trim(), 1, { above: 0, max: 1 }));
    if (lo! > hi!) throw new UsageError(`--crop-scale ${v['crop-scale']}: lo must not exceed hi`);
    cropScale = [lo!, hi!];
  }
  const width = num('width', v.width, 1, { integer: true, min: 1, max: 16 });
  const warmup = num('warmup', v.warmup, 0, { integer: true, min: 0 });
  if (schedule !== 'constant' && warmup >= steps) throw new UsageError(`--warmup ${warmup}: must be below --steps ${steps} for a ${schedule} schedule`);
  const settings: TrainSettings = {
    ...defaults,
    operator,
    task: v.task,
    size: num('size', v.size, 128, { integer: true, min: 8 }),
    batch: num('batch', v.batch, CNN_DEFAULTS.batch, { integer: true, min: 1 }),
    micro: num('accumulate', v.accumulate, 1, { integer: true, min: 1 }),
    lr: num('lr', v.lr, defaults.lr, { above: 0 }),
    schedule,
    warmup,
    ...(schedule !== 'constant' ? { scheduleSteps: steps } : {}),
    ...(v.clip !== undefined ? { maxGradNorm: num('clip', v.clip, 0, { above: 0 }) } : {}),
    loss,
    clamp,
    sigmaRange: [0, num('sigma-max', v['sigma-max'], defaults.sigmaRange[1], { min: 0 })],
    jitter,
    cropScale,
    // Width 1 is SILO's module: left out (the session's metadata writes it as no width either).
    ...(width > 1 ? { width } : {}),
    cache: num('cache', v.cache, 0, { integer: true, min: 0 }),
    seed: num('seed', v.seed, 0, { integer: true, min: 0, max: 0xffffffff }),
  };
  if (v['cache-file'] && settings.cache === 0) throw new UsageError('--cache-file needs --cache N (the number of fixed crops)');
  return {
    settings,
    encoder: v.encoder,
    decoder: v.decoder,
    model: v.model,
    kernel: v.kernel,
    data: v.data,
    validate: v.validate ?? [],
    out: v.out,
    steps,
    valSigma: num('val-sigma', v['val-sigma'], 0, { min: 0 }),
    valEvery: num('val-every', v['val-every'], 100, { integer: true, min: 1 }),
    checkpointEvery: num('checkpoint-every', v['checkpoint-every'], 100, { integer: true, min: 0 }),
    cacheFile: v['cache-file'],
    resume: v.resume,
    quiet: !!v.quiet,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** loss.csv rows of an earlier run up to `step` (a resumed run's history continues them). */
async function earlierSteps(path: string, step: number): Promise<StepReport[]> {
  if (!(await exists(path))) return [];
  const rows = (await readFile(path, 'utf8')).trim().split('\n').slice(1);
  return rows
    .map((r) => r.split(','))
    .filter((c) => Number(c[0]) <= step)
    .map((c) => ({ step: Number(c[0]), loss: Number(c[1]), lr: Number(c[2]), sigmas: c[3] ? [Number(c[3])] : [] }));
}

/** validation.json entries of an earlier run before `step` (the resumed run validates `step` again). */
async function earlierValidations(path: string, step: number): Promise<ValidationReport[]> {
  if (!(await exists(path))) return [];
  let v: unknown;
  try {
    v = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return [];
  }
  return Array.isArray(v) ? (v as ValidationReport[]).filter((r) => typeof r?.step === 'number' && r.step < step) : [];
}

export async function runTrain(o: TrainCliOptions, io: CliIO): Promise<number> {
  // Files first (clear errors before the GPU starts).
  const train = await readTrainingImages(o.data, '--data');
  const validate = o.validate.length ? await readTrainingImages(o.validate, '--validate') : [];
  if (o.model && !(await exists(o.model))) throw new SiloError(`--model ${o.model}: no such folder (a diffusers Stable Diffusion folder)`);
  const source: TrainModelSource = o.model
    ? { kind: 'sd', folder: dirFolder(o.model) }
    : { kind: 'taesd', encoder: await readSafetensorsFile(o.encoder!), decoder: o.decoder ? await readSafetensorsFile(o.decoder) : undefined };
  const resume = o.resume ? await readSafetensorsFile(o.resume) : undefined;
  const motionKernel = o.kernel ? await loadBlurKernel(await readInput('kernel', o.kernel), o.kernel) : undefined;
  const cacheFile: SafetensorsFile | undefined = o.cacheFile && (await exists(o.cacheFile)) ? await readSafetensorsFile(o.cacheFile) : undefined;
  await mkdir(o.out, { recursive: true });

  const engine = await Engine.create();
  io.out(engine.summary());
  const owned: { dispose(): void }[] = [];
  const interrupt = interruptHandler(io);
  let session: TrainSession | undefined;
  try {
    const models = await loadTrainModels(engine, source, o.settings.operator);
    owned.push(models);
    const { codec, embedder, prior } = models;
    let lastCache = 0;
    session = await TrainSession.create(engine, {
      settings: o.settings,
      codec,
      embedder,
      train,
      validate,
      resume,
      cacheFile,
      ...(motionKernel ? { motionKernel } : {}),
      ...(prior ? { prior } : {}),
      onCacheProgress: (done, total) => {
        if (!o.quiet && (done === total || done - lastCache >= Math.max(1, total / 10))) {
          lastCache = done;
          io.err(`encoding the cache: ${done}/${total} crops`);
        }
      },
    });
    const held = new Set(validate.map((v) => v.name));
    io.out(`training ${o.settings.operator} operator for ${codec.name}, task ${o.settings.task}: ${train.filter((t) => !held.has(t.name)).length} training images, ${validate.length} held out, ${o.settings.size}x${o.settings.size} crops, ${session.source.label}`);
    if (session.cache && o.cacheFile && !cacheFile) {
      const c = session.cache.toSafetensors();
      await writeFileAtomic(o.cacheFile, serializeSafetensors(c.tensors, c.metadata));
      io.out(`latent cache written to ${o.cacheFile}`);
    }
    const startStep = session.trainer.opt.step;
    if (resume) io.out(`resumed at step ${startStep} from ${o.resume}`);
    const history = await earlierSteps(join(o.out, 'loss.csv'), resume ? startStep : -1);
    const validations = await earlierValidations(join(o.out, 'validation.json'), resume ? startStep : -1);
    const writeCurves = async () => {
      await writeFileAtomic(join(o.out, 'loss.csv'), new TextEncoder().encode(lossCsv(history)));
      await writeFileAtomic(join(o.out, 'validation.json'), new TextEncoder().encode(JSON.stringify(validations, null, 1) + '\n'));
      await writeFileAtomic(join(o.out, 'curve.svg'), new TextEncoder().encode(curveSvg(history, validations, `${o.settings.task}, ${codec.name}`)));
    };
    const t0 = performance.now();
    const tty = !!process.stderr.isTTY;
    const result = await session.run({
      steps: o.steps,
      checkpointEvery: o.checkpointEvery,
      validation: validate.length ? { sigma: o.valSigma, every: o.valEvery } : undefined,
      shouldStop: () => interrupt.signal.aborted,
      saveCheckpoint: async (bytes, step) => {
        await writeFileAtomic(join(o.out, 'checkpoint.safetensors'), bytes);
        await writeCurves();
        if (!o.quiet) io.err(`${tty ? '\n' : ''}checkpoint at step ${step} written to ${join(o.out, 'checkpoint.safetensors')}`);
      },
      onStep: (r) => {
        history.push(r);
        if (o.quiet) return;
        const done = r.step - startStep;
        const elapsed = performance.now() - t0;
        const eta = (elapsed / done) * (o.steps - r.step);
        const recent = history.slice(-20);
        const avg = recent.reduce((a, s) => a + s.loss, 0) / recent.length;
        const line = `step ${r.step}/${o.steps} loss ${r.loss.toPrecision(4)} (mean of last ${recent.length}: ${avg.toPrecision(4)}) lr ${r.lr.toPrecision(3)} ${fmtTime(elapsed)} elapsed, ETA ${fmtTime(eta)}`;
        if (tty) process.stderr.write(`\r${line}   `);
        else if (done === 1 || r.step % Math.max(1, Math.round(o.steps / 50)) === 0 || r.step === o.steps) io.err(line);
      },
      onValidation: (v) => {
        validations.push(v);
        const dec = v.psnr !== undefined ? `; decoded PSNR vs A(x) ${v.psnr.toFixed(2)} dB (identity ${v.identityPsnr!.toFixed(2)} dB); through the autoencoder E(A(D(E(x)))) ${v.roundTripL1!.toPrecision(4)}` : '';
        io.out(`${tty ? '\n' : ''}validation at step ${v.step}: held-out latent L1 ${v.latentL1.toPrecision(4)} (identity ${v.identityL1.toPrecision(4)}, ratio ${(v.latentL1 / v.identityL1).toFixed(3)})${dec}`);
      },
    });
    await writeCurves();
    const folderConfig = session.operatorFolderConfig();
    let written: string;
    if (folderConfig) {
      // The readout operator as restore --operator reads it: a folder with config.json and weights.safetensors.
      written = join(o.out, 'operator');
      await mkdir(written, { recursive: true });
      await writeFileAtomic(join(written, 'weights.safetensors'), await session.exportOperator());
      await writeFileAtomic(join(written, 'config.json'), new TextEncoder().encode(folderConfig));
    } else {
      written = join(o.out, 'operator.safetensors');
      await writeFileAtomic(written, await session.exportOperator());
    }
    io.out(`${result.stopped ? 'stopped' : 'finished'} at step ${session.trainer.opt.step} after ${fmtTime(performance.now() - t0)}; operator written to ${written}`);
    return result.stopped ? 130 : 0;
  } finally {
    interrupt.release();
    session?.dispose();
    for (const m of owned) m.dispose();
  }
}
