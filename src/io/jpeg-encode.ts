// Baseline JPEG encoder (JFIF, 8-bit, Huffman with the Annex K tables, IJG quality scaling): what PIL's
// Image.save(quality=q) writes, computed in floating point. Steps: RGB -> YCbCr (JFIF) in float, the
// image edge-replicated to whole MCUs (libjpeg replicates the last column / row as well), chroma
// box-averaged over each subsampling cell, the orthonormal 8x8 DCT in float64 on samples - 128,
// quantised with round-half-away-from-zero (libjpeg's rule), then entropy coded.
//
// libjpeg instead rounds YCbCr to 8 bits, rounds its 2x2 averages with a 1, 2, 1, 2 bias and uses the
// integer "islow" DCT; so a few coefficients that land next to a quantisation boundary differ by one
// step. Keeping the float values makes the codec equal the GPU operator's pipeline (see
// src/solvers/degradations/jpeg.ts) up to the decoder's final rounding.

import { assertArg } from '../engine/errors.js';
import {
  DCT8,
  RGB_TO_YCC,
  STD_AC_CHROMA,
  STD_AC_LUMA,
  STD_DC_CHROMA,
  STD_DC_LUMA,
  ZIGZAG,
  canonicalCodes,
  jpegQuantTables,
  type HuffmanSpec,
} from './jpeg-tables.js';

export type JpegSubsampling = '4:4:4' | '4:2:2' | '4:2:0';

export interface JpegEncodeOptions {
  /** Chroma subsampling of a colour image; default '4:2:0' (PIL's and libjpeg's default). */
  subsampling?: JpegSubsampling;
  /** Samples per pixel of the input: 3 (RGB, default) or 1 (grey, written as a 1-component JPEG). */
  channels?: 1 | 3;
  /** MCUs between restart markers (DRI); 0 (default) writes none. */
  restartInterval?: number;
  /** One non-interleaved scan per component instead of one interleaved scan (still baseline). */
  separateScans?: boolean;
}

/** Horizontal and vertical sampling factors of luma for each subsampling (chroma is 1 x 1). */
export const SUBSAMPLING_FACTORS: Record<JpegSubsampling, [number, number]> = {
  '4:4:4': [1, 1],
  '4:2:2': [2, 1],
  '4:2:0': [2, 2],
};

class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  length = 0;

  byte(v: number): void {
    if (this.length === this.buf.length) {
      const grown = new Uint8Array(this.buf.length * 2);
      grown.set(this.buf);
      this.buf = grown;
    }
    this.buf[this.length++] = v;
  }

  u16(v: number): void {
    this.byte(v >> 8);
    this.byte(v & 0xff);
  }

  bytes(vs: ArrayLike<number>): void {
    for (let i = 0; i < vs.length; i++) this.byte(vs[i]!);
  }

  marker(m: number): void {
    this.byte(0xff);
    this.byte(m);
  }

  /** A marker segment: the marker, its length (payload + 2) and the payload. */
  segment(m: number, payload: number[]): void {
    this.marker(m);
    this.u16(payload.length + 2);
    this.bytes(payload);
  }

  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

/** MSB-first bit packing with 0xFF byte stuffing (T.81 F.1.2.3). */
class BitWriter {
  private acc = 0;
  private n = 0;
  constructor(private readonly out: ByteWriter) {}

  bits(value: number, count: number): void {
    for (let i = count - 1; i >= 0; i--) {
      this.acc = (this.acc << 1) | ((value >>> i) & 1);
      if (++this.n === 8) this.flushByte();
    }
  }

  private flushByte(): void {
    this.out.byte(this.acc);
    if (this.acc === 0xff) this.out.byte(0);
    this.acc = 0;
    this.n = 0;
  }

  /** Pads the last byte with 1 bits (as the standard asks) before a marker. */
  align(): void {
    if (this.n > 0) this.bits(0x7f, 8 - this.n);
  }
}

interface EncoderTable {
  code: Uint16Array;
  size: Uint8Array;
}

function encoderTable(spec: HuffmanSpec): EncoderTable {
  const t = canonicalCodes(spec);
  if (!t) throw new Error('internal: a standard Huffman table is not a valid code');
  return t;
}

/** Number of bits of |v| (the JPEG magnitude category). */
function category(v: number): number {
  let a = Math.abs(v);
  let s = 0;
  while (a > 0) {
    s++;
    a >>= 1;
  }
  return s;
}

interface Component {
  id: number;
  h: number;
  v: number;
  tq: number;
  dc: EncoderTable;
  ac: EncoderTable;
  tableId: number;
  /** Blocks across / down in the MCU-padded plane, and those a non-interleaved scan covers. */
  bw: number;
  bh: number;
  scanBw: number;
  scanBh: number;
  /** Quantised coefficients, natural order, 64 per block, blocks row-major. */
  coef: Int16Array;
}

/**
 * A component's MCU-padded plane (pw x ph): sample (py, px) averages the rx x ry cell of the image
 * at (py ry, px rx), indices clamped to the last row / column (libjpeg's edge replication).
 */
