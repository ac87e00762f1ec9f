// diffusers' UNet2DConditionModel config.json, reduced to what SD-1.x-style UNets use and checked:
// every option this implementation does not run is rejected with its name and value, never ignored.

import { SiloError } from '../../engine/errors.js';

export class UNetConfigError extends SiloError {}

export type DownBlockType = 'CrossAttnDownBlock2D' | 'DownBlock2D';
export type UpBlockType = 'CrossAttnUpBlock2D' | 'UpBlock2D';

/** The normalised config: per-block lists expanded, derived widths filled in. */
export interface UNetConfig {
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  downBlockTypes: DownBlockType[];
  upBlockTypes: UpBlockType[];
  /** ResNets per down block (up blocks have one more each, in reversed order). */
  layersPerBlock: number[];
  /** Attention heads per down block (diffusers' `attention_head_dim`, which SD-1.x uses as the head count). */
  heads: number[];
  crossAttentionDim: number[];
  /** BasicTransformerBlocks per Transformer2DModel, per down block. */
  transformerLayers: number[];
  normGroups: number;
  normEps: number;
  useLinearProjection: boolean;
  flipSinToCos: boolean;
  freqShift: number;
  /** Width of time_proj (= block_out_channels[0]) and of the time embedding. */
  timeProjDim: number;
  timeEmbedDim: number;
  convInKernel: number;
  convOutKernel: number;
  downsamplePadding: number;
  midBlockScaleFactor: number;
  centerInputSample: boolean;
}

type Json = Record<string, unknown>;

/** Config keys whose value must be one of the listed (the values SD-1.x uses), or absent. */
const FIXED: Record<string, unknown[]> = {
  act_fn: ['silu'],
  addition_embed_type: [null],
  attention_type: ['default'],
  class_embed_type: [null],
  class_embeddings_concat: [false],
  cross_attention_norm: [null],
  dual_cross_attention: [false],
  encoder_hid_dim: [null],
  encoder_hid_dim_type: [null],
  mid_block_only_cross_attention: [null, false],
  mid_block_type: ['UNetMidBlock2DCrossAttn'],
  num_attention_heads: [null],
  num_class_embeds: [null],
  only_cross_attention: [false],
  projection_class_embeddings_input_dim: [null],
  resnet_out_scale_factor: [1],
  resnet_skip_time_act: [false],
  resnet_time_scale_shift: ['default'],
  reverse_transformer_layers_per_block: [null],
  time_cond_proj_dim: [null],
  time_embedding_act_fn: [null],
  time_embedding_type: ['positional'],
  timestep_post_act: [null],
};

const DOWN_TYPES: readonly string[] = ['CrossAttnDownBlock2D', 'DownBlock2D'];
const UP_TYPES: readonly string[] = ['CrossAttnUpBlock2D', 'UpBlock2D'];

function fail(where: string, msg: string): never {
  throw new UNetConfigError(`${where}: ${msg}`);
}

const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;

function posInt(cfg: Json, key: string, where: string, dflt?: number): number {
  const v = cfg[key] ?? dflt;
  if (!isPosInt(v)) fail(where, `"${key}" must be a positive integer, got ${JSON.stringify(cfg[key])}`);
  return v;
}

/** An int (repeated per block) or a list of ints of length `n`. */
function perBlock(cfg: Json, key: string, n: number, where: string, dflt?: number): number[] {
  const v = cfg[key] ?? dflt;
  if (isPosInt(v)) return new Array<number>(n).fill(v);
  if (Array.isArray(v) && v.length === n && v.every(isPosInt)) return v.slice();
  return fail(where, `"${key}" must be a positive integer or a list of ${n} positive integers (one per block), got ${JSON.stringify(cfg[key])}`);
}

