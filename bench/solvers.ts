// Per-step cost of the four guided samplers at SD-1.5's real architecture (seeded random weights) on a
// 32x32 latent (256x256 image), all measured in the same run and printed as ratios to SILO-CNN:
//   silo-cnn    UNet forward + CNN operator + its VJP + UNet VJP            (no autoencoder in the step)
//   silo-rg     UNet forward with readout features + aggregation network + its VJP + UNet VJP to the features
//   latent-dps  UNet forward + VAE decode + A + A^T + VAE decode VJP + UNet VJP
//   psld        latent-dps + the gluing term: VAE encode + encode VJP and a second decoder cotangent
// Each step is one recorded program (runProgram with wait), exactly as restore() runs it.
//
// The "recomputation" axis is the UNet's forward mode (unetEpsModel's `forward`):
//   reuse      one UNet forward per step; the input of every UNet stage is kept from that forward and the
//              VJP walks back from those saved inputs;
//   recompute  the forward keeps nothing; the VJP re-runs the UNet forward to rebuild the stage inputs
//              (two UNet forwards per step, nothing held across the operator's / autoencoder's work).
// In both modes every stage's internals (a ResNet's norms and convs, a transformer's attention) are
// recomputed from the stage input inside the VJP (stage checkpointing); the VAE VJPs always work that
// way too (no saved decoder pass): the mode changes only what the UNet keeps between forward and VJP.
//
// Operators at a 32x32 latent: SILO's DegradationModel and AggregationNetwork hard-code a 64x64 latent
// (LayerNorm([C, 64, 64]), Linear(32 -> 64*64) / Linear(1280 -> 64*64)). Here both are built with
// latent_size = the bench latent (32), i.e. the same layers with LayerNorm([C, 32, 32]) and
// Linear(. -> 32*32), and the readout features are resized to 32x32 (the 32x32 up-block features pass
// unchanged, the 4/8/16 ones are upsampled). That is the same per-pixel work SILO does at 64x64 scaled
// to 32x32; no SILO checkpoint has these shapes, which random weights do not need.
//
// Inputs (seeded): z_t ~ N(0, 1), DDPM noise, a text embedding ~ N(0, 1) [1, 77, D], SILO's latent
// measurement w ~ N(0, 1) [1, 4, 32, 32] (stands in for clamp(s E(y))), the pixel measurement
// y = A(x) for x ~ N(0, 0.5^2) at 256x256, e_sigma = the UNet's time embedding at SILO's pseudo-timestep.
// All models are resident for the whole run, so "peak live" includes every model's weights; "step peak"
// is the program's high-water mark above what was live when it started (weights and inputs).

import type { DType } from '../src/engine/dtype.js';
import type { Engine } from '../src/engine/device.js';
import type { Tensor } from '../src/engine/tensor.js';
import { runProgram, type ProgramReport, type Recorder } from '../src/engine/recorder.js';
import { captureProgram } from '../src/engine/replay.js';
import { stepParam, type Scalar } from '../src/engine/step-value.js';
import { randomNormal } from '../src/engine/ops/random.js';
import { WeightLoader, type LoadedModel } from '../src/models/weights.js';
import { RandomWeightSource } from '../src/models/random-weights.js';
import { UNet2DConditionModel } from '../src/models/unet/unet.js';
import { parseUNetConfig } from '../src/models/unet/config.js';
import { AutoencoderKL } from '../src/models/vae/autoencoder.js';
import { parseVaeConfig } from '../src/models/vae/config.js';
import { DegradationModel } from '../src/models/silo/cnn.js';
import { AggregationNetwork } from '../src/models/silo/readout.js';
import { aggregationConfig, degradationConfig, sd15AggregationArgs, sigmaTimestep } from '../src/models/silo/config.js';
import { DDPMScheduler } from '../src/solvers/schedulers/ddpm.js';
import { SD15_SCHEDULER_CONFIG } from '../src/solvers/schedulers/config.js';
import { makeDegradation } from '../src/solvers/degradations/tasks.js';
import type { Degradation } from '../src/solvers/degradations/types.js';
import type { DiffusionPrior } from '../src/solvers/samplers/denoiser.js';
import { unetEpsModel, type ForwardMode } from '../src/solvers/samplers/eps-model.js';
import { unetTapeBytes } from '../src/models/unet/tape-bytes.js';
import type { GuidedStep } from '../src/solvers/samplers/guided.js';
import { autoencoderDispatches } from '../src/restore/loop.js';
import { RESTORE_METHODS, samplerFor, type RestoreMethod } from '../src/restore/registry.js';
import { methodEta } from '../src/restore/defaults.js';
import type { StepInputs } from '../src/restore/sampler.js';
import { opKindBreakdown, printOpKinds, printTable, type OpKindTime, type Row } from './harness.js';
import { sd15UNetConfig, sdVaeConfig } from './models.js';
import { readFileSync } from 'node:fs';
import { GOLDEN } from './golden.js';