function samplePlane(src: Float64Array, width: number, height: number, rx: number, ry: number, pw: number, ph: number): Float64Array {
  const plane = new Float64Array(pw * ph);
  const cols = new Int32Array(pw * rx);
  for (let i = 0; i < cols.length; i++) cols[i] = Math.min(i, width - 1);
  const inv = 1 / (rx * ry);
  for (let py = 0; py < ph; py++) {
    const out = py * pw;
    for (let dy = 0; dy < ry; dy++) {
      const row = Math.min(py * ry + dy, height - 1) * width;
      for (let px = 0; px < pw; px++) {
        let s = 0;
        for (let dx = 0; dx < rx; dx++) s += src[row + cols[px * rx + dx]!]!;
        plane[out + px]! += s * inv;
      }
    }
  }
  return plane;
}

/** Forward DCT + quantisation of one plane (bw x bh blocks of samples) into quantised coefficients. */
function transformPlane(plane: Float64Array, bw: number, bh: number, quant: Uint16Array): Int16Array {
  const stride = bw * 8;
  const coef = new Int16Array(bw * bh * 64);
  const blk = new Float64Array(64);
  const tmp = new Float64Array(64);
  for (let by = 0; by < bh; by++) {
    for (let bx = 0; bx < bw; bx++) {
      for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) blk[y * 8 + x] = plane[(by * 8 + y) * stride + bx * 8 + x]! - 128;
      // tmp = C blk (columns), then F = tmp C^T (rows).
      for (let u = 0; u < 8; u++)
        for (let x = 0; x < 8; x++) {
          let s = 0;
          for (let y = 0; y < 8; y++) s += DCT8[u * 8 + y]! * blk[y * 8 + x]!;
          tmp[u * 8 + x] = s;
        }
      const base = (by * bw + bx) * 64;
      for (let u = 0; u < 8; u++)
        for (let v = 0; v < 8; v++) {
          let s = 0;
          for (let x = 0; x < 8; x++) s += tmp[u * 8 + x]! * DCT8[v * 8 + x]!;
          const q = s / quant[u * 8 + v]!;
          coef[base + u * 8 + v] = Math.sign(q) * Math.floor(Math.abs(q) + 0.5);
        }
    }
  }
  return coef;
}

/**
 * Encodes an interleaved 8-bit image (height x width x channels) as a baseline JFIF JPEG at IJG
 * `quality` (1..100).
 */
export function encodeJpeg(rgb: Uint8Array, width: number, height: number, quality: number, opts: JpegEncodeOptions = {}): Uint8Array {
  const channels = opts.channels ?? 3;
  assertArg(channels === 1 || channels === 3, `encodeJpeg: channels must be 1 or 3, got ${channels}`);
  assertArg(
    Number.isInteger(width) && Number.isInteger(height) && width >= 1 && height >= 1 && width <= 65535 && height <= 65535,
    `encodeJpeg: width and height must be integers in 1..65535, got ${width}x${height}`,
  );
  assertArg(rgb.length === width * height * channels, `encodeJpeg: expected ${width}x${height}x${channels} = ${width * height * channels} bytes, got ${rgb.length}`);
  assertArg(Number.isInteger(quality) && quality >= 1 && quality <= 100, `encodeJpeg: quality must be an integer in 1..100, got ${quality}`);
  const sub = opts.subsampling ?? '4:2:0';
  assertArg(sub in SUBSAMPLING_FACTORS, `encodeJpeg: unknown subsampling ${String(sub)}`);
  const restart = opts.restartInterval ?? 0;
  assertArg(Number.isInteger(restart) && restart >= 0 && restart <= 65535, `encodeJpeg: restartInterval must be an integer in 0..65535, got ${restart}`);

  const tables = jpegQuantTables(quality);
  const [hmax, vmax] = channels === 3 ? SUBSAMPLING_FACTORS[sub] : [1, 1];
  const mcux = Math.ceil(width / (8 * hmax));
  const mcuy = Math.ceil(height / (8 * vmax));
  const dcL = encoderTable(STD_DC_LUMA);
  const acL = encoderTable(STD_AC_LUMA);
  const dcC = encoderTable(STD_DC_CHROMA);
  const acC = encoderTable(STD_AC_CHROMA);

  // Full-resolution planes (Y, Cb, Cr in float, or the grey samples).
  const npx = width * height;
  const planes: Float64Array[] = [];
  if (channels === 1) {
    planes.push(Float64Array.from(rgb));
  } else {
    const m = RGB_TO_YCC;
    for (let c = 0; c < 3; c++) {
      const p = new Float64Array(npx);
      const off = c === 0 ? 0 : 128;
      const [mr, mg, mb] = [m[c * 3]!, m[c * 3 + 1]!, m[c * 3 + 2]!];
      for (let i = 0, j = 0; i < npx; i++, j += 3) p[i] = mr * rgb[j]! + mg * rgb[j + 1]! + mb * rgb[j + 2]! + off;
      planes.push(p);
    }
  }

  const comps: Component[] = [];
  for (let c = 0; c < channels; c++) {
    const luma = c === 0;
    const h = luma ? hmax : 1;
    const v = luma ? vmax : 1;
    const rx = hmax / h;
    const ry = vmax / v;
    const bw = mcux * h;
    const bh = mcuy * v;
    const plane = samplePlane(planes[c]!, width, height, rx, ry, bw * 8, bh * 8);
    comps.push({
      id: c + 1,
      h,
      v,
      tq: luma ? 0 : 1,
      dc: luma ? dcL : dcC,
      ac: luma ? acL : acC,
      tableId: luma ? 0 : 1,
      bw,
      bh,
      scanBw: Math.ceil(Math.ceil((width * h) / hmax) / 8),
      scanBh: Math.ceil(Math.ceil((height * v) / vmax) / 8),
      coef: transformPlane(plane, bw, bh, luma ? tables.luma : tables.chroma),
    });
  }

  const out = new ByteWriter();
  out.marker(0xd8); // SOI
  // APP0 JFIF 1.01, no units, 1:1 pixel aspect, no thumbnail.
  out.segment(0xe0, [0x4a, 0x46, 0x49, 0x46, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]);
  const dqt: number[] = [];
  for (let t = 0; t < (channels === 3 ? 2 : 1); t++) {
    dqt.push(t);
    const q = t === 0 ? tables.luma : tables.chroma;
    for (let k = 0; k < 64; k++) dqt.push(q[ZIGZAG[k]!]!);
  }
  out.segment(0xdb, dqt);
  const sof = [8, height >> 8, height & 0xff, width >> 8, width & 0xff, channels];
  for (const c of comps) sof.push(c.id, (c.h << 4) | c.v, c.tq);
  out.segment(0xc0, sof);
  const dht: number[] = [];
  const specs: [number, HuffmanSpec][] = [[0x00, STD_DC_LUMA], [0x10, STD_AC_LUMA]];
  if (channels === 3) specs.push([0x01, STD_DC_CHROMA], [0x11, STD_AC_CHROMA]);
  for (const [tc, spec] of specs) dht.push(tc, ...spec.bits, ...spec.values);
  out.segment(0xc4, dht);
  if (restart > 0) out.segment(0xdd, [restart >> 8, restart & 0xff]);

  const scans = opts.separateScans || channels === 1 ? comps.map((c) => [c]) : [comps];
  for (const scan of scans) writeScan(out, scan, mcux, mcuy, restart);
  out.marker(0xd9); // EOI
  return out.result();
}

