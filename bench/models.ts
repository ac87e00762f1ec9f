// Full-size models with seeded random weights generated on the GPU: one SD-1.5 UNet evaluation at a
// 32x32 latent and one SD VAE decode at 256x256 (--latent N: an NxN latent, 8N x 8N image), in f32
// and (with shader-f16) f16. The configs are the
// golden mini configs (SD-1.5's structure) with SD-1.5's widths put back.

import { readFileSync } from 'node:fs';
import type { Engine } from '../src/engine/device.js';
import type { DType } from '../src/engine/dtype.js';
import { Recorder } from '../src/engine/recorder.js';
import { randomNormal } from '../src/engine/ops/random.js';
import { WeightLoader } from '../src/models/weights.js';
import { RandomWeightSource } from '../src/models/random-weights.js';
import { UNet2DConditionModel } from '../src/models/unet/unet.js';
import { parseUNetConfig } from '../src/models/unet/config.js';
import { AutoencoderKL } from '../src/models/vae/autoencoder.js';
import { parseVaeConfig } from '../src/models/vae/config.js';
import { opKindBreakdown, printOpKinds, printTable, type OpKindTime, type Row } from './harness.js';
import { GOLDEN } from './golden.js';


export function sd15UNetConfig(): Record<string, unknown> {
  const cfg = JSON.parse(readFileSync(`${GOLDEN}/unet_mini/config.json`, 'utf8')) as Record<string, unknown>;
  return { ...cfg, block_out_channels: [320, 640, 1280, 1280], cross_attention_dim: 768, sample_size: 64 };
}

export function sdVaeConfig(): Record<string, unknown> {
  const cfg = JSON.parse(readFileSync(`${GOLDEN}/vae_mini/config.json`, 'utf8')) as Record<string, unknown>;
  return { ...cfg, block_out_channels: [128, 256, 512, 512], sample_size: 512 };
}

export interface ModelResult {
  model: string;
  dtype: DType;
  params: number;
  weightBytes: number;
  generateMs: number;
  runMs: number;
  dispatches: number;
  /** Peak of live pooled bytes during the run (weights and inputs included). */
  peakLiveBytes: number;
  /** The same peak above what was live before the run: the activations' memory plan. */
  peakActivationBytes: number;
  maxBindingBytes: number;
  /** With --profile: the measured run's GPU time by kind of op (timestamp queries, one pass per dispatch). */
  profile?: OpKindTime[];
}

interface Timed<T> {
  result: T;
  ms: number;
  dispatches: number;
  peak: number;
  above: number;
  profile?: OpKindTime[];
}

async function timed<T>(engine: Engine, name: string, record: (rec: Recorder) => T, profile = false): Promise<Timed<T>> {
  const before = engine.pool.stats.liveBytes;
  const rec = new Recorder(engine, name, { profile });
  let result: T;
  try {
    result = record(rec);
  } catch (e) {
    rec.abort();
    throw e;
  }
  await engine.queue.onSubmittedWorkDone();
  const t0 = performance.now();
  const report = await rec.submit({ wait: true });
  const ms = performance.now() - t0;
  const kinds = report.profiledMs !== undefined ? opKindBreakdown(report.ops) : undefined;
  return { result, ms, dispatches: report.dispatches, peak: report.peakLiveBytes, above: report.peakLiveBytes - before, profile: kinds };
}

function paramStats(src: RandomWeightSource): { params: number } {
  let params = 0;
  for (const n of src.names()) params += src.info(n).shape.reduce((a, b) => a * b, 1);
  return { params };
}

interface ModelArgs {
  latent: number;
  /** Time every dispatch with timestamp queries and report the GPU time by kind of op. */
  profile: boolean;
}

async function benchUNet(engine: Engine, dtype: DType, a: ModelArgs, log: (l: string) => void): Promise<ModelResult> {
  const latent = a.latent;
  const src = new RandomWeightSource(1, 'SD-1.5 UNet random weights');
  const t0 = performance.now();
  const before = engine.pool.stats.liveBytes;
  const loaded = WeightLoader.load(engine, src, { dtype }, (w) => new UNet2DConditionModel(w, parseUNetConfig(sd15UNetConfig(), 'SD-1.5 UNet config')));
  const unet = loaded.model;
  await src.generated();
  const weightBytes = engine.pool.stats.liveBytes - before;
  const generateMs = performance.now() - t0;
  const { params } = paramStats(src);
  log(`UNet ${dtype}: ${(params / 1e6).toFixed(1)}M parameters generated in ${(generateMs / 1000).toFixed(1)} s`);
  const inputs = await timed(engine, 'unet inputs', (rec) => [
    randomNormal(rec, [1, 4, latent, latent], 11, { dtype }),
    randomNormal(rec, [1, 77, 768], 12, { dtype }),
  ]);
  const [sample, ehs] = inputs.result as [ReturnType<typeof randomNormal>, ReturnType<typeof randomNormal>];
  // warm-up compiles every pipeline, then one measured evaluation
  const warm = await timed(engine, 'unet warm-up', (rec) => unet.forward(rec, sample, 500, ehs).eps);
  warm.result.dispose();
  const run = await timed(engine, 'unet', (rec) => unet.forward(rec, sample, 500, ehs).eps, a.profile);
  const eps = await run.result.read();
  if (!eps.every(Number.isFinite)) throw new Error(`UNet ${dtype}: non-finite output`);
  run.result.dispose();
  sample.dispose();
  ehs.dispose();
  loaded.dispose();
  return {
    model: `SD-1.5 UNet, ${latent}x${latent} latent, 77 tokens`,
    dtype,
    params,
    weightBytes,
    generateMs,
    runMs: run.ms,
    dispatches: run.dispatches,
    peakLiveBytes: run.peak,
    peakActivationBytes: run.above,
    maxBindingBytes: engine.limits.maxStorageBufferBindingSize,
    profile: run.profile,
  };
}

