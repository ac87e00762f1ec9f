// PNG decoder: every colour type and bit depth, Adam7, image data split over many IDAT chunks; the
// signature and every chunk CRC are checked, and the zlib stream is inflated by the shared helper
// (src/formats/inflate.ts: DecompressionStream, exact size). The encoder lives in png-encode.ts.

import { crc32 } from '../formats/zip.js';
import { InflateError, inflateExact } from '../formats/inflate.js';
import { DEFAULT_MAX_PIXELS, pixelCapProblem } from './pixel-cap.js';
import { ImageError, type Channels, type PixelImage } from './types.js';
import { ADAM7, COLOR_TYPES, COLOR_TYPE_CODE, NO_INTERLACE, PNG_SIGNATURE, paeth, passExtent, scanlineBytes, type PngColorType } from './png-format.js';

export { encodePng, type PngEncodeOptions } from './png-encode.js';
export type { PngColorType, PngFilter } from './png-format.js';

/** A malformed, truncated or unsupported PNG; the message names the file and the problem. */
export class PngError extends ImageError {
  constructor(file: string, detail: string) {
    super(file, detail, 'png');
  }
}

/** The IHDR facts, as stored in the file. */
export interface PngHeader {
  width: number;
  height: number;
  bitDepth: 1 | 2 | 4 | 8 | 16;
  colorType: PngColorType;
  interlaced: boolean;
}

export interface PngDecodeOptions {
  /** Refuse larger images before allocating anything. Default 2^26 pixels (8192 x 8192). */
  maxPixels?: number;
}

/**
 * Decoded pixels (see PixelImage) plus the header as stored. `channels` counts what the file holds
 * once a palette is expanded and tRNS turned into alpha: gray 1, gray + alpha 2, RGB and palette 3,
 * RGBA 4; a tRNS chunk adds an alpha channel to gray, RGB and palette images (alpha 0 where a gray
 * or RGB pixel equals the tRNS colour, else opaque). `bitDepth` is the depth of `data` (8 or 16).
 */
export type DecodedPng<T extends Uint8Array | Uint16Array> = PixelImage<T> & { bitDepth: 8 | 16; header: PngHeader };


/**
 * Decodes to 8 bits a sample. 16-bit samples keep their high byte (v >> 8, as PIL and libpng's
 * png_set_strip_16 do); 1/2/4-bit gray is scaled to the full range (v * 255 / (2^d - 1): exact).
 * `name` only labels errors (a file name or URL).
 */
export function decodePng(bytes: Uint8Array, name: string, options: PngDecodeOptions = {}): Promise<DecodedPng<Uint8Array>> {
  return decode(bytes, name, 8, options) as Promise<DecodedPng<Uint8Array>>;
}

/** Decodes to 16 bits a sample; lower depths are scaled exactly to the full range (v * 65535 / (2^d - 1), so 8-bit v -> 257 v). */
export function decodePng16(bytes: Uint8Array, name: string, options: PngDecodeOptions = {}): Promise<DecodedPng<Uint16Array>> {
  return decode(bytes, name, 16, options) as Promise<DecodedPng<Uint16Array>>;
}

/** The header alone (signature and IHDR, with its CRC, checked): what decodePng would return, without decoding. */
export function readPngHeader(bytes: Uint8Array, name: string): PngHeader {
  const fail = (detail: string) => new PngError(name, detail);
  checkSignature(bytes, fail);
  const chunk = readChunk(bytes, 8, fail);
  if (chunk.type !== 'IHDR') throw fail(`the first chunk is ${chunk.type}, a PNG must start with IHDR`);
  return parseIhdr(chunk.data, fail);
}

const hex = (v: number) => `0x${v.toString(16).padStart(8, '0')}`;
const u32 = (b: Uint8Array, p: number) => ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;

