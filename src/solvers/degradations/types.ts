// The contract every image-space degradation A satisfies: y = A(x) on GPU tensors in [-1, 1] NCHW,
// recorded into the caller's program (no read-back), plus owned constants to free.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';

export interface Degradation {
  /** Short identifier (e.g. 'gaussian_blur', 'sr4', 'inpaint_box'). */
  readonly name: string;
  /** A(x) for x [N, C, H, W] in [-1, 1]; a new tensor. */
  apply(rec: Recorder, x: Tensor): Tensor;
  /**
   * The measurement brought to the image size the encoder expects (SILO encodes E(y) at full size):
   * only operators that change the size (super-resolution) define it.
   */
  upsampleMeasurement?(rec: Recorder, y: Tensor): Tensor;
  /**
   * The adjoint A^T g for g shaped like A(x) (the VJP of a linear A; Latent-DPS and PSLD back-propagate
   * the pixel residual through it). `inputShape` is x's shape. Operators that are not linear document
   * the surrogate they use (JPEG: straight-through rounding).
   */
  adjoint(rec: Recorder, gradY: Tensor, inputShape: readonly number[]): Tensor;
  /** Frees the operator's GPU constants (kernels, matrices, masks). */
  dispose(): void;
}
