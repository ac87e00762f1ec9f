// What to tell a user whose adapter cannot hold a restoration of the chosen size: which limit, how much
// was needed, and a size that fits. The buffers that cannot be split grow with the pixel count, so a
// size follows from the largest bytes-per-pixel among them: the image itself; per UNet level the
// widest activation (a cross-attention block's GEGLU projection holds 8x its channels) at that
// level's resolution; and for methods with the autoencoder inside the loop (its gradient is taken, so
// it runs untiled) every encoder and decoder level, upsampled outputs included. The first buffer that
// failed only bounds it from below (it need not be the largest). Browser-safe.

import { LimitError } from '../engine/errors.js';
import type { UNetConfig } from '../models/unet/config.js';
import type { VaeConfig } from '../models/vae/config.js';
import { LATENT_FACTOR } from './size.js';

const mib = (b: number) => `${(b / 2 ** 20).toFixed(b < 2 ** 20 ? 3 : 1)} MiB`;

/**
 * The largest unsplittable f32 buffer of a restoration, in bytes per image pixel. `vae` is given when
 * the autoencoder runs inside the loop (Latent-DPS, PSLD); `vaeFactor` is its down factor.
 */
export function restorationBytesPerPixel(unet: Pick<UNetConfig, 'blockOutChannels' | 'downBlockTypes'>, vaeFactor = LATENT_FACTOR, vae?: Pick<VaeConfig, 'blockOutChannels'>): number {
  let most = 3 * 4; // the RGB image
  unet.blockOutChannels.forEach((c, i) => {
    const attention = unet.downBlockTypes[i] === 'CrossAttnDownBlock2D';
    const perLatentPixel = (attention ? 8 : 1) * c * 4;
    most = Math.max(most, perLatentPixel / (vaeFactor * vaeFactor * 4 ** i));
  });
  // Encoder level i and decoder level i hold boc[i] channels at 1 / 2^i of the side; the decoder's
  // upsampler lifts boc[i + 1] channels to that side as well.
  vae?.blockOutChannels.forEach((c, i, boc) => {
    most = Math.max(most, (Math.max(c, boc[i + 1] ?? 0) * 4) / 4 ** i);
  });
  return most;
}

/** The largest side (a multiple of `multiple`) whose largest buffer fits `available`, or null when none does. */
export function sizeThatFits(available: number, bytesPerPixel: number, multiple = LATENT_FACTOR): number | null {
  const s = Math.floor(Math.sqrt(available / bytesPerPixel) / multiple) * multiple;
  return s >= multiple ? s : null;
}

/**
 * A message for a LimitError met while restoring at `size` x `size` (sides multiples of `multiple`),
 * with the models' bytes per pixel (restorationBytesPerPixel); the error's own text when it names no size limit.
 */
export function limitAdvice(e: LimitError, size: number, multiple = LATENT_FACTOR, bytesPerPixel = 0): string {
  const x = e.exceeded;
  if (!x) return e.message;
  const fits = sizeThatFits(x.available, Math.max(bytesPerPixel, x.needed / (size * size)), multiple);
  const what = `this adapter's ${x.limit} is ${mib(x.available)}, and a ${size}x${size} restoration needs ${mib(x.needed)} in one buffer`;
  const advice = fits && fits < size
    ? `choose a size of ${fits}x${fits} or smaller, or use a browser or GPU that offers a larger ${x.limit}`
    : `no smaller size helps (a weight or table alone exceeds it): use a browser or GPU that offers a larger ${x.limit}`;
  return `${what}; ${advice} (${e.message})`;
}
