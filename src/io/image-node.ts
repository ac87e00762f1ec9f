// Node-only image file helpers (node:fs); everything else in src/io is browser-safe.

import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../formats/atomic-write-node.js';
import { decodeImage } from './decode.js';
import { encodePng } from './png.js';
import { ImageError, type Channels, type Image16, type Image8 } from './types.js';

/** Reads and decodes an image file, dispatching on its magic bytes (formats: DECODABLE_FORMATS). */
export async function readImageFile(path: string): Promise<Image8> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new ImageError(path, `cannot read the file (${(e as Error).message})`);
  }
  return decodeImage(bytes, path);
}

/**
 * Writes a PNG: an Image8 / Image16, or interleaved 8-bit pixels with their size (3 channels, RGB, by
 * default; 1 gray, 2 gray + alpha, 4 RGBA). Atomic: the file holds the old image or the whole new one,
 * never a truncated PNG (see writeFileAtomic); failures are an OutputFileError naming the path.
 */
export async function writePng(path: string, image: Image8 | Image16): Promise<void>;
export async function writePng(path: string, pixels: Uint8Array, width: number, height: number, channels?: Channels): Promise<void>;
export async function writePng(path: string, a: Image8 | Image16 | Uint8Array, width?: number, height?: number, channels: Channels = 3): Promise<void> {
  const image = a instanceof Uint8Array ? { width: width!, height: height!, channels, data: a } : a;
  await writeFileAtomic(path, await encodePng(image));
}