/** Parses and checks a diffusers UNet2DConditionModel config.json object; `where` names it in errors. */
export function parseUNetConfig(raw: unknown, where = 'UNet config'): UNetConfig {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) fail(where, 'not a JSON object');
  const cfg = raw as Json;
  if (cfg['_class_name'] !== undefined && cfg['_class_name'] !== 'UNet2DConditionModel') {
    fail(where, `_class_name is "${String(cfg['_class_name'])}", expected "UNet2DConditionModel"`);
  }
  for (const [key, allowed] of Object.entries(FIXED)) {
    if (!(key in cfg)) continue;
    const v = cfg[key];
    if (!allowed.some((a) => a === v)) {
      fail(where, `"${key}" = ${JSON.stringify(v)} is not supported (supported: ${allowed.map((a) => JSON.stringify(a)).join(', ')})`);
    }
  }

  const blockOut = cfg['block_out_channels'];
  if (!Array.isArray(blockOut) || blockOut.length === 0 || !blockOut.every(isPosInt)) {
    fail(where, `"block_out_channels" must be a non-empty list of positive integers, got ${JSON.stringify(blockOut)}`);
  }
  const nb = blockOut.length;
  const types = (key: string, allowed: readonly string[]) => {
    const v = cfg[key];
    if (!Array.isArray(v) || v.length !== nb) fail(where, `"${key}" must list ${nb} block types (one per block_out_channels entry), got ${JSON.stringify(v)}`);
    v.forEach((t, i) => {
      if (!allowed.includes(t as string)) fail(where, `${key}[${i}] = ${JSON.stringify(t)} is not supported (supported: ${allowed.join(', ')})`);
    });
    return v as string[];
  };
  const downBlockTypes = types('down_block_types', DOWN_TYPES) as DownBlockType[];
  const upBlockTypes = types('up_block_types', UP_TYPES) as UpBlockType[];
  // Up block i mirrors down block nb-1-i: it consumes that block's skips and needs its attention layout.
  downBlockTypes.forEach((d, i) => {
    const u = upBlockTypes[nb - 1 - i]!;
    if ((d === 'CrossAttnDownBlock2D') !== (u === 'CrossAttnUpBlock2D')) {
      fail(where, `down_block_types[${i}] = ${d} does not mirror up_block_types[${nb - 1 - i}] = ${u}`);
    }
  });

  const transformerLayers = cfg['transformer_layers_per_block'] ?? 1;
  if (Array.isArray(transformerLayers) && transformerLayers.some(Array.isArray)) {
    fail(where, `nested "transformer_layers_per_block" lists (SDXL-style per-layer counts) are not supported`);
  }
  const heads = perBlock(cfg, 'attention_head_dim', nb, where, 8);
  const normGroups = posInt(cfg, 'norm_num_groups', where, 32);
  const normEps = cfg['norm_eps'] ?? 1e-5;
  if (typeof normEps !== 'number' || !(normEps >= 0)) fail(where, `"norm_eps" must be a number >= 0, got ${JSON.stringify(normEps)}`);

  blockOut.forEach((c, i) => {
    if (c % normGroups !== 0) fail(where, `block_out_channels[${i}] = ${c} is not divisible by norm_num_groups = ${normGroups}`);
    if (downBlockTypes[i] === 'CrossAttnDownBlock2D' || i === nb - 1) {
      if (c % heads[i]! !== 0) fail(where, `block_out_channels[${i}] = ${c} is not divisible by its ${heads[i]} attention heads`);
    }
  });

  const kernel = (key: string) => {
    const k = posInt(cfg, key, where, 3);
    if (k % 2 !== 1) fail(where, `"${key}" must be odd, got ${k}`);
    return k;
  };
  const downsamplePadding = cfg['downsample_padding'] ?? 1;
  if (!isPosInt(downsamplePadding)) {
    fail(where, `"downsample_padding" = ${JSON.stringify(downsamplePadding)} is not supported (only >= 1; 0 means diffusers' asymmetric pad)`);
  }
  const midScale = cfg['mid_block_scale_factor'] ?? 1;
  if (typeof midScale !== 'number' || !(midScale > 0)) fail(where, `"mid_block_scale_factor" must be a positive number, got ${JSON.stringify(midScale)}`);
  const bool = (key: string, dflt: boolean) => {
    const v = cfg[key] ?? dflt;
    if (typeof v !== 'boolean') fail(where, `"${key}" must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  if (typeof cfg['upcast_attention'] !== 'undefined' && typeof cfg['upcast_attention'] !== 'boolean') {
    fail(where, `"upcast_attention" must be true or false`);
  }
  const freqShift = cfg['freq_shift'] ?? 0;
  if (typeof freqShift !== 'number') fail(where, `"freq_shift" must be a number, got ${JSON.stringify(freqShift)}`);

  return {
    inChannels: posInt(cfg, 'in_channels', where, 4),
    outChannels: posInt(cfg, 'out_channels', where, 4),
    blockOutChannels: blockOut.slice(),
    downBlockTypes,
    upBlockTypes,
    layersPerBlock: perBlock(cfg, 'layers_per_block', nb, where, 2),
    heads,
    crossAttentionDim: perBlock(cfg, 'cross_attention_dim', nb, where, 1280),
    transformerLayers: perBlock(cfg, 'transformer_layers_per_block', nb, where, 1),
    normGroups,
    normEps,
    useLinearProjection: bool('use_linear_projection', false),
    flipSinToCos: bool('flip_sin_to_cos', true),
    freqShift,
    timeProjDim: blockOut[0]!,
    timeEmbedDim: cfg['time_embedding_dim'] == null ? 4 * blockOut[0]! : posInt(cfg, 'time_embedding_dim', where),
    convInKernel: kernel('conv_in_kernel'),
    convOutKernel: kernel('conv_out_kernel'),
    downsamplePadding,
    midBlockScaleFactor: midScale,
    centerInputSample: bool('center_input_sample', false),
  };
}
