// PNG encoder: 8- or 16-bit gray, gray + alpha, RGB or RGBA, not interlaced, with a filter chosen per
// scanline and the zlib stream from the web-standard CompressionStream('deflate') (browsers, Node >= 18).

import { assertArg } from '../engine/errors.js';
import { crc32 } from '../formats/zip.js';
import { checkImage, type Image16, type Image8 } from './types.js';
import { FILTER_NAMES, PNG_SIGNATURE, paeth, type PngFilter } from './png-format.js';

export interface PngEncodeOptions {
  /**
   * 'adaptive' (default): for each scanline the filter whose output has the smallest sum of
   * |byte as signed|, the heuristic libpng uses, which compresses photos well. Or one filter for
   * every scanline ('none' is fastest).
   */
  filter?: 'adaptive' | PngFilter;
}

/** Colour type code by channel count: gray, gray + alpha, RGB, RGBA. */
const COLOR_TYPE_BY_CHANNELS = [0, 0, 4, 2, 6];
/** Largest IDAT chunk written; decoders that stream like modest chunks. */
const IDAT_BYTES = 1 << 16;

/**
 * The PNG file of an image; a Uint16Array image is written at 16 bits a sample, a Uint8Array one at
 * 8. Non-finite sizes, wrong data lengths and the like are ArgumentErrors.
 */
export async function encodePng(img: Image8 | Image16, options: PngEncodeOptions = {}): Promise<Uint8Array> {
  checkImage(img, 'encodePng image');
  const { width, height, channels, data } = img;
  assertArg(width <= 0x7fffffff && height <= 0x7fffffff, `encodePng: ${width}x${height} exceeds the PNG limit of 2^31 - 1`);
  const filter = options.filter ?? 'adaptive';
  assertArg(filter === 'adaptive' || FILTER_NAMES.includes(filter), `encodePng: unknown filter '${filter}' (adaptive, ${FILTER_NAMES.join(', ')})`);
  const depth = data instanceof Uint16Array ? 16 : 8;
  const bpp = (channels * depth) / 8;
  const rowBytes = width * bpp;

  // Filtered scanlines, each preceded by its filter type byte.
  const raw = new Uint8Array(height * (rowBytes + 1));
  let prev = new Uint8Array(rowBytes);
  let cur = new Uint8Array(rowBytes);
  const trial = FILTER_NAMES.map(() => new Uint8Array(rowBytes));
  for (let y = 0; y < height; y++) {
    if (depth === 8) {
      cur.set((data as Uint8Array).subarray(y * rowBytes, (y + 1) * rowBytes));
    } else {
      const row = y * width * channels;
      for (let i = 0; i < width * channels; i++) {
        const v = data[row + i]!;
        cur[2 * i] = v >> 8; // big-endian, as PNG stores 16-bit samples
        cur[2 * i + 1] = v & 0xff;
      }
    }
    let best = 0;
    if (filter === 'adaptive') {
      let bestScore = Infinity;
      for (let ft = 0; ft < 5; ft++) {
        const score = filterRow(ft, cur, prev, bpp, trial[ft]!);
        if (score < bestScore) [best, bestScore] = [ft, score];
      }
    } else {
      best = FILTER_NAMES.indexOf(filter);
      filterRow(best, cur, prev, bpp, trial[best]!);
    }
    raw[y * (rowBytes + 1)] = best;
    raw.set(trial[best]!, y * (rowBytes + 1) + 1);
    [prev, cur] = [cur, prev];
  }

  const stream = new Blob([raw]).stream().pipeThrough(new CompressionStream('deflate'));
  const z = new Uint8Array(await new Response(stream).arrayBuffer());

  const nIdat = Math.max(1, Math.ceil(z.length / IDAT_BYTES));
  const out = new Uint8Array(8 + (12 + 13) + nIdat * 12 + z.length + 12);
  out.set(PNG_SIGNATURE, 0);
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, width);
  dv.setUint32(4, height);
  ihdr.set([depth, COLOR_TYPE_BY_CHANNELS[channels]!, 0, 0, 0], 8); // compression 0, filter method 0, no interlace
  let pos = writeChunk(out, 8, 'IHDR', ihdr);
  for (let i = 0; i < nIdat; i++) pos = writeChunk(out, pos, 'IDAT', z.subarray(i * IDAT_BYTES, (i + 1) * IDAT_BYTES));
  pos = writeChunk(out, pos, 'IEND', new Uint8Array(0));
  return out;
}

/** Writes filter `ft` of scanline `cur` (previous scanline `prev`) into `dst`; returns the sum of |byte as signed|. */
function filterRow(ft: number, cur: Uint8Array, prev: Uint8Array, bpp: number, dst: Uint8Array): number {
  const n = cur.length;
  switch (ft) {
    case 0:
      dst.set(cur);
      break;
    case 1:
      for (let i = 0; i < n; i++) dst[i] = cur[i]! - (i >= bpp ? cur[i - bpp]! : 0); // Uint8Array stores modulo 256
      break;
    case 2:
      for (let i = 0; i < n; i++) dst[i] = cur[i]! - prev[i]!;
      break;
    case 3:
      for (let i = 0; i < n; i++) dst[i] = cur[i]! - (((i >= bpp ? cur[i - bpp]! : 0) + prev[i]!) >> 1);
      break;
    default:
      for (let i = 0; i < bpp; i++) dst[i] = cur[i]! - prev[i]!; // Paeth with a = c = 0 picks b
      for (let i = bpp; i < n; i++) dst[i] = cur[i]! - paeth(cur[i - bpp]!, prev[i]!, prev[i - bpp]!);
  }
  let score = 0;
  for (let i = 0; i < n; i++) score += dst[i]! < 128 ? dst[i]! : 256 - dst[i]!;
  return score;
}

/** Writes one chunk (length, type, data, CRC of type + data) at `pos`; returns the position after it. */
function writeChunk(out: Uint8Array, pos: number, type: string, data: Uint8Array): number {
  const dv = new DataView(out.buffer, out.byteOffset);
  dv.setUint32(pos, data.length);
  for (let i = 0; i < 4; i++) out[pos + 4 + i] = type.charCodeAt(i);
  out.set(data, pos + 8);
  dv.setUint32(pos + 8 + data.length, crc32(out.subarray(pos + 4, pos + 8 + data.length)));
  return pos + 12 + data.length;
}
