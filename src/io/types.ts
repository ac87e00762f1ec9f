// Pixel images as the io layer passes them around, and the error every image decoder throws.

import { SiloError, assertArg } from '../engine/errors.js';

export type Channels = 1 | 2 | 3 | 4;

/**
 * Interleaved pixels, row-major, top row first: sample c of pixel (x, y) is
 * data[(y * width + x) * channels + c]. Channels: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.
 */
export interface PixelImage<T extends Uint8Array | Uint16Array = Uint8Array> {
  width: number;
  height: number;
  channels: Channels;
  data: T;
}

/** 8 bits a sample: what the tensor helpers and the encoders take. */
export type Image8 = PixelImage<Uint8Array>;
/** 16 bits a sample (a 16-bit PNG read with decodePng16). */
export type Image16 = PixelImage<Uint16Array>;

/** A malformed, unsupported or unreadable image file; `file` is the name the caller gave. */
export class ImageError extends SiloError {
  constructor(
    readonly file: string,
    readonly detail: string,
    format = 'image',
  ) {
    super(`${format} ${file}: ${detail}`);
  }
}

/** ArgumentError unless `img` is a consistent PixelImage (integer sizes >= 1, data of the right length). */
export function checkImage(img: PixelImage<Uint8Array | Uint16Array>, what: string): void {
  const { width, height, channels, data } = img;
  assertArg(Number.isInteger(width) && Number.isInteger(height) && width >= 1 && height >= 1, `${what}: invalid size ${width}x${height} (width and height must be integers >= 1)`);
  assertArg(Number.isInteger(channels) && channels >= 1 && channels <= 4, `${what}: invalid channel count ${channels} (1..4)`);
  assertArg(data.length === width * height * channels, `${what}: data has ${data.length} samples, ${width}x${height}x${channels} needs ${width * height * channels}`);
}