export const FORWARD_MODES: readonly ForwardMode[] = ['reuse', 'recompute'];
export type PixelTask = 'sr4' | 'gaussian_blur';
const PIXEL_TASKS: readonly PixelTask[] = ['sr4', 'gaussian_blur'];

export interface SolverBenchArgs {
  /** Timed steps per (method, mode); undefined: 1 on CPU adapters, 3 otherwise. */
  steps?: number;
  /** Untimed steps first (pipeline compilation). */
  warmup: number;
  /** Small widths (golden mini configs) instead of SD-1.5's: a smoke run, NOT the real architecture. */
  tiny: boolean;
  modes: ForwardMode[];
  task: PixelTask;
  /** Latent side (image side = 8x). */
  latent: number;
  /** The timestep every measured step runs at. */
  t: number;
  /** Time the last timed step's dispatches with timestamp queries and report the GPU time by kind of op. */
  profile: boolean;
  /** Replays of a captured step after the timed ones; undefined: 0 on CPU adapters, 3 otherwise. */
  replay?: number;
  /** The weights' storage: f16 is mixed precision (activations and gradients f32). */
  dtype: DType;
}

export class BenchArgsError extends Error {}

/**
 * The suite's own flags (others, such as --quick and --filter, are main.ts's and are ignored here):
 * --steps N, --warmup K, --tiny, --mode reuse|recompute|both, --task sr4|gaussian_blur, --latent N, --t T,
 * --profile, --replay K, --dtype f32|f16 (the weights' storage).
 */
export function parseSolverArgs(args: readonly string[]): SolverBenchArgs {
  const value = (flag: string): string | undefined => {
    const i = args.lastIndexOf(flag); // a later flag wins (bench/gpu.sh appends SOLVER_ARGS)
    if (i < 0) return undefined;
    const v = args[i + 1];
    if (v === undefined || v.startsWith('--')) throw new BenchArgsError(`${flag} needs a value`);
    return v;
  };
  const int = (flag: string, min: number, max = Infinity): number | undefined => {
    const v = value(flag);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new BenchArgsError(`${flag} must be an integer in [${min}, ${max}], got "${v}"`);
    return n;
  };
  const mode = value('--mode') ?? 'both';
  if (mode !== 'both' && !FORWARD_MODES.includes(mode as ForwardMode)) throw new BenchArgsError(`--mode must be reuse, recompute or both, got "${mode}"`);
  const task = value('--task') ?? 'sr4';
  if (!PIXEL_TASKS.includes(task as PixelTask)) throw new BenchArgsError(`--task must be one of ${PIXEL_TASKS.join(', ')}, got "${task}"`);
  const latent = int('--latent', 8) ?? 32;
  const dtype = value('--dtype') ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new BenchArgsError(`--dtype must be f32 or f16 (the weights' storage), got "${dtype}"`);
  // The UNet's three down-samplers and the VAE's factor 8 need a multiple of 8.
  if (latent % 8 !== 0) throw new BenchArgsError(`--latent must be a multiple of 8 (the UNet downsamples 3 times), got ${latent}`);
  return {
    steps: int('--steps', 1) ?? (args.includes('--quick') ? 1 : undefined),
    warmup: int('--warmup', 0) ?? 1,
    tiny: args.includes('--tiny'),
    modes: mode === 'both' ? [...FORWARD_MODES] : [mode as ForwardMode],
    task: task as PixelTask,
    latent,
    t: int('--t', 0, 999) ?? 500,
    profile: args.includes('--profile'),
    replay: int('--replay', 0),
    dtype,
  };
}

