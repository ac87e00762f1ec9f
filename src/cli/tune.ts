// `silo tune`: measures the kernel variants of Stable Diffusion 1.5's UNet convolutions and matrix products
// on this adapter (forward and input gradients, at the latent size given) and keeps the fastest per shape
// in the tuning table that `silo restore` reads. Node only.

import { Engine } from '../engine/device.js';
import { loadTuning } from '../engine/tuning.js';
import { tuneConv3x3, tuneMatmul } from '../engine/tune.js';
import { SD15_UNET_WIDTHS, unetConv3x3Shapes } from '../models/unet/conv-shapes.js';
import { SD15_TRANSFORMER_WIDTHS, unetMatmulShapes } from '../models/unet/matmul-shapes.js';
import { defaultLinearLayout } from '../models/weights.js';
import { UsageError } from './usage-error.js';
import { fileTuningStore, defaultTuningPath } from './tuning-file.js';

export const TUNE_USAGE = [
  'silo tune [--latent N] [--batch N] [--reps N] [--out <file>]',
  "  measures each variant of SD-1.5's UNet 3x3 convolutions (forward and input gradients: Winograd, 8 pixels",
  '  per thread, the general kernel) and matrix products (register-blocked, or tiled in workgroup memory) on',
  '  this adapter and keeps the fastest per shape; later commands on the same adapter use it (untuned shapes',
  '  keep the defaults for the adapter class)',
  '  --latent  latent side (default 64: 512x512 images; 32: 256x256)',
  '  --batch   UNet batch (default 1; 2 with classifier-free guidance)',
  '  --reps    timed runs per variant, median (default 3)',
  '  --out     the table (default $SILO_TUNING, else tuning.json in $SILO_CACHE, $XDG_CACHE_HOME/silo-webgpu or',
  '            ~/.cache/silo-webgpu); choices already in it for this adapter are kept unless re-measured',
].join('\n');

export interface TuneArgs {
  latent: number;
  batch: number;
  reps: number;
  out: string;
}

function positiveInt(flag: string, v: string | undefined, fallback: number, max: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`--${flag} must be an integer in [1, ${max}], got "${v}"`);
  return n;
}

export function parseTuneArgs(values: Record<string, string | boolean | undefined>, env: Record<string, string | undefined> = process.env): TuneArgs {
  const latent = positiveInt('latent', values.latent as string | undefined, 64, 512);
  // The UNet halves the latent three times.
  if (latent % 8 !== 0) throw new UsageError(`--latent must be a multiple of 8 (the UNet downsamples 3 times), got ${latent}`);
  return {
    latent,
    batch: positiveInt('batch', values.batch as string | undefined, 1, 16),
    reps: positiveInt('reps', values.reps as string | undefined, 3, 100),
    out: (values.out as string | undefined) ?? defaultTuningPath(env),
  };
}

export async function runTune(a: TuneArgs, io: { out(l: string): void; err(l: string): void }): Promise<number> {
  const engine = await Engine.create();
  try {
    io.out(engine.summary());
    const store = fileTuningStore(a.out);
    await loadTuning(engine.tuning, store, (l) => io.err(l));
    const shapes = unetConv3x3Shapes(SD15_UNET_WIDTHS, a.latent, a.batch);
    io.out(`tuning ${shapes.length} conv 3x3 shapes of SD-1.5's UNet at a ${a.latent}x${a.latent} latent, batch ${a.batch} (${a.reps} timed run(s) per variant${engine.hasTimestamps ? ', GPU time from timestamp queries' : ', wall time: no timestamp queries'})`);
    const t0 = performance.now();
    const convs = await tuneConv3x3(engine, shapes, { reps: a.reps, log: (l) => io.out(`  ${l}`) });
    // The products of the convolutions that now run as Winograd, and the transformer blocks' linear layers.
    const winograd = shapes.filter((_, i) => convs[i]!.chosen === 'winograd');
    // In the layout the model loaders hold Linear weights in on this adapter.
    const products = unetMatmulShapes(SD15_TRANSFORMER_WIDTHS, a.latent, a.batch, winograd, defaultLinearLayout(engine));
    io.out(`tuning ${products.length} matmul shapes`);
    const mms = await tuneMatmul(engine, products, { reps: a.reps, log: (l) => io.out(`  ${l}`) });
    const results = [...convs, ...mms];
    await store.write(JSON.stringify(engine.tuning.toJSON(), null, 1) + '\n');
    const changed = results.filter((r) => r.chosen !== r.fallback).length;
    io.out(`${results.length} shapes in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${changed} differ from the defaults; table written to ${a.out}`);
    return 0;
  } finally {
    engine.destroy();
  }
}
