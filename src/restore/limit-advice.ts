// What to tell a user whose adapter cannot hold a restoration of the chosen size: which limit, how much
// was needed, and a size that should fit. Activations grow with the pixel count, so the side shrinks
// with the square root of the shortfall (rounded down to the VAE factor); a weight that alone exceeds
// the limit cannot be helped by any size. Browser-safe.

import { LimitError } from '../engine/errors.js';
import { LATENT_FACTOR } from './size.js';

const mib = (b: number) => `${(b / 2 ** 20).toFixed(b < 2 ** 20 ? 3 : 1)} MiB`;

/** The largest side (a multiple of `factor`) that should fit, or null when even the smallest would not. */
export function sizeThatFits(size: number, needed: number, available: number, factor = LATENT_FACTOR): number | null {
  const s = Math.floor((size * Math.sqrt(available / needed)) / factor) * factor;
  return s >= factor && s < size ? s : null;
}

/** A message for a LimitError met while restoring at `size` x `size` (the error's own text when it names no size limit). */
export function limitAdvice(e: LimitError, size: number): string {
  const x = e.exceeded;
  if (!x) return e.message;
  const fits = sizeThatFits(size, x.needed, x.available);
  const what = `this adapter's ${x.limit} is ${mib(x.available)}, and a ${size}x${size} restoration needs ${mib(x.needed)} in one buffer`;
  const advice = fits
    ? `choose a size of about ${fits}x${fits} or smaller, or use a browser or GPU that offers a larger ${x.limit}`
    : `no smaller size helps (a weight or table alone exceeds it): use a browser or GPU that offers a larger ${x.limit}`;
  return `${what}; ${advice} (${e.message})`;
}
