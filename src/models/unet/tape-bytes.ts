// How many bytes a reverse-mode tape of the UNet holds (one kept input per stage of unetStages, plus each
// resnet's norm2 input: the activations a 'reuse' forward keeps alive until its VJP), computed from the
// config alone (no weights)
// so that a sampler can choose between keeping them and recomputing the forward before it records.
// It walks the stages in unetStages' order; test/models/unet-tape-bytes.test.ts checks it against real tapes.

import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import type { UNetConfig } from './config.js';

/** Bytes readoutForward's tape keeps for a sample of `shape` [N, C, H, W] (f32): stage inputs and resnet internals. */
export function unetTapeBytes(config: UNetConfig, shape: readonly number[]): number {
  assertArg(shape.length === 4, `unetTapeBytes: sample shape ${shapeString(shape)} must be [N, C, H, W]`);
  const [n, c0, h0, w0] = shape as [number, number, number, number];
  const boc = config.blockOutChannels;
  const nb = boc.length;
  const m = 2 ** (nb - 1);
  assertArg(h0 % m === 0 && w0 % m === 0, `unetTapeBytes: H and W of ${shapeString(shape)} must be multiples of ${m}`);
  let h = h0;
  let w = w0;
  let total = 0;
  const keep = (channels: number) => (total += n * channels * h * w * 4);
  const skips: number[] = []; // channels of each pushed skip, popped by the up path at the same resolution
  keep(c0); // conv_in
  let c = boc[0]!;
  skips.push(c);
  for (let i = 0; i < nb; i++) {
    const cross = config.downBlockTypes[i] === 'CrossAttnDownBlock2D';
    for (let j = 0; j < config.layersPerBlock[i]!; j++) {
      keep(c); // resnet
      c = boc[i]!;
      keep(c); // its norm2 input
      if (cross) keep(c); // transformer
      skips.push(c);
    }
    if (i < nb - 1) {
      keep(c); // downsampler
      h /= 2;
      w /= 2;
      skips.push(c);
    }
  }
  // mid block: resnet (+ norm2 input), transformer, resnet (+ norm2 input)
  keep(c);
  keep(c);
  keep(c);
  keep(c);
  keep(c);
  for (let i = 0; i < nb; i++) {
    const r = nb - 1 - i;
    const cross = config.upBlockTypes[i] === 'CrossAttnUpBlock2D';
    for (let j = 0; j < config.layersPerBlock[r]! + 1; j++) {
      const skip = skips.pop();
      assertArg(skip !== undefined, 'unetTapeBytes: the up path pops more skips than the down path pushed');
      keep(c + skip); // the concat is a new tensor
      c = boc[r]!;
      keep(c); // the resnet's norm2 input
      if (cross) keep(c);
    }
    if (i < nb - 1) {
      keep(c); // upsampler
      h *= 2;
      w *= 2;
    }
  }
  keep(c); // conv_out (norm + silu + conv)
  return total;
}
