// diffusers' VAE Decoder: conv_in, the mid block, UpDecoderBlock2D per reversed block_out_channels
// (layers_per_block + 1 resnets, all but the last up-sample), GroupNorm + SiLU, conv_out.
// The forward runs the stage chain of ./stages.ts, as the VJP does.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { Conv2d, GroupNorm } from '../layers.js';
import type { WeightLoader } from '../weights.js';
import { UpDecoderBlock2D, VaeMidBlock } from './blocks.js';
import type { VaeConfig } from './config.js';
import { decoderStages, runVaeChain, type Taps } from './stages.js';

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
    return runVaeChain(rec, decoderStages(this), z, taps);
  }
}