/** Whether `--filter text` selects this run (method name, or "method mode"). */
export function selected(method: string, mode: ForwardMode, filter?: string): boolean {
  return !filter || `${method} ${mode}`.includes(filter);
}

export interface StepSample {
  /** Record + submit + GPU done (what restore()'s loop spends per step). */
  ms: number;
  /** Submit to GPU done. */
  gpuWallMs?: number;
  /** Replays: JavaScript time to write the values, encode and submit. */
  encodeMs?: number;
  /** Replays: of which on the critical path (the submit; the rest overlapped the previous step). */
  exposedEncodeMs?: number;
}

export interface SolverResult {
  method: RestoreMethod;
  mode: ForwardMode;
  /** Set when the step could not run (e.g. a VJP the engine does not support at this architecture). */
  error?: string;
  steps: StepSample[];
  msPerStep?: number;
  /**
   * JavaScript time to record and submit one step (ms - gpuWallMs: every dispatch encoded and its
   * uniforms written from JavaScript), the median over the timed steps; the GPU time is the rest.
   */
  encodeMsPerStep?: number;
  dispatches?: number;
  autoencoderDispatches?: number;
  /** Program peak of live pooled bytes, every resident model included. */
  peakLiveBytes?: number;
  /** That peak above what was live when the step started: the step's own memory. */
  stepPeakBytes?: number;
  /** The pool's peak allocated bytes during the step (live + cached free buffers). */
  peakAllocatedBytes?: number;
  /** UNet activations kept from the forward for the VJP (reuse; 0 for recompute). */
  unetKeptBytes?: number;
  /** With --profile: the last timed step's GPU time by kind of op (one pass per dispatch, so slower). */
  profile?: OpKindTime[];
  /** Replays of the step captured once (replay.ts), as restore() runs every step after its first. */
  replays?: StepSample[];
  replayMsPerStep?: number;
  /** JavaScript time to write the step's values, re-encode its commands and submit them (median). */
  replayEncodeMsPerStep?: number;
  /** Of which not overlapped with the previous step's GPU work (median). */
  replayExposedEncodeMsPerStep?: number;
  /**
   * The same JavaScript with the GPU idle: the median of three prepares (values written, commands
   * encoded) plus the first replay's submit. On a CPU adapter the overlapped replays share the cores
   * with the "GPU" running the previous step; on a real GPU the CPU is this idle.
   */
  replayIdleEncodeMs?: number;
}

export interface RatioRow extends SolverResult {
  /** msPerStep over silo-cnn's (same mode); undefined when either is missing. */
  msRatio?: number;
  /** stepPeakBytes over silo-cnn's (same mode). */
  memRatio?: number;
}

