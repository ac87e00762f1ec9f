// The UNet's down, mid and up blocks with diffusers' names (resnets.i, attentions.i, downsamplers.0.conv,
// upsamplers.0.conv): the modules and their weights. CrossAttn* blocks follow every ResNet with a
// Transformer2DModel; the plain ones have none. How they run (down blocks leave every intermediate state
// as a skip, up blocks concatenate them back, last first) is the stage chain of ./stages.ts.

import { ResnetBlock2D } from '../resnet.js';
import { Downsample2D, Upsample2D } from '../samplers.js';
import { Transformer2DModel } from './transformer.js';
import type { WeightLoader } from '../weights.js';

/** What every block shares: widths of the time embedding and norms, attention settings. */
export interface BlockSettings {
  tembChannels: number;
  groups: number;
  eps: number;
  heads: number;
  crossAttentionDim: number;
  transformerLayers: number;
  useLinearProjection: boolean;
}

function transformer(w: WeightLoader, channels: number, s: BlockSettings): Transformer2DModel {
  return new Transformer2DModel(w, channels, {
    heads: s.heads,
    crossAttentionDim: s.crossAttentionDim,
    groups: s.groups,
    layers: s.transformerLayers,
    useLinearProjection: s.useLinearProjection,
  });
}

/** CrossAttnDownBlock2D (crossAttention) or DownBlock2D. */
export class DownBlock {
  readonly resnets: ResnetBlock2D[] = [];
  readonly attentions: Transformer2DModel[] = [];
  readonly downsampler?: Downsample2D;

  constructor(
    w: WeightLoader,
    inChannels: number,
    readonly outChannels: number,
    layers: number,
    readonly crossAttention: boolean,
    addDownsample: boolean,
    downsamplePadding: number,
    s: BlockSettings,
  ) {
    for (let i = 0; i < layers; i++) {
      const cin = i === 0 ? inChannels : outChannels;
      this.resnets.push(new ResnetBlock2D(w.scope(`resnets.${i}.`), cin, outChannels, { tembChannels: s.tembChannels, groups: s.groups, eps: s.eps }));
      if (crossAttention) this.attentions.push(transformer(w.scope(`attentions.${i}.`), outChannels, s));
    }
    if (addDownsample) this.downsampler = new Downsample2D(w.scope('downsamplers.0.'), outChannels, downsamplePadding);
  }
}

/** UNetMidBlock2DCrossAttn: resnets.0, then (attentions.i, resnets.i+1) pairs. */
export class MidBlock2DCrossAttn {
  readonly resnets: ResnetBlock2D[] = [];
  readonly attentions: Transformer2DModel[] = [];
  constructor(w: WeightLoader, channels: number, s: BlockSettings, outputScaleFactor = 1, layers = 1) {
    const resnet = (i: number) =>
      new ResnetBlock2D(w.scope(`resnets.${i}.`), channels, channels, { tembChannels: s.tembChannels, groups: s.groups, eps: s.eps, outputScaleFactor });
    this.resnets.push(resnet(0));
    for (let i = 0; i < layers; i++) {
      this.attentions.push(transformer(w.scope(`attentions.${i}.`), channels, s));
      this.resnets.push(resnet(i + 1));
    }
  }
}

/** CrossAttnUpBlock2D (crossAttention) or UpBlock2D. */
export class UpBlock {
  readonly resnets: ResnetBlock2D[] = [];
  readonly attentions: Transformer2DModel[] = [];
  readonly upsampler?: Upsample2D;

  /**
   * prevOutputChannels: width coming from below; skipChannels(i): width of the skip resnet i concatenates
   * (diffusers: the block's in_channels for the last resnet, out_channels otherwise).
   */
  constructor(
    w: WeightLoader,
    inChannels: number,
    prevOutputChannels: number,
    readonly outChannels: number,
    layers: number,
    readonly crossAttention: boolean,
    addUpsample: boolean,
    s: BlockSettings,
  ) {
    for (let i = 0; i < layers; i++) {
      const skip = i === layers - 1 ? inChannels : outChannels;
      const cin = (i === 0 ? prevOutputChannels : outChannels) + skip;
      this.resnets.push(new ResnetBlock2D(w.scope(`resnets.${i}.`), cin, outChannels, { tembChannels: s.tembChannels, groups: s.groups, eps: s.eps }));
      if (crossAttention) this.attentions.push(transformer(w.scope(`attentions.${i}.`), outChannels, s));
    }
    if (addUpsample) this.upsampler = new Upsample2D(w.scope('upsamplers.0.'), outChannels);
  }
}
