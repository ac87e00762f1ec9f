// Which image format a file holds, from its first bytes (never its name), and decoding by format.

import { decodeJpeg } from './jpeg.js';
import { decodePng } from './png.js';
import { ImageError, type Image8 } from './types.js';

export type ImageFormat = 'png' | 'jpeg' | 'gif' | 'webp' | 'bmp' | 'tiff';

/** The formats decodeImage reads. */
export const DECODABLE_FORMATS: readonly ImageFormat[] = ['png', 'jpeg'];

/** The format named by the magic bytes, or null when they match none of ImageFormat. */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat | null {
  const at = (p: number, ...sig: number[]) => sig.every((v, i) => bytes[p + i] === v);
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'png';
  if (at(0, 0xff, 0xd8, 0xff)) return 'jpeg';
  if (at(0, 0x47, 0x49, 0x46, 0x38)) return 'gif'; // GIF8
  if (at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return 'webp'; // RIFF....WEBP
  if (at(0, 0x42, 0x4d)) return 'bmp'; // BM
  if (at(0, 0x49, 0x49, 0x2a, 0x00) || at(0, 0x4d, 0x4d, 0x00, 0x2a)) return 'tiff';
  return null;
}

/**
 * Decodes a file's bytes by their magic number to 8 bits a sample (channels as the file stores them;
 * see decodePng and decodeJpeg). Other formats are an ImageError that names the format found and the ones supported.
 * `name` only labels errors.
 */
export async function decodeImage(bytes: Uint8Array, name: string): Promise<Image8> {
  const format = sniffImageFormat(bytes);
  if (format === 'png') return decodePng(bytes, name);
  if (format === 'jpeg') return decodeJpeg(bytes, name);
  const supported = DECODABLE_FORMATS.map((f) => f.toUpperCase()).join(', ');
  const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
  const found = bytes.length === 0 ? 'an empty file' : format ? `a ${format.toUpperCase()} file` : `not a known image format (first bytes ${head})`;
  throw new ImageError(name, `${found}; supported formats: ${supported}`);
}