/** Adds ratios to silo-cnn of the same forward mode. */
export function withRatios(results: readonly SolverResult[]): RatioRow[] {
  return results.map((r) => {
    const base = results.find((b) => b.method === 'silo-cnn' && b.mode === r.mode && !b.error);
    const ratio = (a?: number, b?: number) => (a !== undefined && b !== undefined && b > 0 ? a / b : undefined);
    return { ...r, msRatio: ratio(r.msPerStep, base?.msPerStep), memRatio: ratio(r.stepPeakBytes, base?.stepPeakBytes) };
  });
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * RandomWeightSource plus small CPU-side constants: WeightLoader.values() reads a tensor on the CPU
 * (AggregationNetwork's mixing_weights, folded into its dispatches at load time), which GPU-generated
 * weights cannot answer.
 */
export class BenchWeightSource extends RandomWeightSource {
  private constants = new Map<string, Float32Array>();

  constant(name: string, values: Float32Array): this {
    this.declare(name, [values.length]);
    this.constants.set(name, values);
    return this;
  }

  override getF32(name: string): Float32Array {
    const c = this.constants.get(name);
    return c ? c.slice() : super.getF32(name);
  }
}

const goldenConfig = (name: string) => JSON.parse(readFileSync(`${GOLDEN}/${name}/config.json`, 'utf8')) as Record<string, unknown>;

interface Models {
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  cnn: DegradationModel;
  readout: AggregationNetwork;
  params: Record<string, number>;
  dispose(): void;
}

async function buildModels(engine: Engine, a: SolverBenchArgs, log: (l: string) => void): Promise<Models> {
  const loaded: LoadedModel<unknown>[] = [];
  const params: Record<string, number> = {};
  const load = async <T>(label: string, src: RandomWeightSource, make: (w: WeightLoader) => T): Promise<T> => {
    const t0 = performance.now();
    const m = WeightLoader.load(engine, src, { dtype: a.dtype, activations: 'f32' }, make);
    loaded.push(m);
    await src.generated();
    const n = src.names().reduce((s, name) => s + src.info(name).shape.reduce((x, y) => x * y, 1), 0);
    params[label] = n;
    log(`${label}: ${(n / 1e6).toFixed(2)}M parameters generated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return m.model;
  };
  try {
    // SD-1.5's UNet / SD's VAE (the golden mini configs with SD's widths put back), or the mini configs.
    const unetCfg = parseUNetConfig(a.tiny ? goldenConfig('unet_mini') : sd15UNetConfig(), a.tiny ? 'unet_mini config' : 'SD-1.5 UNet config');
    const unet = await load('unet', new RandomWeightSource(1, 'UNet random weights'), (w) => new UNet2DConditionModel(w, unetCfg));
    const vaeCfg = parseVaeConfig(a.tiny ? goldenConfig('vae_mini') : sdVaeConfig());
    const vae = await load('vae', new RandomWeightSource(2, 'VAE random weights'), (w) => new AutoencoderKL(w, vaeCfg));
    const sigmaEmbDim = unet.config.timeEmbedDim;
    const cnnCfg = degradationConfig({ latent_dim: unet.config.inChannels, sigma_condition: true, layer_norm: true, latent_size: a.latent, sigma_emb_dim: sigmaEmbDim });
    const cnn = await load('silo-cnn operator', new RandomWeightSource(3, 'SILO CNN random weights'), (w) => new DegradationModel(w, cnnCfg));
    // SILO's readout features: every up-block ResNet's output, in order.
    const featureDims = unet.upBlocks.flatMap((b) => b.resnets.map((r) => r.outChannels));
    const rgCfg = aggregationConfig({ ...sd15AggregationArgs(), feature_dims: featureDims, latent_size: a.latent, sigma_emb_dim: sigmaEmbDim });
    // SILO initialises mixing_weights to ones: uniform softmax weights.
    const rgSrc = new BenchWeightSource(4, 'SILO readout random weights').constant('mixing_weights', new Float32Array(featureDims.length * rgCfg.saveTimestep.length).fill(1));
    const readout = await load('silo-rg operator', rgSrc, (w) => new AggregationNetwork(w, rgCfg));
    return { unet, vae, cnn, readout, params, dispose: () => loaded.forEach((m) => m.dispose()) };
  } catch (e) {
    loaded.forEach((m) => m.dispose());
    throw e;
  }
}

interface Inputs {
  zt: Tensor;
  noise: Tensor;
  text: Tensor;
  w: Tensor;
  y: Tensor;
  sigmaEmb: Tensor;
  sigma: number;
  A: Degradation;
  description: string;
  dispose(): void;
}

async function makeInputs(engine: Engine, m: Models, a: SolverBenchArgs): Promise<Inputs> {
  const size = a.latent * m.vae.downFactor;
  const task = makeDegradation(engine, a.task, size, size);
  const c = m.unet.config;
  const { result } = await runProgram(
    engine,
    'solvers bench inputs',
    (rec) =>
      engine.tidy(() => {
        const latent = [1, c.inChannels, a.latent, a.latent];
        const x = randomNormal(rec, [1, m.vae.config.inChannels, size, size], 21, { std: 0.5, name: 'x' });
        return {
          zt: randomNormal(rec, latent, 22, { name: 'z_t' }),
          noise: randomNormal(rec, latent, 23, { name: 'ddpm_noise' }),
          text: randomNormal(rec, [1, 77, c.crossAttentionDim[0]!], 24, { name: 'text' }),
          w: randomNormal(rec, latent, 25, { name: 'w' }),
          y: task.operator.apply(rec, x),
          sigmaEmb: m.unet.timeEmbedding(rec, sigmaTimestep(task.sigma)),
        };
      }),
    { wait: true },
  );
  return {
    ...result,
    A: task.operator,
    sigma: task.sigma,
    description: task.description,
    dispose: () => {
      for (const t of Object.values(result)) t.dispose();
      task.operator.dispose();
    },
  };
}

function stepOutputs(s: GuidedStep): Tensor[] {
  return [s.zPrev, s.eps, s.x0, s.prev, s.estimate, s.residualNorm, s.grad, ...Object.values(s.extras), (s as { glueNorm?: Tensor }).glueNorm].filter((t): t is Tensor => !!t);
}

/**
 * Captures the step once and replays it `n` times at the same timestep as restore() does: each replay is
 * encoded while the one before runs, so only its submit is on the critical path. Every replay must give
 * the captured step's residual.
 */
async function benchReplays(engine: Engine, res: SolverResult, method: RestoreMethod, mode: ForwardMode, a: SolverBenchArgs, n: number, record: (rec: Recorder, t: Scalar) => GuidedStep): Promise<void> {
  const { program } = await captureProgram(engine, `solvers/${method}/${mode}/capture`, { t: a.t }, (rec) => record(rec, stepParam('t', a.t)));
  try {
    const want = (await program.result.residualNorm.read())[0]!;
    res.replays = [];
    await engine.queue.onSubmittedWorkDone();
    const idlePrepares: number[] = [];
    for (let i = 0; i < 2; i++) {
      const p = program.prepare({ t: a.t });
      idlePrepares.push(p.encodeMs);
      p.discard();
    }
    let next = program.prepare({ t: a.t });
    idlePrepares.push(next.encodeMs);
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const running = next.submit({ wait: true });
      const ahead = i + 1 < n ? program.prepare({ t: a.t }) : undefined;
      const r = await running;
      const ms = performance.now() - t0;
      const got = (await program.result.residualNorm.read())[0]!;
      if (got !== want) throw new Error(`${method} (${mode}): replay ${i} gave the residual ${got}, the captured step ${want}`);
      res.replays.push({ ms, gpuWallMs: r.gpuWallMs, encodeMs: r.encodeMs, exposedEncodeMs: r.submitMs });
      if (ahead) next = ahead;
    }
    res.replayMsPerStep = median(res.replays.map((s) => s.ms));
    res.replayEncodeMsPerStep = median(res.replays.map((s) => s.encodeMs!));
    res.replayExposedEncodeMsPerStep = median(res.replays.map((s) => s.exposedEncodeMs!));
    res.replayIdleEncodeMs = median(idlePrepares) + res.replays[0]!.exposedEncodeMs!;
  } finally {
    program.dispose();
  }
}

async function benchMethod(engine: Engine, m: Models, inp: Inputs, method: RestoreMethod, mode: ForwardMode, a: SolverBenchArgs, steps: number, replays: number): Promise<SolverResult> {
  const scheduler = new DDPMScheduler(SD15_SCHEDULER_CONFIG);
  const prior: DiffusionPrior = { model: unetEpsModel(m.unet, { forward: mode }), scheduler, text: inp.text };
  // The step as restore() records it: the registry's sampler with the defaults table's eta for the task.
  const sampler = samplerFor(method);
  const inputs: StepInputs = {
    prior, vae: m.vae, A: inp.A, y: inp.y, w: inp.w,
    operator: sampler.makeOperator?.({ cnn: m.cnn, readout: m.readout }, inp.sigmaEmb, inp.sigma),
    eta: methodEta(method, a.task).eta,
  };
  const record = (rec: Recorder): GuidedStep => sampler.step(rec, inputs, inp.zt, a.t, inp.noise);
  const once = async (i: number, profile = false): Promise<{ sample: StepSample; report: ProgramReport; before: number; peakAllocated: number }> => {
    await engine.queue.onSubmittedWorkDone(); // nothing else in flight
    const before = engine.pool.stats.liveBytes;
    const t0 = performance.now();
    // The Recorder resets the pool's peaks when it starts, so they are this step's.
    const { result, report } = await runProgram(engine, `solvers/${method}/${mode}/${i}`, record, { wait: true, profile });
    const ms = performance.now() - t0;
    const peakAllocated = engine.pool.stats.peakAllocatedBytes;
    const outs = stepOutputs(result);
    try {
      const r = (await result.residualNorm.read())[0]!;
      if (!Number.isFinite(r)) throw new Error(`${method} (${mode}): the residual norm is ${r}`);
    } finally {
      for (const t of outs) t.dispose();
    }
    return { sample: { ms, gpuWallMs: report.gpuWallMs }, report, before, peakAllocated };
  };
  const res: SolverResult = { method, mode, steps: [], unetKeptBytes: mode === 'reuse' ? unetTapeBytes(m.unet, inp.zt.shape) : 0 };
  try {
    for (let i = 0; i < a.warmup; i++) await once(-1 - i);
    let last: Awaited<ReturnType<typeof once>> | undefined;
    for (let i = 0; i < steps; i++) {
      last = await once(i);
      res.steps.push(last.sample);
    }
    // The profiled step is extra (a pass per dispatch changes the timing), so the timed steps stay clean.
    if (a.profile && engine.hasTimestamps) res.profile = opKindBreakdown((await once(steps, true)).report.ops);
    const r = last!;
    res.msPerStep = median(res.steps.map((s) => s.ms));
    const encode = res.steps.filter((s) => s.gpuWallMs !== undefined).map((s) => s.ms - s.gpuWallMs!);
    if (encode.length) res.encodeMsPerStep = median(encode);
    res.dispatches = r.report.dispatches;
    res.autoencoderDispatches = autoencoderDispatches(r.report);
    res.peakLiveBytes = r.report.peakLiveBytes;
    res.stepPeakBytes = r.report.peakLiveBytes - r.before;
    res.peakAllocatedBytes = r.peakAllocated;
    if (replays > 0) await benchReplays(engine, res, method, mode, a, replays, (rec, t) => sampler.step(rec, inputs, inp.zt, t, inp.noise));
  } catch (e) {
    res.error = (e as Error).message;
  }
  return res;
}

export interface SolverBenchOptions {
  filter?: string;
  args?: readonly string[];
}

export async function runSolverBench(engine: Engine, opts: SolverBenchOptions = {}): Promise<object> {
  const a = parseSolverArgs(opts.args ?? []);
  const steps = a.steps ?? (engine.info.software ? 1 : 3);
  const replays = a.replay ?? (engine.info.software ? 0 : 3);
  const log = (l: string) => console.log(`  ${l}`);
  const arch = a.tiny ? 'TINY smoke run: golden mini UNet/VAE widths, NOT the SD-1.5 architecture' : "SD-1.5's UNet and SD's VAE (seeded random weights)";
  console.log(`${arch}; ${a.dtype === 'f16' ? 'f16 weights, f32 activations and gradients' : 'f32'}; ${a.latent}x${a.latent} latent; t = ${a.t}; ${a.warmup} warm-up + ${steps} timed step(s) + ${replays} replay(s) per method and mode`);
  const m = await buildModels(engine, a, log);
  const residentBytes = engine.pool.stats.liveBytes;
  log(`resident models: ${mib(residentBytes).toFixed(0)} MiB of ${a.dtype} weights`);
  const inp = await makeInputs(engine, m, a);
  log(`pixel baselines' A: ${inp.description}`);
  const results: SolverResult[] = [];
  try {
    for (const mode of a.modes) {
      for (const method of RESTORE_METHODS) {
        if (!selected(method, mode, opts.filter)) continue;
        // Free buffers cached by the previous method so that its footprint does not count as this one's.
        engine.pool.trim();
        const t0 = performance.now();
        const r = await benchMethod(engine, m, inp, method, mode, a, steps, replays);
        const took = ((performance.now() - t0) / 1000).toFixed(1);
        if (r.error) log(`${method} (${mode}): FAILED after ${took} s: ${r.error}`);
        else log(`${method} (${mode}): ${(r.msPerStep! / 1000).toFixed(2)} s/step, ${r.dispatches} dispatches, step peak ${mib(r.stepPeakBytes!).toFixed(0)} MiB (${took} s with warm-up)`);
        results.push(r);
      }
    }
  } finally {
    inp.dispose();
    m.dispose();
  }
  const rows: Row[] = withRatios(results).map((r) => ({
    method: r.method,
    mode: r.mode,
    'ms/step': r.error ? `error` : r.msPerStep!,
    'x cnn': r.msRatio ?? null,
    'encode ms/step': r.encodeMsPerStep ?? null,
    'replay ms/step': r.replayMsPerStep ?? null,
    'replay encode ms': r.replayEncodeMsPerStep ?? null,
    'exposed ms': r.replayExposedEncodeMsPerStep ?? null,
    'idle encode ms': r.replayIdleEncodeMs ?? null,
    'dispatches/step': r.dispatches ?? null,
    'AE dispatches/step': r.autoencoderDispatches ?? null,
    'peak live MiB': r.peakLiveBytes !== undefined ? mib(r.peakLiveBytes) : null,
    'step peak MiB': r.stepPeakBytes !== undefined ? mib(r.stepPeakBytes) : null,
    'x cnn ': r.memRatio ?? null,
    'peak alloc MiB': r.peakAllocatedBytes !== undefined ? mib(r.peakAllocatedBytes) : null,
    'UNet kept MiB': r.unetKeptBytes !== undefined ? mib(r.unetKeptBytes) : null,
  }));
  printTable(`solver steps on ${engine.summary()} (${a.tiny ? 'TINY widths' : 'SD-1.5 architecture'}, ${a.dtype} weights, ${a.latent}x${a.latent} latent)`, rows);
  for (const r of results) if (r.error) console.log(`  ${r.method} (${r.mode}) error: ${r.error}`);
  for (const r of results) {
    if (r.profile) printOpKinds(`GPU time by kind of op, one profiled step (a pass per dispatch): ${r.method} ${r.mode}`, r.profile, 15);
  }
  console.log(NOTES.map((n) => `  - ${n}`).join('\n'));
  return {
    architecture: a.tiny ? 'tiny (golden mini configs; not SD-1.5)' : 'SD-1.5 UNet + SD VAE (seeded random weights)',
    parameters: m.params,
    weights: a.dtype,
    residentModelBytes: residentBytes,
    latent: a.latent,
    imageSize: a.latent * m.vae.downFactor,
    timestep: a.t,
    warmup: a.warmup,
    timedSteps: steps,
    pixelTask: inp.description,
    notes: NOTES,
    results: withRatios(results),
  };
}

const mib = (b: number) => b / 2 ** 20;

const NOTES = [
  'ms/step: record + submit + GPU done of one step program (median over the timed steps); x cnn: ratio to silo-cnn in the same mode.',
  'replay: the step captured once and replayed (as restore() runs every step after the first); replay encode ms: JavaScript time to write its values, re-encode its commands and submit; exposed ms: of which not overlapped with the previous step (its submit), as each replay is encoded while the one before runs; idle encode ms: the same JavaScript with the GPU idle (on a CPU adapter the overlapped encodes share the cores with the previous step).',
  'reuse: one UNet forward per step, its stage inputs kept for the VJP; recompute: the VJP re-runs the UNet forward (two forwards per step). Either way every UNet/VAE stage recomputes its internals from its input inside the VJP (stage checkpointing).',
  "SILO's operators are built with latent_size = the bench latent (SILO hard-codes 64): LayerNorm([C, 32, 32]) and Linear(. -> 32*32); the readout features are resized to 32x32.",
  'UNet kept: the UNet stage inputs a reuse step holds from its forward to its VJP (unetTapeBytes); restore() picks reuse when they fit its activation budget (1 GiB by default).',
  'peak live: every resident model included; step peak: above what was live when the step started; peak alloc: the pool (live + cached free buffers), trimmed before each method.',
];
