// Picked image files to pixels, for both workers: our own decoders for PNG and JPEG (the same pixels as
// the CLI), the browser's for the other formats, with the same size caps.

import { decodeImage, sniffImageFormat } from '../src/io/decode.js';
import { pixelCapProblem } from '../src/io/pixel-cap.js';
import { ImageError, type Image8 } from '../src/io/types.js';

/** Image files larger than this are refused before decoding. */
const MAX_IMAGE_FILE_BYTES = 64 << 20;

/** Our own decoders for PNG and JPEG (the same pixels as the CLI); the browser's for the rest. */
export async function decode(bytes: Uint8Array, name: string): Promise<Image8> {
  if (bytes.byteLength > MAX_IMAGE_FILE_BYTES) throw new ImageError(name, `${(bytes.byteLength / 1e6).toFixed(0)} MB is too large (at most ${MAX_IMAGE_FILE_BYTES / 2 ** 20} MiB)`);
  const format = sniffImageFormat(bytes);
  if (format === 'png' || format === 'jpeg') return decodeImage(bytes, name);
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes as Uint8Array<ArrayBuffer>]));
  } catch {
    return decodeImage(bytes, name); // its error says what the bytes are and what is supported
  }
  // The browser decoded it already; the same cap as our decoders keeps the copy below bounded.
  const tooLarge = pixelCapProblem(bitmap.width, bitmap.height);
  if (tooLarge) throw new ImageError(name, tooLarge);
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d')!;
  ctx.drawImage(bitmap, 0, 0);
  const d = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  return { width: d.width, height: d.height, channels: 4, data: new Uint8Array(d.data.buffer) };
}
