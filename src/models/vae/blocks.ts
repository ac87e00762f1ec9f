// The blocks of diffusers' VAE Encoder / Decoder (no time embedding, GroupNorm eps 1e-6):
//   DownEncoderBlock2D: resnets, then Downsample2D (padding=0: F.pad (0, 1, 0, 1), then conv 3x3 stride 2)
//   UpDecoderBlock2D:   resnets, then Upsample2D (nearest x2, then conv 3x3 padding 1)
//   UNetMidBlock2D:     resnet, attention (optional), resnet

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { conv2d } from '../../engine/ops/conv2d.js';
import { upsampleNearest2x } from '../../engine/ops/resample.js';
import { Conv2d } from '../layers.js';
import { ResnetBlock2D } from '../resnet.js';
import type { WeightLoader } from '../weights.js';
import { VaeAttention } from './attention.js';

export interface NormOptions {
  groups: number;
  eps: number;
}

/** diffusers' Downsample2D(use_conv=True, padding=0): zero-pad right and bottom by 1, conv 3x3 stride 2. */
export class Downsample2D {
  readonly conv: Conv2d;
  constructor(w: WeightLoader, channels: number) {
    this.conv = new Conv2d(w, 'conv', channels, channels, 3, { stride: 2 });
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return conv2d(rec, x, this.conv.weight, this.conv.bias, { stride: 2, padEnd: 1, op: 'downsample' });
  }
}

/** diffusers' Upsample2D(use_conv=True): nearest x2, conv 3x3 padding 1. */
export class Upsample2D {
  readonly conv: Conv2d;
  constructor(w: WeightLoader, channels: number) {
    this.conv = new Conv2d(w, 'conv', channels, channels, 3, { padding: 1 });
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => this.conv.forward(rec, upsampleNearest2x(rec, x)));
  }
}

function resnets(w: WeightLoader, count: number, cin: number, cout: number, norm: NormOptions): ResnetBlock2D[] {
  return Array.from({ length: count }, (_, i) => new ResnetBlock2D(w.scope(`resnets.${i}.`), i === 0 ? cin : cout, cout, norm));
}

function runResnets(rec: Recorder, blocks: ResnetBlock2D[], x: Tensor): Tensor {
  let h = x;
  blocks.forEach((r, i) => {
    const out = rec.scope(`resnets.${i}`, () => r.forward(rec, h).out);
    if (h !== x) h.dispose(); // recorded its last read: the buffer can serve the next block
    h = out;
  });
  return h;
}

export class DownEncoderBlock2D {
  readonly resnets: ResnetBlock2D[];
  readonly downsampler?: Downsample2D;
  constructor(w: WeightLoader, cin: number, cout: number, layers: number, addDownsample: boolean, norm: NormOptions) {
    this.resnets = resnets(w, layers, cin, cout, norm);
    if (addDownsample) this.downsampler = new Downsample2D(w.scope('downsamplers.0.'), cout);
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => {
      const h = runResnets(rec, this.resnets, x);
      return this.downsampler ? rec.scope('downsamplers.0', () => this.downsampler!.forward(rec, h)) : h;
    });
  }
}

export class UpDecoderBlock2D {
  readonly resnets: ResnetBlock2D[];
  readonly upsampler?: Upsample2D;
  constructor(w: WeightLoader, cin: number, cout: number, layers: number, addUpsample: boolean, norm: NormOptions) {
    this.resnets = resnets(w, layers, cin, cout, norm);
    if (addUpsample) this.upsampler = new Upsample2D(w.scope('upsamplers.0.'), cout);
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => {
      const h = runResnets(rec, this.resnets, x);
      return this.upsampler ? rec.scope('upsamplers.0', () => this.upsampler!.forward(rec, h)) : h;
    });
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
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => {
      let h = rec.scope('resnets.0', () => this.resnets[0]!.forward(rec, x).out);
      if (this.attention) h = rec.scope('attentions.0', () => this.attention!.forward(rec, h));
      return rec.scope('resnets.1', () => this.resnets[1]!.forward(rec, h).out);
    });
  }
}
