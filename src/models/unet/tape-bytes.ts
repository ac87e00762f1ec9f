// How many bytes a reverse-mode tape of the UNet holds (each stage's input plus each resnet's norm2 input:
// the activations a 'reuse' forward keeps alive until its VJP), walked from the stage chain's shapes
// (./stages.ts) without recording anything, so that a sampler can choose between keeping them and
// recomputing the forward before it records. test/models/unet-tape-bytes.test.ts checks it against real tapes.

import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { chainTapeBytes } from '../vjp-stages.js';
import { unetStages } from './stages.js';
import type { UNet2DConditionModel } from './unet.js';

/** Bytes readoutForward's tape keeps for a sample of `shape` [N, C, H, W] (f32): stage inputs and resnet internals. */
export function unetTapeBytes(unet: UNet2DConditionModel, shape: readonly number[]): number {
  assertArg(shape.length === 4, `unetTapeBytes: sample shape ${shapeString(shape)} must be [N, C, H, W]`);
  const m = unet.sizeMultiple;
  assertArg(shape[2]! % m === 0 && shape[3]! % m === 0, `unetTapeBytes: H and W of ${shapeString(shape)} must be multiples of ${m}`);
  return chainTapeBytes(unetStages(unet), shape, { keep: true });
}
