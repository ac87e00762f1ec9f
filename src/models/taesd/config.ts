// Configuration of the TAESD family of tiny autoencoders (madebyollin/taesd, taesd.py): TAESD for
// SD-1.5 and TAESDXL (4 latent channels), TAESD3 and TAEF1 (16), TAEF2 for FLUX.2 (32, the "flux_2"
// variant with a GroupNorm pooling branch in the blocks at latent resolution). Images are in [0, 1]
// on both sides (not [-1, 1] as for the SD VAE); the decoder's raw output is clamped to [0, 1] for
// the final image.
//
// The network is an nn.Sequential, so the state-dict names are positional ("1.conv.0.weight",
// "11.pool.1.weight"). `taesdLayout` turns a config into that sequence, and `taesdConfigFromWeights`
// reads a config back from the names and shapes in the weight files.

import { shapeString } from '../../engine/dtype.js';
import type { TensorSource } from '../../formats/safetensors.js';
import { WeightError } from '../weights.js';

export interface TaesdConfig {
  /** Latent channels: 4 (SD-1.5, SDXL), 16 (SD3, FLUX.1), 32 (FLUX.2). */
  latentChannels: number;
  /** Image channels (RGB). */
  imageChannels: number;
  /** Width of every block (64 in all released 8x models). */
  channels: number;
  /**
   * Blocks per resolution level, from the image side: [1, 3, 3, 3]. Between levels the encoder has a
   * stride-2 3x3 conv without bias, so the latent is at 1 / 2^(levels - 1) of the image size.
   */
  encoderBlocks: number[];
  /**
   * Blocks per level, from the latent side: [3, 3, 3, 1]. Between levels the decoder has nearest x2
   * up-sampling followed by a 3x3 conv without bias.
   */
  decoderBlocks: number[];
  /**
   * FLUX.2 variant ("use_midblock_gn"): every block at latent resolution (the encoder's last level,
   * the decoder's first) first adds pool(x) = conv1x1(C -> poolExpansion C) -> GroupNorm(poolGroups)
   * -> ReLU -> conv1x1(back to C), both 1x1 convs without bias.
   */
  midBlockGn: boolean;
  poolExpansion: number;
  poolGroups: number;
}

const BASE: Omit<TaesdConfig, 'latentChannels'> = {
  imageChannels: 3,
  channels: 64,
  encoderBlocks: [1, 3, 3, 3],
  decoderBlocks: [3, 3, 3, 1],
  midBlockGn: false,
  poolExpansion: 4,
  poolGroups: 4,
};

/** taesd.py's guess_latent_channels_and_arch, as configs. */
export const TAESD_CONFIG: TaesdConfig = { ...BASE, latentChannels: 4 };
export const TAESDXL_CONFIG: TaesdConfig = { ...BASE, latentChannels: 4 };
export const TAESD3_CONFIG: TaesdConfig = { ...BASE, latentChannels: 16 };
export const TAEF1_CONFIG: TaesdConfig = { ...BASE, latentChannels: 16 };
export const TAEF2_CONFIG: TaesdConfig = { ...BASE, latentChannels: 32, midBlockGn: true };

/** One entry of the nn.Sequential. `index` is its state-dict prefix. */
export type TaesdLayer =
  | { kind: 'conv'; index: number; cin: number; cout: number; stride: 1 | 2; bias: boolean }
  | { kind: 'block'; index: number; cin: number; cout: number; pool: boolean }
  | { kind: 'relu' | 'clamp' | 'upsample'; index: number };

type LayerSpec = TaesdLayer extends infer L ? (L extends TaesdLayer ? Omit<L, 'index'> : never) : never;

function checkConfig(c: TaesdConfig): void {
  const positive = (v: number) => Number.isInteger(v) && v >= 1;
  const ok =
    positive(c.latentChannels) &&
    positive(c.imageChannels) &&
    positive(c.channels) &&
    positive(c.poolExpansion) &&
    positive(c.poolGroups) &&
    (c.channels * c.poolExpansion) % c.poolGroups === 0 &&
    c.encoderBlocks.length >= 1 &&
    c.decoderBlocks.length >= 1 &&
    [...c.encoderBlocks, ...c.decoderBlocks].every(positive);
  if (!ok) throw new WeightError(`invalid TAESD config ${JSON.stringify(c)}`);
}

