// Test-only PNG reference, written straight from the spec and independent of src/io: a minimal
// writer (any colour type / bit depth / Adam7, chosen filters, IDAT split anywhere) to synthesize
// files with known pixels, and a minimal reader (8/16-bit, not interlaced) to check what the encoder
// writes. Compression and CRCs come from node:zlib.
import { crc32, deflateSync, inflateSync } from 'node:zlib';

export const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
const SAMPLES: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const PASSES = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
];

function be32(v: number): number[] {
  return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
}

/** One chunk: length, type, data, CRC (node:zlib's crc32 of type + data). */
export function chunk(type: string, data: ArrayLike<number> = []): Uint8Array {
  const body = Uint8Array.from([...Array.from(type, (c) => c.charCodeAt(0)), ...Array.from(data)]);
  return Uint8Array.from([...be32(data.length), ...body, ...be32(crc32(body))]);
}

export function concat(parts: ArrayLike<number>[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export function ihdr(width: number, height: number, bitDepth: number, colorType: number, interlace = 0): Uint8Array {
  return chunk('IHDR', [...be32(width), ...be32(height), bitDepth, colorType, 0, 0, interlace]);
}

/** Packs one row of samples at `depth` bits (sub-byte: high bits first, last byte zero-padded). */
function packRow(samples: number[], depth: number): number[] {
  const bytes: number[] = [];
  if (depth === 16) for (const s of samples) bytes.push(s >> 8, s & 255);
  else if (depth === 8) bytes.push(...samples);
  else {
    let acc = 0;
    let bits = 0;
    for (const s of samples) {
      acc = (acc << depth) | s;
      bits += depth;
      if (bits === 8) {
        bytes.push(acc);
        acc = 0;
        bits = 0;
      }
    }
    if (bits > 0) bytes.push(acc << (8 - bits));
  }
  return bytes;
}

function predictor(ft: number, a: number, b: number, c: number): number {
  if (ft === 0) return 0;
  if (ft === 1) return a;
  if (ft === 2) return b;
  if (ft === 3) return Math.floor((a + b) / 2);
  const p = a + b - c;
  const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

export interface RawPngSpec {
  width: number;
  height: number;
  colorType: 0 | 2 | 3 | 4 | 6;
  bitDepth: number;
  interlace?: boolean;
  /** Stored samples, row-major, SAMPLES[colorType] a pixel (palette images: indices). */
  samples: ArrayLike<number>;
  /** RGB triples. */
  palette?: number[];
  trns?: number[];
  /** Filter type of scanline `row` of pass `pass` (0 when not interlaced); default (row + pass) % 5. */
  filter?: (row: number, pass: number) => number;
  /** Split the zlib stream into this many IDAT chunks (the first one empty when > 2). Default 1. */
  idatChunks?: number;
  /** Ancillary chunks placed before the first IDAT. */
  extra?: Uint8Array[];
}

/** The filtered scanlines (filter byte first) of a spec, all passes concatenated. */
export function scanlines(spec: RawPngSpec): Uint8Array {
  const { width, height, colorType, bitDepth, samples } = spec;
  const spp = SAMPLES[colorType]!;
  const bppBytes = Math.max(1, (spp * bitDepth) / 8);
  const passes = spec.interlace ? PASSES : [[0, 0, 1, 1]];
  const out: number[] = [];
  passes.forEach(([x0, y0, dx, dy], p) => {
    let prev: number[] | null = null;
    let row = 0;
    for (let y = y0!; y < height; y += dy!) {
      const rowSamples: number[] = [];
      for (let x = x0!; x < width; x += dx!) for (let s = 0; s < spp; s++) rowSamples.push(samples[(y * width + x) * spp + s]!);
      if (rowSamples.length === 0) break; // an empty pass has no scanlines at all
      const bytes = packRow(rowSamples, bitDepth);
      const ft = spec.filter ? spec.filter(row, p) : (row + p) % 5;
      const filtered = bytes.map((v, i) => {
        const a = i >= bppBytes ? bytes[i - bppBytes]! : 0;
        const b = prev ? prev[i]! : 0;
        const c = prev && i >= bppBytes ? prev[i - bppBytes]! : 0;
        return (v - predictor(ft, a, b, c) + 256) % 256;
      });
      out.push(ft, ...filtered);
      prev = bytes;
      row++;
    }
  });
  return Uint8Array.from(out);
}

/** A complete PNG file for `spec`; `zlibData` replaces the compressed scanlines (for malformed files). */
export function buildPng(spec: RawPngSpec, zlibData?: Uint8Array): Uint8Array {
  const z = zlibData ?? new Uint8Array(deflateSync(scanlines(spec)));
  const n = spec.idatChunks ?? 1;
  const idat: Uint8Array[] = [];
  // Uneven split points; with n > 2 the first chunk is empty (a legal zero-length IDAT).
  const cuts = [0, ...Array.from({ length: n - 1 }, (_, i) => (n > 2 && i === 0 ? 0 : Math.floor((z.length * (i + 1)) / n) - 1)), z.length];
  for (let i = 0; i < n; i++) idat.push(chunk('IDAT', z.subarray(Math.max(0, cuts[i]!), Math.max(0, cuts[i + 1]!))));
  return concat([
    SIGNATURE,
    ihdr(spec.width, spec.height, spec.bitDepth, spec.colorType, spec.interlace ? 1 : 0),
    ...(spec.extra ?? []),
    ...(spec.palette ? [chunk('PLTE', spec.palette)] : []),
    ...(spec.trns ? [chunk('tRNS', spec.trns)] : []),
    ...idat,
    chunk('IEND'),
  ]);
}

export interface RefPng {
  width: number;
  height: number;
  bitDepth: number;
  colorType: number;
  /** Samples as stored, row-major. */
  samples: Uint16Array;
  /** The filter type of each scanline. */
  filters: number[];
  chunkTypes: string[];
}

/** Reads an 8/16-bit, non-interlaced, non-palette PNG; throws on anything else or any bad CRC. */
export function readPngRef(file: Uint8Array): RefPng {
  if (!SIGNATURE.every((v, i) => file[i] === v)) throw new Error('bad signature');
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  let pos = 8;
  const idat: Uint8Array[] = [];
  const chunkTypes: string[] = [];
  let hdr: DataView | null = null;
  for (;;) {
    const len = dv.getUint32(pos);
    const type = String.fromCharCode(...file.subarray(pos + 4, pos + 8));
    const body = file.subarray(pos + 4, pos + 8 + len);
    if (crc32(body) !== dv.getUint32(pos + 8 + len)) throw new Error(`bad CRC in ${type}`);
    chunkTypes.push(type);
    if (type === 'IHDR') hdr = new DataView(file.buffer, file.byteOffset + pos + 8, 13);
    if (type === 'IDAT') idat.push(file.subarray(pos + 8, pos + 8 + len));
    pos += 12 + len;
    if (type === 'IEND') break;
  }
  const [width, height, bitDepth, colorType] = [hdr!.getUint32(0), hdr!.getUint32(4), hdr!.getUint8(8), hdr!.getUint8(9)];
  if (hdr!.getUint8(12) !== 0 || colorType === 3 || bitDepth < 8) throw new Error('readPngRef: only 8/16-bit non-interlaced non-palette');
  const raw = inflateSync(concat(idat));
  const bpp = (SAMPLES[colorType]! * bitDepth) / 8;
  const stride = width * bpp;
  if (raw.length !== height * (stride + 1)) throw new Error(`readPngRef: ${raw.length} bytes of image data`);
  const samples = new Uint16Array((height * stride) / (bitDepth / 8));
  const filters: number[] = [];
  let prev = new Uint8Array(stride);
  let cur = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const ft = raw[y * (stride + 1)]!;
    filters.push(ft);
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? cur[i - bpp]! : 0;
      const c = i >= bpp ? prev[i - bpp]! : 0;
      cur[i] = raw[y * (stride + 1) + 1 + i]! + predictor(ft, a, prev[i]!, c);
    }
    const o = (y * stride) / (bitDepth / 8);
    if (bitDepth === 8) samples.set(cur, o);
    else for (let i = 0; i < stride; i += 2) samples[o + i / 2] = cur[i]! * 256 + cur[i + 1]!;
    [prev, cur] = [cur, prev];
  }
  return { width, height, bitDepth, colorType, samples, filters, chunkTypes };
}
