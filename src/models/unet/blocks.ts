// The UNet's down, mid and up blocks with diffusers' names (resnets.i, attentions.i, downsamplers.0.conv,
// upsamplers.0.conv). CrossAttn* blocks follow every ResNet with a Transformer2DModel; the plain ones have
// none. Down blocks hand back every intermediate state as a skip; up blocks concatenate them (last
// first) along channels before each ResNet.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { concatChannels } from '../../engine/ops/layout.js';
import { upsampleNearest2x } from '../../engine/ops/resample.js';
import { Conv2d } from '../layers.js';
import { ResnetBlock2D } from '../resnet.js';
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

/** Downsample2D with use_conv: conv 3x3, stride 2. */
export class Downsample2D {
  readonly conv: Conv2d;
  constructor(w: WeightLoader, channels: number, padding: number) {
    this.conv = new Conv2d(w, 'conv', channels, channels, 3, { stride: 2, padding });
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return this.conv.forward(rec, x);
  }
}

/** Upsample2D with use_conv: nearest x2, then conv 3x3. */
export class Upsample2D {
  readonly conv: Conv2d;
  constructor(w: WeightLoader, channels: number) {
    this.conv = new Conv2d(w, 'conv', channels, channels, 3, { padding: 1 });
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => this.conv.forward(rec, upsampleNearest2x(rec, x)));
  }
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

  /** Returns the output and the skips it leaves for the up path (the output is the last skip). */
  forward(rec: Recorder, x: Tensor, tembSilu: Tensor, context: Tensor): { out: Tensor; skips: Tensor[] } {
    return rec.engine.tidy(() => {
      const skips: Tensor[] = [];
      let h = x;
      this.resnets.forEach((r, i) => {
        h = rec.scope(`resnets.${i}`, () => r.forward(rec, h, tembSilu).out);
        if (this.crossAttention) h = rec.scope(`attentions.${i}`, () => this.attentions[i]!.forward(rec, h, context));
        skips.push(h);
      });
      if (this.downsampler) {
        h = rec.scope('downsamplers.0', () => this.downsampler!.forward(rec, h));
        skips.push(h);
      }
      return { out: h, skips };
    });
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
  forward(rec: Recorder, x: Tensor, tembSilu: Tensor, context: Tensor): Tensor {
    return rec.engine.tidy(() => {
      let h = rec.scope('resnets.0', () => this.resnets[0]!.forward(rec, x, tembSilu).out);
      this.attentions.forEach((a, i) => {
        h = rec.scope(`attentions.${i}`, () => a.forward(rec, h, context));
        h = rec.scope(`resnets.${i + 1}`, () => this.resnets[i + 1]!.forward(rec, h, tembSilu).out);
      });
      return h;
    });
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

  get skipCount(): number {
    return this.resnets.length;
  }

  /**
   * skips: this block's skips in the order the down path produced them (the last is used first); each is
   * disposed once consumed unless listed in `keep`. With `readout`, each ResNet's conv2 output (before
   * its skip add) is returned too, in resnet order.
   */
  forward(
    rec: Recorder,
    x: Tensor,
    skips: Tensor[],
    tembSilu: Tensor,
    context: Tensor,
    opts: { readout?: boolean; keep?: ReadonlySet<Tensor> } = {},
  ): { out: Tensor; hidden: Tensor[] } {
    return rec.engine.tidy(() => {
      const pending = skips.slice();
      const hidden: Tensor[] = [];
      let h = x;
      this.resnets.forEach((r, i) => {
        const skip = pending.pop()!;
        const cat = concatChannels(rec, [h, skip]);
        if (!opts.keep?.has(skip)) skip.dispose(); // the concat's read is recorded; the buffer may be reused
        const res = rec.scope(`resnets.${i}`, () => r.forward(rec, cat, tembSilu, opts.readout));
        if (res.hidden) hidden.push(res.hidden);
        h = res.out;
        if (this.crossAttention) h = rec.scope(`attentions.${i}`, () => this.attentions[i]!.forward(rec, h, context));
      });
      if (this.upsampler) h = rec.scope('upsamplers.0', () => this.upsampler!.forward(rec, h));
      return { out: h, hidden };
    });
  }
}