/** The encoder's and decoder's nn.Sequential entries, in order, with their state-dict indices. */
export function taesdLayout(c: TaesdConfig): { encoder: TaesdLayer[]; decoder: TaesdLayer[] } {
  checkConfig(c);
  const ch = c.channels;
  const encoder: TaesdLayer[] = [];
  const add = (list: TaesdLayer[], l: LayerSpec) => list.push({ ...l, index: list.length } as TaesdLayer);
  add(encoder, { kind: 'conv', cin: c.imageChannels, cout: ch, stride: 1, bias: true });
  c.encoderBlocks.forEach((n, level) => {
    if (level > 0) add(encoder, { kind: 'conv', cin: ch, cout: ch, stride: 2, bias: false });
    const atLatent = level === c.encoderBlocks.length - 1;
    for (let i = 0; i < n; i++) add(encoder, { kind: 'block', cin: ch, cout: ch, pool: c.midBlockGn && atLatent });
  });
  add(encoder, { kind: 'conv', cin: ch, cout: c.latentChannels, stride: 1, bias: true });

  const decoder: TaesdLayer[] = [];
  add(decoder, { kind: 'clamp' });
  add(decoder, { kind: 'conv', cin: c.latentChannels, cout: ch, stride: 1, bias: true });
  add(decoder, { kind: 'relu' });
  c.decoderBlocks.forEach((n, level) => {
    if (level > 0) {
      add(decoder, { kind: 'upsample' });
      add(decoder, { kind: 'conv', cin: ch, cout: ch, stride: 1, bias: false });
    }
    for (let i = 0; i < n; i++) add(decoder, { kind: 'block', cin: ch, cout: ch, pool: c.midBlockGn && level === 0 });
  });
  add(decoder, { kind: 'conv', cin: ch, cout: c.imageChannels, stride: 1, bias: true });
  return { encoder, decoder };
}

/** Down-sampling factor of the latent (8 for every released 8x model). */
export function taesdScaleFactor(c: TaesdConfig): { encoder: number; decoder: number } {
  return { encoder: 2 ** (c.encoderBlocks.length - 1), decoder: 2 ** (c.decoderBlocks.length - 1) };
}

interface Entry {
  index: number;
  tails: Map<string, readonly number[]>;
}

/** Groups "<index>.<rest>" names by index; a name without a numeric prefix is rejected. */
function entries(src: TensorSource): Entry[] {
  const byIndex = new Map<number, Map<string, readonly number[]>>();
  for (const name of src.names()) {
    const m = /^(\d+)\.(.+)$/.exec(name);
    if (!m) throw new WeightError(`${src.source}: tensor "${name}" is not a TAESD nn.Sequential name ("<index>.<param>")`);
    const i = Number(m[1]);
    if (!byIndex.has(i)) byIndex.set(i, new Map());
    byIndex.get(i)!.set(m[2]!, src.info(name).shape);
  }
  return [...byIndex.entries()].sort((a, b) => a[0] - b[0]).map(([index, tails]) => ({ index, tails }));
}

function shapeOf(src: TensorSource, e: Entry, tail: string): readonly number[] {
  const s = e.tails.get(tail);
  if (!s) throw new WeightError(`${src.source}: missing tensor "${e.index}.${tail}"`);
  return s;
}

/** Block counts per level from a run of entries: blocks, then separators of `sepLen` indices. */
function levels(src: TensorSource, list: Entry[], isBlock: (e: Entry) => boolean, what: string): number[] {
  const counts: number[] = [];
  let run = 0;
  for (const e of list) {
    if (isBlock(e)) run++;
    else {
      if (run === 0) throw new WeightError(`${src.source}: unexpected layer "${e.index}.*" in the ${what} (no block before it)`);
      counts.push(run);
      run = 0;
    }
  }
  if (run === 0) throw new WeightError(`${src.source}: the ${what} ends without a block`);
  counts.push(run);
  return counts;
}

/**
 * Reads a config from the state-dict names and shapes of a TAESD encoder and/or decoder (the files
 * taesd.py loads). Loading with WeightLoader.build(strict) then checks every tensor against it, so a
 * file of another layout (e.g. the F32 variant) ends in an error naming the file and tensor.
 */