function writeScan(out: ByteWriter, scan: Component[], mcux: number, mcuy: number, restart: number): void {
  const sos = [scan.length];
  for (const c of scan) sos.push(c.id, (c.tableId << 4) | c.tableId);
  sos.push(0, 63, 0);
  out.segment(0xda, sos);
  const bits = new BitWriter(out);
  const pred = new Int32Array(scan.length);
  // A non-interleaved scan's MCU is one block, over the component's own block grid.
  const single = scan.length === 1;
  const mcusX = single ? scan[0]!.scanBw : mcux;
  const mcusY = single ? scan[0]!.scanBh : mcuy;
  const total = mcusX * mcusY;
  let rstIndex = 0;
  for (let m = 0; m < total; m++) {
    if (restart > 0 && m > 0 && m % restart === 0) {
      bits.align();
      out.marker(0xd0 + (rstIndex++ & 7));
      pred.fill(0);
    }
    const mx = m % mcusX;
    const my = Math.floor(m / mcusX);
    for (let ci = 0; ci < scan.length; ci++) {
      const c = scan[ci]!;
      const h = single ? 1 : c.h;
      const v = single ? 1 : c.v;
      for (let y = 0; y < v; y++)
        for (let x = 0; x < h; x++) {
          const block = (my * v + y) * c.bw + mx * h + x;
          pred[ci] = writeBlock(bits, c, block * 64, pred[ci]!);
        }
    }
  }
  bits.align();
}

/** Huffman-codes one block (DC difference, then AC run/size symbols); returns the new DC predictor. */
function writeBlock(bits: BitWriter, c: Component, base: number, pred: number): number {
  const coef = c.coef;
  const dc = coef[base]!;
  const diff = dc - pred;
  const s = category(diff);
  bits.bits(c.dc.code[s]!, c.dc.size[s]!);
  if (s > 0) bits.bits(diff < 0 ? diff + (1 << s) - 1 : diff, s);
  let run = 0;
  for (let k = 1; k < 64; k++) {
    const v = coef[base + ZIGZAG[k]!]!;
    if (v === 0) {
      run++;
      continue;
    }
    while (run > 15) {
      bits.bits(c.ac.code[0xf0]!, c.ac.size[0xf0]!);
      run -= 16;
    }
    const sz = category(v);
    const sym = (run << 4) | sz;
    bits.bits(c.ac.code[sym]!, c.ac.size[sym]!);
    bits.bits(v < 0 ? v + (1 << sz) - 1 : v, sz);
    run = 0;
  }
  if (run > 0) bits.bits(c.ac.code[0]!, c.ac.size[0]!);
  return dc;
}
