// CPU references (f64) for the resampling and channel-layout vector-Jacobian products, written as the
// scatter (transpose) of the forward, the opposite form to the GPU's gather.

import { linearTaps } from './resample.js';

/** Transpose of nearest x2: every output gradient goes to its parent input. */
export function nearest2xBackwardRef(g: ArrayLike<number>, planes: number, h: number, w: number): Float64Array {
  const dx = new Float64Array(planes * h * w);
  for (let p = 0; p < planes; p++) {
    for (let y = 0; y < 2 * h; y++) {
      for (let x = 0; x < 2 * w; x++) dx[(p * h + (y >> 1)) * w + (x >> 1)] += g[(p * 2 * h + y) * 2 * w + x]!;
    }
  }
  return dx;
}

/** Transpose of bilinearRef: each output gradient spread over its four taps with the forward's weights. */
export function bilinearBackwardRef(g: ArrayLike<number>, planes: number, h: number, w: number, oh: number, ow: number): Float64Array {
  const dx = new Float64Array(planes * h * w);
  for (let p = 0; p < planes; p++) {
    for (let y = 0; y < oh; y++) {
      const ty = linearTaps(y, h, oh);
      for (let xo = 0; xo < ow; xo++) {
        const tx = linearTaps(xo, w, ow);
        const gv = g[(p * oh + y) * ow + xo]!;
        const add = (yy: number, xx: number, wt: number) => (dx[(p * h + yy) * w + xx] += wt * gv);
        add(ty.i0, tx.i0, (1 - ty.l1) * (1 - tx.l1));
        add(ty.i0, tx.i1, (1 - ty.l1) * tx.l1);
        add(ty.i1, tx.i0, ty.l1 * (1 - tx.l1));
        add(ty.i1, tx.i1, ty.l1 * tx.l1);
      }
    }
  }
  return dx;
}

/** Transpose of a channel slice: g [B, count, inner] placed at channel `start` of zeros [B, c, inner]. */
export function placeChannelsRef(g: ArrayLike<number>, batch: number, c: number, inner: number, start: number, count: number): Float64Array {
  const dx = new Float64Array(batch * c * inner);
  for (let b = 0; b < batch; b++) {
    for (let k = 0; k < count; k++) {
      for (let r = 0; r < inner; r++) dx[(b * c + start + k) * inner + r] = g[(b * count + k) * inner + r]!;
    }
  }
  return dx;
}
