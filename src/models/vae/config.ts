// diffusers' AutoencoderKL config.json (SD-1.x / SDXL style: DownEncoderBlock2D / UpDecoderBlock2D,
// GroupNorm eps 1e-6, a mid block of resnet - attention - resnet), normalised and checked. Options this
// implementation does not run are rejected with their name and value, never ignored.

import { SiloError } from '../../engine/errors.js';

export class VaeConfigError extends SiloError {}

export interface VaeConfig {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  blockOutChannels: number[];
  /** ResNets per encoder block; decoder blocks have one more. */
  layersPerBlock: number;
  normGroups: number;
  /** GroupNorm eps of every norm in the VAE (diffusers hard-codes 1e-6 in Encoder/Decoder). */
  normEps: number;
  midBlockAddAttention: boolean;
  /** Image size the model was trained at: diffusers' default tile size (tile_sample_min_size). */
  sampleSize: number;
  /** latents = scalingFactor * (sample - shiftFactor) in pipelines; decode(latents / scalingFactor + shiftFactor). */
  scalingFactor: number;
  shiftFactor: number;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
}

type Json = Record<string, unknown>;

/** Keys read or deliberately ignored (hints for pipelines: force_upcast, latents_mean/std). */
const KNOWN = new Set([
  'in_channels', 'out_channels', 'latent_channels', 'block_out_channels', 'layers_per_block', 'norm_num_groups',
  'act_fn', 'down_block_types', 'up_block_types', 'sample_size', 'scaling_factor', 'shift_factor',
  'force_upcast', 'latents_mean', 'latents_std', 'mid_block_add_attention', 'use_quant_conv', 'use_post_quant_conv',
]);

function int(json: Json, key: string, dflt: number, min = 1): number {
  const v = json[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new VaeConfigError(`VAE config: ${key} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return v;
}

function bool(json: Json, key: string, dflt: boolean): boolean {
  const v = json[key] ?? dflt;
  if (typeof v !== 'boolean') throw new VaeConfigError(`VAE config: ${key} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

export function parseVaeConfig(json: Json): VaeConfig {
  for (const k of Object.keys(json)) {
    if (!k.startsWith('_') && !KNOWN.has(k)) throw new VaeConfigError(`VAE config: unsupported option ${k} = ${JSON.stringify(json[k])}`);
  }
  const act = json['act_fn'] ?? 'silu';
  if (act !== 'silu') throw new VaeConfigError(`VAE config: act_fn ${JSON.stringify(act)} is not supported (only "silu")`);
  const boc = json['block_out_channels'] ?? [64];
  if (!Array.isArray(boc) || boc.length === 0 || !boc.every((c) => Number.isInteger(c) && c > 0)) {
    throw new VaeConfigError(`VAE config: block_out_channels must be a non-empty list of positive integers, got ${JSON.stringify(boc)}`);
  }
  const blockOutChannels = boc as number[];
  const types = (key: string, want: string) => {
    const v = json[key] ?? blockOutChannels.map(() => want);
    if (!Array.isArray(v) || v.length !== blockOutChannels.length) {
      throw new VaeConfigError(`VAE config: ${key} must list ${blockOutChannels.length} blocks (one per block_out_channels), got ${JSON.stringify(v)}`);
    }
    const bad = v.find((t) => t !== want);
    if (bad !== undefined) throw new VaeConfigError(`VAE config: ${key} entry ${JSON.stringify(bad)} is not supported (only ${want})`);
  };
  types('down_block_types', 'DownEncoderBlock2D');
  types('up_block_types', 'UpDecoderBlock2D');
  const normGroups = int(json, 'norm_num_groups', 32);
  const bad = blockOutChannels.find((c) => c % normGroups !== 0);
  if (bad !== undefined) throw new VaeConfigError(`VAE config: norm_num_groups ${normGroups} does not divide block width ${bad}`);
  const num = (key: string, dflt: number) => {
    const v = json[key] ?? dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new VaeConfigError(`VAE config: ${key} must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const sample = json['sample_size'] ?? 32;
  const sampleSize = Array.isArray(sample) ? sample[0] : sample;
  if (typeof sampleSize !== 'number' || !Number.isInteger(sampleSize) || sampleSize < 1) {
    throw new VaeConfigError(`VAE config: sample_size must be a positive integer, got ${JSON.stringify(sample)}`);
  }
  return {
    inChannels: int(json, 'in_channels', 3),
    outChannels: int(json, 'out_channels', 3),
    latentChannels: int(json, 'latent_channels', 4),
    blockOutChannels,
    layersPerBlock: int(json, 'layers_per_block', 1),
    normGroups,
    normEps: 1e-6,
    midBlockAddAttention: bool(json, 'mid_block_add_attention', true),
    sampleSize,
    scalingFactor: num('scaling_factor', 0.18215),
    shiftFactor: num('shift_factor', 0),
    useQuantConv: bool(json, 'use_quant_conv', true),
    usePostQuantConv: bool(json, 'use_post_quant_conv', true),
  };
}

/** Spatial down-sampling factor between image and latent: 2^(blocks - 1). */
export function vaeDownFactor(cfg: VaeConfig): number {
  return 2 ** (cfg.blockOutChannels.length - 1);
}