function checkSignature(bytes: Uint8Array, fail: (d: string) => PngError): void {
  if (bytes.length === 0) throw fail('the file is empty');
  for (let i = 0; i < 8; i++) {
    if (bytes[i] !== PNG_SIGNATURE[i]) {
      if (i === bytes.length) throw fail(`truncated: the file is ${bytes.length} bytes, shorter than the 8-byte PNG signature`);
      const looksLike = bytes[0] === 0xff && bytes[1] === 0xd8 ? ' (it looks like a JPEG)' : '';
      const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
      throw fail(`bad signature: not a PNG file${looksLike}; first bytes ${head}`);
    }
  }
}

interface Chunk {
  type: string;
  data: Uint8Array;
  /** Offset of the chunk's length field. */
  offset: number;
  next: number;
}

/** The chunk at `pos`, bounds and CRC checked; an IDAT is called "IDAT #idatNumber" in the CRC message. */
function readChunk(bytes: Uint8Array, pos: number, fail: (d: string) => PngError, idatNumber = 1): Chunk {
  if (pos + 8 > bytes.length) {
    throw fail(`truncated: the file ends at byte ${bytes.length}${pos === bytes.length ? '' : ', inside a chunk header'} before the IEND chunk`);
  }
  const length = u32(bytes, pos);
  let type = '';
  for (let i = 4; i < 8; i++) {
    const c = bytes[pos + i]!;
    if (!((c >= 65 && c <= 90) || (c >= 97 && c <= 122))) {
      throw fail(`corrupt chunk header at offset ${pos}: the type bytes are not letters (${hex(u32(bytes, pos + 4))})`);
    }
    type += String.fromCharCode(c);
  }
  if (length > 0x7fffffff) throw fail(`chunk ${type} at offset ${pos} declares ${length} bytes, more than the 2^31 - 1 allowed (corrupt file)`);
  const end = pos + 8 + length;
  if (end + 4 > bytes.length) {
    throw fail(`truncated: chunk ${type} at offset ${pos} declares ${length} data bytes + 4 CRC bytes, but the file ends at byte ${bytes.length}`);
  }
  const stored = u32(bytes, end);
  const computed = crc32(bytes.subarray(pos + 4, end));
  if (stored !== computed) {
    throw fail(`CRC mismatch in chunk ${type === 'IDAT' ? `IDAT #${idatNumber}` : type} at offset ${pos} (stored ${hex(stored)}, computed ${hex(computed)}): the file is corrupt`);
  }
  return { type, data: bytes.subarray(pos + 8, end), offset: pos, next: end + 4 };
}

function parseIhdr(d: Uint8Array, fail: (d: string) => PngError): PngHeader {
  if (d.length !== 13) throw fail(`IHDR chunk has ${d.length} bytes, expected 13`);
  const width = u32(d, 0);
  const height = u32(d, 4);
  const [bitDepth, code, compression, filter, interlace] = [d[8]!, d[9]!, d[10]!, d[11]!, d[12]!];
  if (width === 0 || height === 0) throw fail(`invalid image size ${width}x${height}: zero width or height`);
  if (width > 0x7fffffff || height > 0x7fffffff) throw fail(`invalid image size ${width}x${height}: larger than 2^31 - 1`);
  const ct = COLOR_TYPES[code];
  if (!ct) throw fail(`invalid colour type ${code} (PNG has 0 gray, 2 RGB, 3 palette, 4 gray + alpha, 6 RGBA)`);
  if (!ct.depths.includes(bitDepth)) {
    throw fail(`invalid bit depth ${bitDepth} for colour type ${code} (${ct.name}); allowed: ${ct.depths.join(', ')}`);
  }
  if (compression !== 0) throw fail(`unsupported compression method ${compression} (only 0, zlib deflate, exists)`);
  if (filter !== 0) throw fail(`unsupported filter method ${filter} (only 0 exists)`);
  if (interlace > 1) throw fail(`unsupported interlace method ${interlace} (0 none, 1 Adam7)`);
  return { width, height, bitDepth: bitDepth as PngHeader['bitDepth'], colorType: ct.name, interlaced: interlace === 1 };
}

interface ParsedPng {
  header: PngHeader;
  /** RGB triples. */
  palette: Uint8Array | null;
  trns: Uint8Array | null;
  idat: Uint8Array[];
}

/** Walks the chunks up to IEND, enforcing the ordering rules that matter for decoding. */
function parseChunks(bytes: Uint8Array, fail: (d: string) => PngError, maxPixels: number): ParsedPng {
  checkSignature(bytes, fail);
  let header: PngHeader | null = null;
  let palette: Uint8Array | null = null;
  let trns: Uint8Array | null = null;
  const idat: Uint8Array[] = [];
  let idatEnded = false;
  for (let pos = 8; ; ) {
    const c = readChunk(bytes, pos, fail, idat.length + 1);
    pos = c.next;
    if (!header) {
      if (c.type !== 'IHDR') throw fail(`the first chunk is ${c.type}, a PNG must start with IHDR`);
      header = parseIhdr(c.data, fail);
      const tooBig = pixelCapProblem(header.width, header.height, maxPixels);
      if (tooBig) throw fail(tooBig);
      continue;
    }
    if (idat.length > 0 && c.type !== 'IDAT') idatEnded = true;
    switch (c.type) {
      case 'IHDR':
        throw fail(`a second IHDR chunk at offset ${c.offset}`);
      case 'PLTE': {
        if (header.colorType === 'gray' || header.colorType === 'gray-alpha') throw fail(`PLTE chunk in a ${header.colorType} image (not allowed)`);
        if (palette) throw fail(`a second PLTE chunk at offset ${c.offset}`);
        if (idat.length > 0) throw fail('PLTE chunk after the image data (it must precede IDAT)');
        const n = c.data.length / 3;
        if (!Number.isInteger(n) || n < 1 || n > 256) throw fail(`PLTE chunk of ${c.data.length} bytes (must be 3 x 1..256 entries)`);
        if (header.colorType === 'palette' && n > 2 ** header.bitDepth) {
          throw fail(`PLTE has ${n} entries, more than a ${header.bitDepth}-bit index can address`);
        }
        palette = c.data;
        break;
      }
      case 'tRNS': {
        if (idat.length > 0) throw fail('tRNS chunk after the image data (it must precede IDAT)');
        const ct = header.colorType;
        if (ct === 'palette') {
          if (!palette) throw fail('tRNS chunk before PLTE in a palette image');
          if (c.data.length > palette.length / 3) throw fail(`tRNS has ${c.data.length} entries, the palette only ${palette.length / 3}`);
        } else if (ct === 'gray' || ct === 'rgb') {
          const want = ct === 'gray' ? 2 : 6;
          if (c.data.length !== want) throw fail(`tRNS chunk of ${c.data.length} bytes in a ${ct} image (expected ${want})`);
        } else {
          break; // images with an alpha channel carry no tRNS; libpng ignores a stray one, and so do we
        }
        trns = c.data;
        break;
      }
      case 'IDAT':
        if (idatEnded) throw fail(`IDAT chunks are not consecutive (IDAT #${idat.length + 1} at offset ${c.offset} follows other chunks)`);
        if (header.colorType === 'palette' && !palette) throw fail('palette image without a PLTE chunk before its image data');
        idat.push(c.data);
        break;
      case 'IEND':
        if (idat.length === 0) throw fail('no IDAT chunk: the file has no image data');
        return { header, palette, trns, idat };
      default:
        // Ancillary chunks (lowercase first letter: text, gamma, APNG frames, ...) are safe to skip.
        if (c.type.charCodeAt(0) < 97) throw fail(`unsupported critical chunk ${c.type} at offset ${c.offset}`);
    }
  }
}

/** Inflates the concatenated IDAT data into exactly `expected` bytes (the shared helper), with PNG's wording for failures. */
async function inflateIdat(chunks: Uint8Array[], expected: number, what: string, fail: (d: string) => PngError): Promise<Uint8Array> {
  try {
    return await inflateExact(chunks, expected, 'deflate');
  } catch (e) {
    if (!(e instanceof InflateError)) throw e;
    const { produced } = e;
    if (e.reason === 'overflow') throw fail(`the image data inflates to more than the ${expected} bytes ${what} needs (corrupt file)`);
    if (e.reason === 'truncated') throw fail(`truncated image data: the zlib stream in the IDAT chunks ends early (${produced} of ${expected} bytes inflated)`);
    if (e.reason === 'short') throw fail(`truncated image data: it inflates to ${produced} bytes, ${what} needs ${expected}`);
    throw fail(`corrupt image data: zlib says ${e.message.replace(/^corrupt compressed data: /, '')}`);
  }
}

/** Undoes the scanline filters of one pass in place; `start` is the first row's filter byte. */
function unfilter(buf: Uint8Array, start: number, rows: number, rowBytes: number, bpp: number, where: (r: number) => string, fail: (d: string) => PngError): void {
  const stride = rowBytes + 1;
  for (let r = 0; r < rows; r++) {
    const f = start + r * stride;
    const p = f + 1;
    const q = p - stride; // the previous row; only read when r > 0
    const ft = buf[f]!;
    if (r === 0 && (ft === 2 || ft === 3 || ft === 4)) {
      // No previous row: up is 0, average is left / 2, Paeth picks left.
      if (ft === 2) continue;
      if (ft === 3) for (let i = bpp; i < rowBytes; i++) buf[p + i] = buf[p + i]! + (buf[p + i - bpp]! >> 1);
      else for (let i = bpp; i < rowBytes; i++) buf[p + i] = buf[p + i]! + buf[p + i - bpp]!;
      continue;
    }
    switch (ft) {
      case 0:
        break;
      case 1:
        for (let i = bpp; i < rowBytes; i++) buf[p + i] = buf[p + i]! + buf[p + i - bpp]!;
        break;
      case 2:
        for (let i = 0; i < rowBytes; i++) buf[p + i] = buf[p + i]! + buf[q + i]!;
        break;
      case 3:
        for (let i = 0; i < bpp; i++) buf[p + i] = buf[p + i]! + (buf[q + i]! >> 1);
        for (let i = bpp; i < rowBytes; i++) buf[p + i] = buf[p + i]! + ((buf[p + i - bpp]! + buf[q + i]!) >> 1);
        break;
      case 4:
        for (let i = 0; i < bpp; i++) buf[p + i] = buf[p + i]! + buf[q + i]!;
        for (let i = bpp; i < rowBytes; i++) buf[p + i] = buf[p + i]! + paeth(buf[p + i - bpp]!, buf[q + i]!, buf[q + i - bpp]!);
        break;
      default:
        throw fail(`invalid filter type ${ft} on ${where(r)} (0..4 exist)`);
    }
  }
}

/** `n` samples of `depth` bits starting at byte `p` (sub-byte samples packed high bits first). */
function unpackSamples(src: Uint8Array, p: number, n: number, depth: number, dst: Uint16Array): void {
  if (depth === 8) {
    for (let i = 0; i < n; i++) dst[i] = src[p + i]!;
  } else if (depth === 16) {
    for (let i = 0; i < n; i++) dst[i] = (src[p + 2 * i]! << 8) | src[p + 2 * i + 1]!;
  } else {
    const perByte = 8 / depth;
    const mask = (1 << depth) - 1;
    for (let i = 0; i < n; i++) dst[i] = (src[p + ((i / perByte) | 0)]! >> (8 - depth - (i % perByte) * depth)) & mask;
  }
}

async function decode(bytes: Uint8Array, name: string, outDepth: 8 | 16, options: PngDecodeOptions): Promise<DecodedPng<Uint8Array | Uint16Array>> {
  const fail = (detail: string) => new PngError(name, detail);
  const { header, palette, trns, idat } = parseChunks(bytes, fail, options.maxPixels ?? DEFAULT_MAX_PIXELS);
  const { width, height, bitDepth, colorType, interlaced } = header;
  const samples = COLOR_TYPES[COLOR_TYPE_CODE[colorType]]!.samples;
  const bitsPerPixel = samples * bitDepth;
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const passes = interlaced ? ADAM7 : NO_INTERLACE;

  let expected = 0;
  for (const ps of passes) {
    const pw = passExtent(width, ps.x0, ps.dx);
    const ph = passExtent(height, ps.y0, ps.dy);
    if (pw > 0) expected += ph * (1 + scanlineBytes(pw, bitsPerPixel));
  }
  const what = `a ${width}x${height} ${bitDepth}-bit ${colorType}${interlaced ? ' interlaced' : ''} image`;
  const raw = await inflateIdat(idat, expected, what, fail);

  const isPalette = colorType === 'palette';
  const nPalette = palette ? palette.length / 3 : 0;
  const keyed = !isPalette && trns !== null; // gray / RGB with a transparent colour
  const outCh = (isPalette ? (trns ? 4 : 3) : samples + (keyed ? 1 : 0)) as Channels;
  const outMax = outDepth === 8 ? 255 : 65535;
  const out = outDepth === 8 ? new Uint8Array(width * height * outCh) : new Uint16Array(width * height * outCh);
  // Sample scaling: 16 -> 8 keeps the high byte; otherwise an exact integer factor outMax / (2^d - 1).
  const highByte = bitDepth === 16 && outDepth === 8;
  const mul = highByte ? 1 : outMax / (2 ** bitDepth - 1);
  const key = keyed ? Array.from({ length: samples }, (_, i) => (trns![2 * i]! << 8) | trns![2 * i + 1]!) : [];
  let pal: Uint8Array | Uint16Array | null = null;
  if (isPalette) {
    const pc = trns ? 4 : 3;
    pal = outDepth === 8 ? new Uint8Array(nPalette * pc) : new Uint16Array(nPalette * pc);
    const k = outDepth === 8 ? 1 : 257;
    for (let i = 0; i < nPalette; i++) {
      for (let c = 0; c < 3; c++) pal[i * pc + c] = palette![3 * i + c]! * k;
      if (trns) pal[i * pc + 3] = (i < trns.length ? trns[i]! : 255) * k;
    }
  }

  let off = 0;
  for (let k = 0; k < passes.length; k++) {
    const ps = passes[k]!;
    const pw = passExtent(width, ps.x0, ps.dx);
    const ph = passExtent(height, ps.y0, ps.dy);
    if (pw === 0 || ph === 0) continue;
    const rowBytes = scanlineBytes(pw, bitsPerPixel);
    const where = (r: number) => (interlaced ? `scanline ${r} of Adam7 pass ${k + 1}` : `scanline ${r}`);
    unfilter(raw, off, ph, rowBytes, bpp, where, fail);
    const rowSamples = new Uint16Array(pw * samples);
    for (let r = 0; r < ph; r++) {
      const p = off + r * (rowBytes + 1) + 1;
      const y = ps.y0 + r * ps.dy;
      let o = (y * width + ps.x0) * outCh;
      if (!interlaced && bitDepth === 8 && outDepth === 8 && !isPalette && !keyed) {
        out.set(raw.subarray(p, p + rowBytes), o); // the common case: the scanline is the output row
        continue;
      }
      unpackSamples(raw, p, pw * samples, bitDepth, rowSamples);
      const step = ps.dx * outCh;
      if (pal) {
        for (let x = 0; x < pw; x++, o += step) {
          const idx = rowSamples[x]!;
          if (idx >= nPalette) throw fail(`palette index ${idx} at pixel (${ps.x0 + x * ps.dx}, ${y}) but the palette has ${nPalette} entries`);
          for (let c = 0; c < outCh; c++) out[o + c] = pal[idx * outCh + c]!;
        }
        continue;
      }
      for (let x = 0, s = 0; x < pw; x++, o += step, s += samples) {
        let match = keyed;
        for (let c = 0; c < samples; c++) {
          const v = rowSamples[s + c]!;
          if (keyed && v !== key[c]) match = false;
          out[o + c] = highByte ? v >> 8 : v * mul;
        }
        if (keyed) out[o + samples] = match ? 0 : outMax;
      }
    }
    off += ph * (rowBytes + 1);
  }
  return { width, height, channels: outCh, bitDepth: outDepth, data: out, header };
}
