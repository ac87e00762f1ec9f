// The blocks of diffusers' VAE Encoder / Decoder (no time embedding, GroupNorm eps 1e-6):
//   DownEncoderBlock2D: resnets, then Downsample2D (padding=0: F.pad (0, 1, 0, 1), then conv 3x3 stride 2)
//   UpDecoderBlock2D:   resnets, then Upsample2D (nearest x2, then conv 3x3 padding 1)
//   UNetMidBlock2D:     resnet, attention (optional), resnet
// The modules and their weights; how they run is the stage chain of ./stages.ts.

import { ResnetBlock2D } from '../resnet.js';
import { Downsample2D, Upsample2D } from '../samplers.js';
import type { WeightLoader } from '../weights.js';
import { VaeAttention } from './attention.js';

export interface NormOptions {
  groups: number;
  eps: number;
}

function resnets(w: WeightLoader, count: number, cin: number, cout: number, norm: NormOptions): ResnetBlock2D[] {
  return Array.from({ length: count }, (_, i) => new ResnetBlock2D(w.scope(`resnets.${i}.`), i === 0 ? cin : cout, cout, norm));
}

export class DownEncoderBlock2D {
  readonly resnets: ResnetBlock2D[];
  readonly downsampler?: Downsample2D;
  constructor(w: WeightLoader, cin: number, cout: number, layers: number, addDownsample: boolean, norm: NormOptions) {
    this.resnets = resnets(w, layers, cin, cout, norm);
    if (addDownsample) this.downsampler = new Downsample2D(w.scope('downsamplers.0.'), cout, 0);
  }
}

export class UpDecoderBlock2D {
  readonly resnets: ResnetBlock2D[];
  readonly upsampler?: Upsample2D;
  constructor(w: WeightLoader, cin: number, cout: number, layers: number, addUpsample: boolean, norm: NormOptions) {
    this.resnets = resnets(w, layers, cin, cout, norm);
    if (addUpsample) this.upsampler = new Upsample2D(w.scope('upsamplers.0.'), cout);
  }
}

/** UNetMidBlock2D as the VAE builds it: one head of width C (attention_head_dim = C), no time embedding. */
export class VaeMidBlock {
  readonly resnets: ResnetBlock2D[];
  readonly attention?: VaeAttention;
  constructor(w: WeightLoader, channels: number, addAttention: boolean, norm: NormOptions) {
    this.resnets = resnets(w, 2, channels, channels, norm);
    if (addAttention) this.attention = new VaeAttention(w.scope('attentions.0.'), channels, { ...norm, headDim: channels });
  }
}