export function taesdConfigFromWeights(sources: { encoder?: TensorSource; decoder?: TensorSource }): TaesdConfig {
  const { encoder: enc, decoder: dec } = sources;
  if (!enc && !dec) throw new WeightError('taesdConfigFromWeights: give an encoder or a decoder source');
  const isBlock = (e: Entry) => e.tails.has('conv.0.weight');
  const hasPool = (e: Entry) => e.tails.has('pool.0.weight');
  const cfg: Partial<TaesdConfig> = { poolExpansion: BASE.poolExpansion, poolGroups: BASE.poolGroups };
  const pools: boolean[] = [];

  if (enc) {
    const list = entries(enc);
    if (list.length < 3 || list[0]!.index !== 0) throw new WeightError(`${enc.source}: no "0.weight" (the encoder's first conv)`);
    const first = shapeOf(enc, list[0]!, 'weight');
    const last = list[list.length - 1]!;
    const out = shapeOf(enc, last, 'weight');
    cfg.imageChannels = first[1]!;
    cfg.channels = first[0]!;
    cfg.latentChannels = out[0]!;
    const middle = list.slice(1, -1);
    middle.forEach((e, k) => {
      if (e.index !== k + 1) throw new WeightError(`${enc.source}: layer ${k + 1} of the encoder has no tensors (not a TAESD 8x encoder layout)`);
    });
    cfg.encoderBlocks = levels(enc, middle, isBlock, 'encoder');
    const n = cfg.encoderBlocks[cfg.encoderBlocks.length - 1]!;
    pools.push(...middle.slice(-n).map(hasPool));
    if (middle.slice(0, -n).some(hasPool)) {
      const e = middle.find(hasPool)!;
      throw new WeightError(`${enc.source}: tensor "${e.index}.pool.0.weight" is in a block outside the latent-resolution level`);
    }
  }

  if (dec) {
    const list = entries(dec);
    const first = list[0];
    if (!first || first.index !== 1) throw new WeightError(`${dec.source}: no "1.weight" (the decoder's first conv after the tanh clamp)`);
    const inConv = shapeOf(dec, first, 'weight');
    const last = list[list.length - 1]!;
    const out = shapeOf(dec, last, 'weight');
    const fromDec = { latentChannels: inConv[1]!, channels: inConv[0]!, imageChannels: out[0]! };
    for (const [k, v] of Object.entries(fromDec) as [keyof typeof fromDec, number][]) {
      if (cfg[k] !== undefined && cfg[k] !== v) {
        throw new WeightError(`${dec.source}: ${k} ${v} (from "1.weight" ${shapeString(inConv)} / "${last.index}.weight" ${shapeString(out)}) differs from the encoder's ${cfg[k]}`);
      }
      cfg[k] = v;
    }
    // Between levels: an Upsample index without tensors, then a conv without bias.
    const middle = list.slice(1, -1);
    let expect = 3;
    for (const e of middle) {
      if (e.index === expect + 1 && !isBlock(e)) expect++; // skipped the Upsample
      if (e.index !== expect) throw new WeightError(`${dec.source}: unexpected layer "${e.index}.*" in the decoder (expected ${expect})`);
      expect++;
    }
    cfg.decoderBlocks = levels(dec, middle, isBlock, 'decoder');
    const n = cfg.decoderBlocks[0]!;
    pools.push(...middle.slice(0, n).map(hasPool));
    if (middle.slice(n).some(hasPool)) {
      const e = middle.slice(n).find(hasPool)!;
      throw new WeightError(`${dec.source}: tensor "${e.index}.pool.0.weight" is in a block outside the latent-resolution level`);
    }
  }
  // The mirror half follows the released layout.
  cfg.encoderBlocks ??= [...(cfg.decoderBlocks ?? BASE.decoderBlocks)].reverse();
  cfg.decoderBlocks ??= [...cfg.encoderBlocks].reverse();
  cfg.midBlockGn = pools.some(Boolean);
  if (cfg.midBlockGn && !pools.every(Boolean)) {
    throw new WeightError(
      `${(enc ?? dec)!.source}: only some latent-resolution blocks have a "pool" branch; the FLUX.2 variant has it in all of them`,
    );
  }
  const src = enc ?? dec!;
  if (cfg.midBlockGn) {
    // The pool's hidden width gives the expansion (4 in taesd.py); the group count is not stored.
    const e = entries(src).find(hasPool)!;
    cfg.poolExpansion = shapeOf(src, e, 'pool.0.weight')[0]! / cfg.channels!;
  }
  const config = cfg as TaesdConfig;
  checkConfig(config);
  return config;
}
