// CPU references for resampling (f64 arithmetic), written from PyTorch's documented semantics.

/** F.interpolate(scale_factor=2, mode='nearest') on planes [P, H, W]. */
export function nearest2xRef(x: ArrayLike<number>, planes: number, h: number, w: number): Float32Array {
  const out = new Float32Array(planes * 4 * h * w);
  for (let p = 0; p < planes; p++) {
    for (let y = 0; y < 2 * h; y++) {
      for (let xo = 0; xo < 2 * w; xo++) out[(p * 2 * h + y) * 2 * w + xo] = x[(p * h + Math.floor(y / 2)) * w + Math.floor(xo / 2)]!;
    }
  }
  return out;
}

/**
 * Source taps and weights of one output index for bilinear, align_corners=False: PyTorch's
 * area_pixel_compute_source_index, which works in the f32 opmath type: scale = in/out rounded to
 * f32 (no scale_factor given), src = f32(scale * (dst + 0.5)) - 0.5 (the subtraction is exact),
 * clamped at 0; the upper tap is clamped to the last index. The coordinate's f32 rounding is part
 * of the semantics: at src ~ 60 one ulp moves the weights by 4e-6.
 */
export function linearTaps(dst: number, inSize: number, outSize: number): { i0: number; i1: number; l1: number } {
  if (inSize === outSize) return { i0: dst, i1: dst, l1: 0 };
  const scale = Math.fround(inSize / outSize);
  const src = Math.max(Math.fround(scale * (dst + 0.5)) - 0.5, 0);
  const i0 = Math.min(Math.floor(src), inSize - 1);
  const l1 = Math.min(Math.max(src - i0, 0), 1);
  return { i0, i1: i0 < inSize - 1 ? i0 + 1 : i0, l1 };
}

/** F.interpolate(size=(oh, ow), mode='bilinear', align_corners=False, antialias=False) on [P, H, W]. */
export function bilinearRef(x: ArrayLike<number>, planes: number, h: number, w: number, oh: number, ow: number): Float32Array {
  const out = new Float32Array(planes * oh * ow);
  for (let p = 0; p < planes; p++) {
    for (let y = 0; y < oh; y++) {
      const ty = linearTaps(y, h, oh);
      for (let xo = 0; xo < ow; xo++) {
        const tx = linearTaps(xo, w, ow);
        const at = (yy: number, xx: number) => x[(p * h + yy) * w + xx]!;
        const top = at(ty.i0, tx.i0) * (1 - tx.l1) + at(ty.i0, tx.i1) * tx.l1;
        const bot = at(ty.i1, tx.i0) * (1 - tx.l1) + at(ty.i1, tx.i1) * tx.l1;
        out[(p * oh + y) * ow + xo] = top * (1 - ty.l1) + bot * ty.l1;
      }
    }
  }
  return out;
}
