// diffusers' VAE Encoder (double_z): conv_in, DownEncoderBlock2D per block_out_channels (all but the
// last down-sample), the mid block, GroupNorm + SiLU, conv_out to 2 * latent channels (the moments).
// The forward runs the stage chain of ./stages.ts, as the VJP does.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { Conv2d, GroupNorm } from '../layers.js';
import type { WeightLoader } from '../weights.js';
import { DownEncoderBlock2D, VaeMidBlock } from './blocks.js';
import type { VaeConfig } from './config.js';
import { encoderStages, runVaeChain, type Taps } from './stages.js';

export type { Taps };

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
    return runVaeChain(rec, encoderStages(this), x, taps);
  }
}
