// diffusers' VAE Decoder: conv_in, the mid block, UpDecoderBlock2D per reversed block_out_channels
// (layers_per_block + 1 resnets, all but the last up-sample), GroupNorm + SiLU, conv_out.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { silu } from '../../engine/ops/elementwise.js';
import { Conv2d, GroupNorm } from '../layers.js';
import type { WeightLoader } from '../weights.js';
import { UpDecoderBlock2D, VaeMidBlock } from './blocks.js';
import type { VaeConfig } from './config.js';
import type { Taps } from './encoder.js';

export class VaeDecoder {
  readonly convIn: Conv2d;
  readonly midBlock: VaeMidBlock;
  readonly upBlocks: UpDecoderBlock2D[];
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;

  constructor(w: WeightLoader, readonly cfg: VaeConfig) {
    const rev = [...cfg.blockOutChannels].reverse();
    const norm = { groups: cfg.normGroups, eps: cfg.normEps };
    this.convIn = new Conv2d(w, 'conv_in', cfg.latentChannels, rev[0]!, 3, { padding: 1 });
    this.midBlock = new VaeMidBlock(w.scope('mid_block.'), rev[0]!, cfg.midBlockAddAttention, norm);
    this.upBlocks = rev.map(
      (c, i) => new UpDecoderBlock2D(w.scope(`up_blocks.${i}.`), i === 0 ? rev[0]! : rev[i - 1]!, c, cfg.layersPerBlock + 1, i < rev.length - 1, norm),
    );
    const last = rev[rev.length - 1]!;
    this.convNormOut = new GroupNorm(w, 'conv_norm_out', cfg.normGroups, last, cfg.normEps);
    this.convOut = new Conv2d(w, 'conv_out', last, cfg.outChannels, 3, { padding: 1 });
  }

  /** z [N, latent, h, w] (after post_quant_conv) -> image [N, out_channels, h f, w f]. */
  forward(rec: Recorder, z: Tensor, taps?: Taps): Tensor {
    return rec.engine.tidy(() => {
      const keep: Taps = {};
      // Each intermediate is freed as soon as the op reading it has been recorded (unless tapped), so
      // the peak holds two activations rather than the whole chain.
      const step = (prev: Tensor, t: Tensor, name: string): Tensor => {
        if (taps) keep[name] = t;
        else if (prev !== z) prev.dispose();
        return t;
      };
      let h = step(z, rec.scope('conv_in', () => this.convIn.forward(rec, z)), 'conv_in');
      h = step(h, rec.scope('mid_block', () => this.midBlock.forward(rec, h)), 'mid_block');
      this.upBlocks.forEach((b, i) => {
        h = step(h, rec.scope(`up_blocks.${i}`, () => b.forward(rec, h)), `up_block_${i}`);
      });
      if (taps) {
        // Unfused, so the GroupNorm output itself can be returned.
        h = step(h, this.convNormOut.forward(rec, h), 'conv_norm_out');
        h = step(h, silu(rec, h), 'conv_act');
      } else {
        h = step(h, this.convNormOut.forward(rec, h, 'silu'), 'conv_act');
      }
      const out = rec.scope('conv_out', () => this.convOut.forward(rec, h));
      if (taps) Object.assign(taps, keep);
      return { out, keep };
    }).out;
  }
}