async function benchVae(engine: Engine, dtype: DType, a: ModelArgs, log: (l: string) => void): Promise<ModelResult> {
  const latent = a.latent;
  const src = new RandomWeightSource(2, 'SD VAE random weights');
  const t0 = performance.now();
  const before = engine.pool.stats.liveBytes;
  const loaded = WeightLoader.load(engine, src, { dtype }, (w) => new AutoencoderKL(w, parseVaeConfig(sdVaeConfig())));
  const vae = loaded.model;
  await src.generated();
  const weightBytes = engine.pool.stats.liveBytes - before;
  const generateMs = performance.now() - t0;
  const { params } = paramStats(src);
  log(`VAE ${dtype}: ${(params / 1e6).toFixed(1)}M parameters generated in ${(generateMs / 1000).toFixed(1)} s`);
  const z = (await timed(engine, 'vae input', (rec) => randomNormal(rec, [1, 4, latent, latent], 13, { dtype }))).result;
  const run = await timed(engine, 'vae decode', (rec) => vae.decode(rec, z), a.profile);
  const img = await run.result.read();
  if (!img.every(Number.isFinite)) throw new Error(`VAE ${dtype}: non-finite output`);
  run.result.dispose();
  z.dispose();
  loaded.dispose();
  return {
    model: `SD VAE decode, ${latent}x${latent} latent -> ${8 * latent}x${8 * latent}`,
    dtype,
    params,
    weightBytes,
    generateMs,
    runMs: run.ms,
    dispatches: run.dispatches,
    peakLiveBytes: run.peak,
    peakActivationBytes: run.above,
    maxBindingBytes: engine.limits.maxStorageBufferBindingSize,
    profile: run.profile,
  };
}

/**
 * The models benchmark's own flags: --latent N (a multiple of 8: the UNet halves it three times), default
 * 32; --profile (GPU time by kind of op, from timestamp queries).
 */
export function parseModelArgs(args: readonly string[]): ModelArgs {
  const profile = args.includes('--profile');
  const i = args.indexOf('--latent');
  if (i < 0) return { latent: 32, profile };
  const v = args[i + 1];
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n < 8 || n % 8 !== 0) throw new Error(`--latent must be a multiple of 8 (the UNet halves it three times), got ${JSON.stringify(v ?? null)}`);
  return { latent: n, profile };
}

export async function runModelBench(engine: Engine, opts: { filter?: string; latent?: number; profile?: boolean } = {}): Promise<{ latent: number; results: ModelResult[] }> {
  const latent = opts.latent ?? 32;
  const a: ModelArgs = { latent, profile: opts.profile ?? false };
  if (a.profile && !engine.hasTimestamps) console.log('--profile ignored: this adapter has no timestamp-query');
  const results: ModelResult[] = [];
  const dtypes: DType[] = engine.hasF16 ? ['f32', 'f16'] : ['f32'];
  if (!engine.hasF16) console.log('f16 rows skipped: this adapter has no shader-f16');
  for (const dtype of dtypes) {
    for (const [name, fn] of [['unet', benchUNet], ['vae', benchVae]] as const) {
      if (opts.filter && !`${name} ${dtype}`.includes(opts.filter)) continue;
      const r = await fn(engine, dtype, a, (l) => console.log(`  ${l}`));
      console.log(`  ${r.model} ${dtype}: ${(r.runMs / 1000).toFixed(2)} s, ${r.dispatches} dispatches, peak ${(r.peakLiveBytes / 2 ** 20).toFixed(0)} MiB`);
      results.push(r);
      engine.pool.trim();
    }
  }
  const rows: Row[] = results.map((r) => ({
    model: r.model,
    dtype: r.dtype,
    params: `${(r.params / 1e6).toFixed(1)}M`,
    'weights MiB': r.weightBytes / 2 ** 20,
    'run s': r.runMs / 1000,
    dispatches: r.dispatches,
    'peak pool MiB': r.peakLiveBytes / 2 ** 20,
    'peak activations MiB': r.peakActivationBytes / 2 ** 20,
  }));
  printTable(`models on ${engine.summary()}`, rows);
  for (const r of results) {
    if (r.profile) printOpKinds(`GPU time by kind of op (timestamp queries, one pass per dispatch): ${r.model} ${r.dtype}`, r.profile, 12);
  }
  return { latent, results };
}
