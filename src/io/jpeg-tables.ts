// Constants of baseline JPEG shared by the codec (src/io/jpeg-*.ts) and the GPU degradation
// (src/solvers/degradations/jpeg.ts): the example tables of ITU-T T.81 Annex K (what libjpeg and PIL
// write by default), IJG quality scaling, the zig-zag order, the orthonormal 8x8 DCT and the JFIF
// YCbCr conversion.

import { assertArg } from '../engine/errors.js';

/** Annex K.1 luminance quantisation table, natural (row-major) order. */
export const STD_LUMA_QUANT: readonly number[] = [
  16, 11, 10, 16, 24, 40, 51, 61,
  12, 12, 14, 19, 26, 58, 60, 55,
  14, 13, 16, 24, 40, 57, 69, 56,
  14, 17, 22, 29, 51, 87, 80, 62,
  18, 22, 37, 56, 68, 109, 103, 77,
  24, 35, 55, 64, 81, 104, 113, 92,
  49, 64, 78, 87, 103, 121, 120, 101,
  72, 92, 95, 98, 112, 100, 103, 99,
];

/** Annex K.2 chrominance quantisation table, natural order. */
export const STD_CHROMA_QUANT: readonly number[] = [
  17, 18, 24, 47, 99, 99, 99, 99,
  18, 21, 26, 66, 99, 99, 99, 99,
  24, 26, 56, 99, 99, 99, 99, 99,
  47, 66, 99, 99, 99, 99, 99, 99,
  99, 99, 99, 99, 99, 99, 99, 99,
  99, 99, 99, 99, 99, 99, 99, 99,
  99, 99, 99, 99, 99, 99, 99, 99,
  99, 99, 99, 99, 99, 99, 99, 99,
];

/** ZIGZAG[k] = natural index of the k-th coefficient in zig-zag order. */
export const ZIGZAG: readonly number[] = (() => {
  const order: number[] = [];
  // Walk the anti-diagonals s = row + col, alternating direction (up-right on even s).
  for (let s = 0; s < 15; s++) {
    const lo = Math.max(0, s - 7);
    const hi = Math.min(7, s);
    for (let t = lo; t <= hi; t++) {
      const row = s % 2 === 0 ? s - t : t;
      order.push(row * 8 + (s - row));
    }
  }
  return order;
})();

/**
 * IJG's jpeg_quality_scaling + jpeg_add_quant_table with force_baseline (what PIL's quality= does):
 * scale = 5000 / q below 50, else 200 - 2 q; entry = (base * scale + 50) / 100 in integer arithmetic,
 * clamped to [1, 255].
 */
export function scaleQuantTable(base: readonly number[], quality: number): Uint16Array {
  assertArg(Number.isInteger(quality) && quality >= 1 && quality <= 100, `JPEG quality must be an integer in 1..100, got ${quality}`);
  const scale = quality < 50 ? Math.floor(5000 / quality) : 200 - 2 * quality;
  const t = new Uint16Array(64);
  for (let i = 0; i < 64; i++) t[i] = Math.min(255, Math.max(1, Math.floor((base[i]! * scale + 50) / 100)));
  return t;
}

/** The luminance and chrominance tables (natural order) libjpeg uses for `quality`. */
export function jpegQuantTables(quality: number): { luma: Uint16Array; chroma: Uint16Array } {
  return { luma: scaleQuantTable(STD_LUMA_QUANT, quality), chroma: scaleQuantTable(STD_CHROMA_QUANT, quality) };
}

/** A Huffman table as stored in DHT: code counts per length 1..16 and the symbols in code order. */
export interface HuffmanSpec {
  bits: readonly number[];
  values: readonly number[];
}

/** Annex K.3 tables (Table K.3 - K.6). */
export const STD_DC_LUMA: HuffmanSpec = {
  bits: [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
  values: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
};
export const STD_DC_CHROMA: HuffmanSpec = {
  bits: [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
  values: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
};
export const STD_AC_LUMA: HuffmanSpec = {
  bits: [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d],
  values: [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
  ],
};
export const STD_AC_CHROMA: HuffmanSpec = {
  bits: [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77],
  values: [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
  ],
};
/**
 * Canonical Huffman codes (T.81 Annex C) for a table: code[symbol] and size[symbol]; null when the
 * counts do not fit (as libjpeg, the all-ones code of a length is not allowed).
 */
export function canonicalCodes(spec: HuffmanSpec): { code: Uint16Array; size: Uint8Array } | null {
  const code = new Uint16Array(256);
  const size = new Uint8Array(256);
  let next = 0;
  let k = 0;
  for (let len = 1; len <= 16; len++) {
    for (let i = 0; i < spec.bits[len - 1]!; i++) {
      const sym = spec.values[k++]!;
      code[sym] = next++;
      size[sym] = len;
    }
    if (next >= 1 << len) return null;
    next <<= 1;
  }
  return { code, size };
}

/** C[u * 8 + x] = a(u) cos((2x + 1) u pi / 16), a(0) = sqrt(1/8), else 1/2: the orthonormal DCT-II the JPEG FDCT equals. */
export const DCT8: Float64Array = (() => {
  const c = new Float64Array(64);
  for (let u = 0; u < 8; u++) {
    const a = u === 0 ? Math.SQRT1_2 / 2 : 0.5;
    for (let x = 0; x < 8; x++) c[u * 8 + x] = a * Math.cos(((2 * x + 1) * u * Math.PI) / 16);
  }
  return c;
})();

// JFIF (ITU-R BT.601 full range) YCbCr: Y = KR R + KG G + KB B, Cb = (B - Y) / (2 (1 - KB)) + 128,
// Cr = (R - Y) / (2 (1 - KR)) + 128, and its exact inverse.
export const KR = 0.299;
export const KG = 0.587;
export const KB = 0.114;

/** Rows Y, Cb, Cr of the linear part of RGB -> YCbCr (the +128 offsets of Cb and Cr come after). */
export const RGB_TO_YCC: readonly number[] = [
  KR, KG, KB,
  -KR / (2 * (1 - KB)), -KG / (2 * (1 - KB)), 0.5,
  0.5, -KG / (2 * (1 - KR)), -KB / (2 * (1 - KR)),
];

/** Rows R, G, B of the inverse, applied to (Y, Cb - 128, Cr - 128). */
export const YCC_TO_RGB: readonly number[] = [
  1, 0, 2 * (1 - KR),
  1, (-2 * KB * (1 - KB)) / KG, (-2 * KR * (1 - KR)) / KG,
  1, 2 * (1 - KB), 0,
];
