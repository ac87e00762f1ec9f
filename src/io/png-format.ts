// Facts of the PNG format shared by the decoder and the encoder (PNG spec, 3rd edition).

export const PNG_SIGNATURE = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export type PngColorType = 'gray' | 'rgb' | 'palette' | 'gray-alpha' | 'rgba';

/** IHDR colour type code -> name, samples a pixel as stored, and the bit depths the spec allows. */
export const COLOR_TYPES: Record<number, { name: PngColorType; samples: number; depths: readonly number[] }> = {
  0: { name: 'gray', samples: 1, depths: [1, 2, 4, 8, 16] },
  2: { name: 'rgb', samples: 3, depths: [8, 16] },
  3: { name: 'palette', samples: 1, depths: [1, 2, 4, 8] },
  4: { name: 'gray-alpha', samples: 2, depths: [8, 16] },
  6: { name: 'rgba', samples: 4, depths: [8, 16] },
};

export const COLOR_TYPE_CODE: Record<PngColorType, number> = { gray: 0, rgb: 2, palette: 3, 'gray-alpha': 4, rgba: 6 };

/** One Adam7 pass: first pixel (x0, y0) and step (dx, dy). A non-interlaced image is the single pass {0, 0, 1, 1}. */
export interface Pass {
  x0: number;
  y0: number;
  dx: number;
  dy: number;
}

export const ADAM7: readonly Pass[] = [
  { x0: 0, y0: 0, dx: 8, dy: 8 },
  { x0: 4, y0: 0, dx: 8, dy: 8 },
  { x0: 0, y0: 4, dx: 4, dy: 8 },
  { x0: 2, y0: 0, dx: 4, dy: 4 },
  { x0: 0, y0: 2, dx: 2, dy: 4 },
  { x0: 1, y0: 0, dx: 2, dy: 2 },
  { x0: 0, y0: 1, dx: 1, dy: 2 },
];

export const NO_INTERLACE: readonly Pass[] = [{ x0: 0, y0: 0, dx: 1, dy: 1 }];

/** Pixels of a pass along an axis of `size` pixels starting at `start` with step `step` (0 if the pass is empty). */
export function passExtent(size: number, start: number, step: number): number {
  return size > start ? Math.ceil((size - start) / step) : 0;
}

/** Bytes of one scanline's pixel data (filter byte excluded). */
export function scanlineBytes(width: number, bitsPerPixel: number): number {
  return Math.ceil((width * bitsPerPixel) / 8);
}

/** The Paeth predictor: whichever of left (a), up (b), upper-left (c) is nearest to a + b - c, ties in that order. */
export function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

export const FILTER_NAMES = ['none', 'sub', 'up', 'average', 'paeth'] as const;
export type PngFilter = (typeof FILTER_NAMES)[number];
