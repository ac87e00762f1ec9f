// Constructor arguments of SILO's three latent operators (ronraphaeli/SILO), normalised and checked:
//   DegradationModel (silo_utils.py)                       the CNN operator, `--model cnn`
//   AggregationNetwork (dhf/aggregation_network.py)        the Readout-Guidance operator, `--model rg`
//   LatentDegradationNetwork (preserve_LatentDegradationNetwork.py)   `--model preserve_LatentDegradationNetwork`
// Options SILO's sampler never runs (and that this port does not implement) are rejected by name.

import { SiloError } from '../../engine/errors.js';
import type { TensorSource } from '../../formats/safetensors.js';

export class SiloConfigError extends SiloError {}

type Json = Record<string, unknown>;

/**
 * SILO conditions its operators on the measurement noise through the UNet's time embedding at a
 * pseudo-timestep: `embed_timestep(unet, x0_hat, (sigma / 0.1) * 999)` (199.8 for sigma = 0.02).
 */
export function sigmaTimestep(sigma: number): number {
  return (sigma / 0.1) * 999;
}

function bool(args: Json, key: string, dflt: boolean): boolean {
  const v = args[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw new SiloConfigError(`${key} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function int(args: Json, key: string, dflt: number | undefined, min = 1): number {
  const v = args[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new SiloConfigError(`${key} must be an integer >= ${min}, got ${JSON.stringify(args[key])}`);
  }
  return v;
}

function num(args: Json, key: string, dflt: number): number {
  const v = args[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new SiloConfigError(`${key} must be a positive number, got ${JSON.stringify(args[key])}`);
  }
  return v;
}

function reject(args: Json, key: string, allowed: unknown[], why: string): void {
  const v = args[key];
  if (v !== undefined && !allowed.includes(v)) {
    throw new SiloConfigError(`${key} = ${JSON.stringify(v)} is not supported: ${why}`);
  }
}

// ---------------------------------------------------------------------------------------------
// DegradationModel (the CNN operator)

export interface DegradationModelConfig {
  /** Latent channels (4 for SD-1.5). */
  latentDim: number;
  /** Output channels (SILO: output_dim 0 means latent_dim). */
  outputDim: number;
  /** Append the sigma map as one more input channel (every published SILO CNN checkpoint). */
  sigmaCondition: boolean;
  /** Latent side; SILO hard-codes 64 (LayerNorm([C, 64, 64]) and Linear(32, 64*64)). */
  latentSize: number;
  /** Width of the sigma embedding; SILO hard-codes SD-1.5's 1280. */
  sigmaEmbDim: number;
  /** Hidden width of sigma_condition_precondition; SILO hard-codes 32. */
  sigmaHidden: number;
  /**
   * Our extension: every hidden width (16, 32, 64, 128) times this. SILO's module is width 1, made for
   * SD's 4-channel latent; a 32-channel latent (TAEF2) passes through a 16-channel first conv at width 1.
   */
  width: number;
}

/** From SILO's snake_case constructor arguments `DegradationModel(latent_dim, output_dim, sigma_condition, layer_norm)`. */
export function degradationConfig(args: Json): DegradationModelConfig {
  // The BatchNorm2d variant (layer_norm False) is never sampled with: silo_sample.py builds layer_norm=True.
  reject(args, 'layer_norm', [true], 'only the LayerNorm variant that silo_sample.py builds is implemented');
  const latentDim = int(args, 'latent_dim', undefined);
  const outputDim = int(args, 'output_dim', 0, 0);
  return {
    latentDim,
    outputDim: outputDim === 0 ? latentDim : outputDim,
    sigmaCondition: bool(args, 'sigma_condition', false),
    latentSize: int(args, 'latent_size', 64),
    sigmaEmbDim: int(args, 'sigma_emb_dim', 1280),
    sigmaHidden: int(args, 'sigma_hidden', 32),
    width: int(args, 'width', 1),
  };
}

/**
 * The constructor arguments read off a DegradationModel state dict (SILO ships bare state dicts, no
 * config): widths from encoder.0 / processing.3, sigma conditioning from sigma_condition_precondition.
 */
export function inferDegradationConfig(source: TensorSource): DegradationModelConfig {
  const shape = (name: string) => {
    if (!source.has(name)) throw new SiloConfigError(`${source.source}: missing tensor "${name}": not a SILO DegradationModel state dict`);
    return source.info(name).shape;
  };
  const sigma = source.has('sigma_condition_precondition.0.weight');
  const enc0 = shape('encoder.0.weight');
  const norm = shape('encoder.1.weight');
  if (norm.length !== 3) {
    throw new SiloConfigError(`${source.source}: encoder.1 is not LayerNorm([C, H, W]) (shape [${norm.join(', ')}]); the BatchNorm variant is not supported`);
  }
  const s = sigma ? 1 : 0;
  const width = (enc0[0]! - s) / 16;
  if (!Number.isInteger(width) || width < 1) {
    throw new SiloConfigError(`${source.source}: encoder.0 has ${enc0[0]} output channels; a DegradationModel has 16 x width${sigma ? ' + 1 (the sigma map)' : ''}`);
  }
  return degradationConfig({
    latent_dim: enc0[1]! - s,
    width,
    output_dim: shape('processing.3.weight')[0]!,
    sigma_condition: sigma,
    layer_norm: true,
    latent_size: norm[1],
    sigma_emb_dim: sigma ? shape('sigma_condition_precondition.0.weight')[1] : undefined,
    sigma_hidden: sigma ? shape('sigma_condition_precondition.0.weight')[0] : undefined,
  });
}

// ---------------------------------------------------------------------------------------------
// AggregationNetwork (the Readout-Guidance operator)

export interface AggregationNetworkConfig {
  /** Channels of each readout feature, in SILO's order (up_blocks[0..3].resnets[0..2] for SD-1.5). */
  featureDims: number[];
  /** Timesteps whose features are aggregated; the mixing weights cover featureDims x saveTimestep. */
  saveTimestep: number[];
  projectionDim: number;
  /** BottleneckBlock width (SILO: projection_dim // 4). */
  bottleneckDim: number;
  numNormGroups: number;
  useOutputHead: boolean;
  outputHeadChannels: number;
  /** tanh after the head. */
  outputHeadAct: boolean;
  sigmaCondition: boolean;
  /** One more head input channel: the inpainting mask at latent resolution (random-box inpainting). */
  condInpaint: boolean;
  /** Resolution the features are resized to; SILO hard-codes 64 (LayerNorm([1, 64, 64]), Linear(1280, 64*64)). */
  latentSize: number;
  sigmaEmbDim: number;
}

/** From SILO's constructor arguments (`config.json` of a golden case, or silo_utils.py's call). */
export function aggregationConfig(args: Json): AggregationNetworkConfig {
  const dims = args['feature_dims'];
  if (!Array.isArray(dims) || dims.length === 0 || !dims.every((d) => Number.isInteger(d) && d > 0)) {
    throw new SiloConfigError(`feature_dims must be a non-empty list of positive integers, got ${JSON.stringify(dims)}`);
  }
  const ts = args['save_timestep'] ?? [0];
  if (!Array.isArray(ts) || ts.length === 0) {
    throw new SiloConfigError(`save_timestep must be a non-empty list, got ${JSON.stringify(ts)}`);
  }
  // SILO's forward raises for the Sequential-wrapped blocks; the other branches are unused by its sampler.
  reject(args, 'bottleneck_sequential', [false], 'AggregationNetwork.forward raises for sequential bottlenecks');
  reject(args, 'learnable_kernel', [false], 'unused by SILO\'s sampler');
  reject(args, 'pass_z0_pred', [false], 'unused by SILO\'s sampler');
  // With sigma_condition the blocks receive the 1x64x64 sigma map, which sigma_emb_layers (Linear(1280, .)) cannot take.
  reject(args, 'sigma_condition_2', [false], 'unused by SILO\'s sampler (and inconsistent with sigma_condition)');
  const projectionDim = int(args, 'projection_dim', 384);
  return {
    featureDims: dims as number[],
    saveTimestep: ts as number[],
    projectionDim,
    bottleneckDim: Math.floor(projectionDim / 4),
    numNormGroups: int(args, 'num_norm_groups', 32),
    useOutputHead: bool(args, 'use_output_head', false),
    outputHeadChannels: int(args, 'output_head_channels', 3),
    outputHeadAct: bool(args, 'output_head_act', true),
    sigmaCondition: bool(args, 'sigma_condition', false),
    condInpaint: bool(args, 'cond_inpaint', false),
    latentSize: int(args, 'latent_size', 64),
    sigmaEmbDim: int(args, 'sigma_emb_dim', 1280),
  };
}

/**
 * silo_utils.StableDiffusionPipeline's construction for SD-1.5 (`--model rg`); every published RG
 * script passes --sigma_condition, and random-box inpainting adds cond_inpaint.
 */
export function sd15AggregationArgs(condInpaint = false): Json {
  return {
    projection_dim: 384,
    feature_dims: [1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320],
    save_timestep: [0],
    num_timesteps: 1000,
    use_output_head: true,
    output_head_channels: 4,
    output_head_act: false,
    bottleneck_sequential: false,
    sigma_condition: true,
    cond_inpaint: condInpaint,
  };
}

// ---------------------------------------------------------------------------------------------
// LatentDegradationNetwork from preserve_LatentDegradationNetwork.py (the "preserve" CNN)

export interface PreserveNetworkConfig {
  inChannels: number;
  outChannels: number;
  baseChannels: number;
  noiseEmbedDim: number;
  posEmbedChannels: number;
  numBlocks: number;
  /** sigma is divided by this before the sinusoidal embedding. */
  maxNoise: number;
  /** Side of the stored positional-embedding buffer (SILO: 64). */
  posSize: number;
}

export function preserveConfig(args: Json): PreserveNetworkConfig {
  const noiseEmbedDim = int(args, 'noise_embed_dim', 128, 4);
  // SILO writes sin into the even and cos into the odd columns of dim/2 frequencies: dim must be even.
  if (noiseEmbedDim % 2 !== 0) throw new SiloConfigError(`noise_embed_dim must be even, got ${noiseEmbedDim}`);
  return {
    inChannels: int(args, 'in_channels', 4),
    outChannels: int(args, 'out_channels', 4),
    baseChannels: int(args, 'base_channels', 32),
    noiseEmbedDim,
    posEmbedChannels: int(args, 'pos_embed_channels', 8),
    numBlocks: int(args, 'num_blocks', 3),
    maxNoise: num(args, 'max_noise', 1),
    posSize: int(args, 'pos_size', 64),
  };
}

/** silo_sample.py's construction for `--model preserve_LatentDegradationNetwork`. */
export const SILO_PRESERVE_SAMPLER_ARGS: Json = {
  in_channels: 4,
  out_channels: 4,
  base_channels: 48,
  num_blocks: 3,
  max_noise: 0.1,
};

/** Whether a state dict is a preserve LatentDegradationNetwork's (rather than a DegradationModel's). */
export function isPreserveStateDict(source: TensorSource): boolean {
  return source.has('initial_conv.weight') && source.has('pos_embedding.positional_embedding');
}

/**
 * The preserve network's construction read off its state dict; max_noise is no tensor, so it is
 * silo_sample.py's (0.1), as are the defaults of anything the shapes leave open.
 */
export function inferPreserveConfig(source: TensorSource): PreserveNetworkConfig {
  const shape = (name: string) => {
    if (!source.has(name)) throw new SiloConfigError(`${source.source}: missing tensor "${name}": not a SILO LatentDegradationNetwork state dict`);
    return source.info(name).shape;
  };
  const pos = shape('pos_embedding.positional_embedding');
  if (pos.length !== 3 || pos[1] !== pos[2]) {
    throw new SiloConfigError(`${source.source}: pos_embedding.positional_embedding has shape [${pos.join(', ')}], expected [C, S, S]`);
  }
  let numBlocks = 0;
  while (source.has(`blocks.${numBlocks}.conv1.weight`)) numBlocks++;
  return preserveConfig({
    ...SILO_PRESERVE_SAMPLER_ARGS,
    in_channels: shape('initial_proj.0.weight')[0],
    out_channels: shape('final_conv.weight')[0],
    base_channels: shape('initial_conv.weight')[0],
    noise_embed_dim: shape('identity_gate.0.weight')[1],
    pos_embed_channels: pos[0],
    pos_size: pos[1],
    num_blocks: numBlocks,
  });
}
