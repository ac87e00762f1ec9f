// diffusers' VAE Encoder (double_z): conv_in, DownEncoderBlock2D per block_out_channels (all but the
// last down-sample), the mid block, GroupNorm + SiLU, conv_out to 2 * latent channels (the moments).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { silu } from '../../engine/ops/elementwise.js';
import { Conv2d, GroupNorm } from '../layers.js';
import type { WeightLoader } from '../weights.js';
import { DownEncoderBlock2D, VaeMidBlock } from './blocks.js';
import type { VaeConfig } from './config.js';

/** Intermediate outputs by diffusers' module names (conv_in, down_block_i, mid_block, conv_norm_out). */
export type Taps = Record<string, Tensor>;

export class VaeEncoder {
  readonly convIn: Conv2d;
  readonly downBlocks: DownEncoderBlock2D[];
  readonly midBlock: VaeMidBlock;
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;

  constructor(w: WeightLoader, readonly cfg: VaeConfig) {
    const boc = cfg.blockOutChannels;
    const norm = { groups: cfg.normGroups, eps: cfg.normEps };
    this.convIn = new Conv2d(w, 'conv_in', cfg.inChannels, boc[0]!, 3, { padding: 1 });
    this.downBlocks = boc.map(
      (c, i) => new DownEncoderBlock2D(w.scope(`down_blocks.${i}.`), i === 0 ? boc[0]! : boc[i - 1]!, c, cfg.layersPerBlock, i < boc.length - 1, norm),
    );
    const top = boc[boc.length - 1]!;
    this.midBlock = new VaeMidBlock(w.scope('mid_block.'), top, cfg.midBlockAddAttention, norm);
    this.convNormOut = new GroupNorm(w, 'conv_norm_out', cfg.normGroups, top, cfg.normEps);
    this.convOut = new Conv2d(w, 'conv_out', top, 2 * cfg.latentChannels, 3, { padding: 1 });
  }

  /** image [N, in_channels, H, W] -> [N, 2 * latent, H / f, W / f]; with `taps`, the intermediates too (the caller owns them). */
  forward(rec: Recorder, x: Tensor, taps?: Taps): Tensor {
    return rec.engine.tidy(() => {
      const keep: Taps = {};
      // Each intermediate is freed as soon as the op reading it has been recorded (unless tapped), so
      // the peak holds two activations rather than the whole chain.
      const step = (prev: Tensor, t: Tensor, name: string): Tensor => {
        if (taps) keep[name] = t;
        else if (prev !== x) prev.dispose();
        return t;
      };
      let h = step(x, rec.scope('conv_in', () => this.convIn.forward(rec, x)), 'conv_in');
      this.downBlocks.forEach((b, i) => {
        h = step(h, rec.scope(`down_blocks.${i}`, () => b.forward(rec, h)), `down_block_${i}`);
      });
      h = step(h, rec.scope('mid_block', () => this.midBlock.forward(rec, h)), 'mid_block');
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
