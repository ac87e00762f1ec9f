// Image-quality metrics on host arrays (f64 accumulation).

/** Mean squared error of two equally long arrays. */
export function mse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`mse: lengths differ (${a.length} vs ${b.length})`);
  if (a.length === 0) throw new RangeError('mse: empty arrays');
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    s += d * d;
  }
  return s / a.length;
}

/** PSNR in dB, 10 log10(range^2 / mse): range 1 for images in [0, 1], 2 for [-1, 1]. Infinity when equal. */
export function psnr(a: ArrayLike<number>, b: ArrayLike<number>, range = 1): number {
  if (!(range > 0)) throw new RangeError(`psnr: data range must be > 0, got ${range}`);
  return 10 * Math.log10((range * range) / mse(a, b));
}
