// The JPEG codec (src/io/jpeg*.ts): tables against T.81 Annex K and the IJG formula, the decoder on
// hand-assembled files with known pixels, encode -> decode round trips of real photos (PSNR as the
// quality implies) and of small synthetic images at awkward sizes / samplings / restart intervals /
// scan layouts / segment orders, and malformed or truncated files, which must fail with a JpegError.
//
// Offline, once (not part of the tests): against libjpeg-turbo 2.1.5 (the library PIL wraps, driven
// by a small C program), our DQT and DHT bytes equal libjpeg's (q 1, 10, 25, 50, 75, 95, 100); both
// decoders agree within 2-3 levels on either encoder's files; our q10 round trip is within 0.02 dB
// of libjpeg's PSNR to the original, and 41-48 dB from libjpeg's round trip (coefficients near a
// quantisation boundary round differently: libjpeg quantises 8-bit YCbCr with an integer DCT, we
// use floats).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ArgumentError, SiloError } from '../../src/engine/errors.js';
import {
  DCT8,
  JpegError,
  STD_AC_CHROMA,
  STD_AC_LUMA,
  STD_DC_CHROMA,
  STD_DC_LUMA,
  ZIGZAG,
  canonicalCodes,
  decodeJpeg,
  encodeJpeg,
  jpegQuantTables,
  type HuffmanSpec,
  type JpegEncodeOptions,
} from '../../src/io/jpeg.js';
import { decodePng } from '../../src/io/png.js';
import { DEFAULT_MAX_PIXELS } from '../../src/io/pixel-cap.js';
import { crop, toRgb8 } from '../../src/io/image.js';
import { syntheticRgb8 } from '../ref/jpeg.js';

const ASSETS = new URL('../../../shared/assets/images', import.meta.url).pathname;

function psnr(a: Uint8Array, b: Uint8Array): number {
  expect(a.length).toBe(b.length);
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i]! - b[i]!) ** 2;
  return 10 * Math.log10((255 * 255 * a.length) / se);
}

function maxDiff(a: Uint8Array, b: Uint8Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

async function photo(path: string): Promise<{ data: Uint8Array; width: number; height: number }> {
  const img = toRgb8(await decodePng(readFileSync(`${ASSETS}/${path}`), path));
  return { data: img.data, width: img.width, height: img.height };
}

/** Header segments up to the first SOS: marker and byte range (including the 0xFF marker bytes). */
function segments(b: Uint8Array): { marker: number; start: number; end: number }[] {
  const out: { marker: number; start: number; end: number }[] = [];
  let p = 2;
  while (p < b.length) {
    const marker = b[p + 1]!;
    const end = p + 2 + ((b[p + 2]! << 8) | b[p + 3]!);
    out.push({ marker, start: p, end });
    if (marker === 0xda) break;
    p = end;
  }
  return out;
}

function concat(parts: ArrayLike<number>[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** A marker segment. */
function seg(marker: number, payload: number[]): number[] {
  return [0xff, marker, (payload.length + 2) >> 8, (payload.length + 2) & 255, ...payload];
}

/** '0'/'1' bit string -> entropy-coded bytes: padded with 1s, 0xFF stuffed. */
function entropyBytes(bits: string): number[] {
  const padded = bits + '1'.repeat((8 - (bits.length % 8)) % 8);
  const out: number[] = [];
  for (let i = 0; i < padded.length; i += 8) {
    const v = parseInt(padded.slice(i, i + 8), 2);
    out.push(v);
    if (v === 0xff) out.push(0);
  }
  return out;
}

describe('tables', () => {
  // T.81 Annex K, Tables K.1 and K.2, row by row.
  const K1 = [
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92], [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
  ].flat();
  const K2 = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56], [47, 66]].flatMap((r) => [...r, ...new Array<number>(8 - r.length).fill(99)]);
  K2.push(...new Array<number>(32).fill(99));

  it('quantisation tables follow the IJG quality formula for every quality', () => {
    for (let q = 1; q <= 100; q++) {
      const scale = q < 50 ? Math.floor(5000 / q) : 200 - q * 2;
      const expected = (base: number[]) => base.map((v) => Math.min(255, Math.max(1, Math.floor((v * scale + 50) / 100))));
      const t = jpegQuantTables(q);
      expect(Array.from(t.luma), `luma q${q}`).toEqual(expected(K1));
      expect(Array.from(t.chroma), `chroma q${q}`).toEqual(expected(K2));
    }
    expect(Array.from(jpegQuantTables(50).luma)).toEqual(K1); // quality 50 is the Annex K table itself
    expect(() => jpegQuantTables(0)).toThrow(ArgumentError);
    expect(() => jpegQuantTables(101)).toThrow(ArgumentError);
  });

  it('zig-zag order is T.81 Figure A.6', () => {
    expect(ZIGZAG).toEqual([
      0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
      35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ]);
  });

  it('the standard Huffman tables are complete, valid codes over the right symbols', () => {
    const check = (spec: HuffmanSpec, symbols: number[], name: string) => {
      expect(spec.bits.reduce((a, b) => a + b, 0), name).toBe(spec.values.length);
      expect([...spec.values].sort((a, b) => a - b), name).toEqual(symbols);
      expect(canonicalCodes(spec), name).not.toBeNull();
    };
    const dc = Array.from({ length: 12 }, (_, i) => i);
    // AC symbols: EOB (0x00), ZRL (0xF0) and run r (0..15) / size s (1..10).
    const ac = [0x00, 0xf0];
    for (let r = 0; r < 16; r++) for (let s = 1; s <= 10; s++) ac.push((r << 4) | s);
    ac.sort((a, b) => a - b);
    check(STD_DC_LUMA, dc, 'DC luma');
    check(STD_DC_CHROMA, dc, 'DC chroma');
    check(STD_AC_LUMA, ac, 'AC luma');
    check(STD_AC_CHROMA, ac, 'AC chroma');
    // Annex K.3.1: the luminance DC code of category 0 is 00, of 11 is 111111110.
    const c = canonicalCodes(STD_DC_LUMA)!;
    expect([c.code[0], c.size[0], c.code[11], c.size[11]]).toEqual([0b00, 2, 0b111111110, 9]);
    expect(canonicalCodes({ bits: [2, ...new Array(15).fill(0)], values: [0, 1] })).toBeNull(); // '1' of length 1 is all ones
  });

  it('DCT8 is the T.81 A.3.3 FDCT (orthonormal)', () => {
    for (let u = 0; u < 8; u++)
      for (let x = 0; x < 8; x++) expect(DCT8[u * 8 + x]).toBeCloseTo(0.5 * (u === 0 ? Math.SQRT1_2 : 1) * Math.cos(((2 * x + 1) * u * Math.PI) / 16), 14);
  });
});

describe('decoder on hand-assembled files', () => {
  // DC table: '0' -> category 0, '10' -> category 6. AC table: '0' -> EOB, '10' -> run 0 size 1.
  const dht = seg(0xc4, [0x00, 1, 1, ...new Array(14).fill(0), 0, 6, 0x10, 1, 1, ...new Array(14).fill(0), 0x00, 0x01]);
  const dqtOnes = (id: number, ac01 = 1) => seg(0xdb, [id, 1, ac01, ...new Array(62).fill(1)]);
  const dc = (v: number) => (v === 0 ? '0' : '10' + (v < 0 ? v + 63 : v).toString(2).padStart(6, '0'));

  it('a 16x8 grey image: two blocks with DC only, and an AC coefficient', () => {
    // Block 1: DC 48 (pixel 128 + 48 / 8 = 134), AC (0,1) = +1 * q 50; block 2: DC 48 - 40 = 8 (pixel 129).
    const bits = dc(48) + '10' + '1' + '0' + dc(-40) + '0';
    const file = concat([
      [0xff, 0xd8],
      dqtOnes(0, 50),
      seg(0xc0, [8, 0, 8, 0, 16, 1, 1, 0x11, 0]),
      dht,
      seg(0xda, [1, 1, 0x00, 0, 63, 0]),
      entropyBytes(bits),
      [0xff, 0xd9],
    ]);
    const img = decodeJpeg(file, 'hand.jpg');
    expect([img.width, img.height, img.channels]).toEqual([16, 8, 1]);
    for (let y = 0; y < 8; y++)
      for (let x = 0; x < 16; x++) {
        // F(0,1) basis: C[0][y] C[1][x] = (1 / sqrt 8) (1 / 2) cos((2x + 1) pi / 16).
        const left = 134 + 50 * (1 / Math.sqrt(8)) * 0.5 * Math.cos(((2 * x + 1) * Math.PI) / 16);
        expect(img.data[y * 16 + x], `(${x}, ${y})`).toBe(x < 8 ? Math.round(left) : 129);
      }
  });

  it('a 16x16 4:2:0 colour image: four Y blocks, then Cb, then Cr per MCU', () => {
    // Y 134; Cb 128 - 32 / 8 = 124; Cr 128 + 40 / 8 = 133.
    const bits = dc(48) + '0' + ('0' + '0').repeat(3) + dc(-32) + '0' + dc(40) + '0';
    const file = concat([
      [0xff, 0xd8],
      dqtOnes(0),
      seg(0xc0, [8, 0, 16, 0, 16, 3, 1, 0x22, 0, 2, 0x11, 0, 3, 0x11, 0]),
      dht,
      seg(0xda, [3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0]),
      entropyBytes(bits),
      [0xff, 0xd9],
    ]);
    const img = decodeJpeg(file, 'hand420.jpg');
    expect([img.width, img.height, img.channels]).toEqual([16, 16, 3]);
    // JFIF: R = Y + 1.402 (Cr - 128), G = Y - 0.344136 (Cb - 128) - 0.714136 (Cr - 128), B = Y + 1.772 (Cb - 128).
    const rgb = [134 + 1.402 * 5, 134 - 0.344136 * -4 - 0.714136 * 5, 134 + 1.772 * -4].map(Math.round);
    for (let i = 0; i < 256; i++) expect([img.data[3 * i], img.data[3 * i + 1], img.data[3 * i + 2]], `pixel ${i}`).toEqual(rgb);
  });
});

describe('round trips of real photos', () => {
  // Measured (ours; libjpeg-turbo gives the same to 0.02 dB at q10): kodim03 q10 28.54 dB / q95 42.68 dB,
  // ffhq_00000 29.01 / 41.36, ffhq_69037 (256x256) 26.48 / 39.53, kodim01 crop 24.9 / 40.8.
  const photos = ['natural/kodim03.png', 'faces/ffhq_00000.png', 'faces256/ffhq_69037.png'];
  for (const path of photos) {
    it(path, async () => {
      const { data, width, height } = await photo(path);
      let prev = 0;
      let prevSize = 0;
      for (const q of [10, 50, 95]) {
        const file = encodeJpeg(data, width, height, q);
        const out = decodeJpeg(file, path);
        expect([out.width, out.height, out.channels]).toEqual([width, height, 3]);
        const p = psnr(out.data, data);
        if (q === 10) expect(p, `${path} q10`).toBeGreaterThan(24);
        if (q === 10) expect(p, `${path} q10`).toBeLessThan(30);
        if (q === 95) expect(p, `${path} q95`).toBeGreaterThan(38);
        expect(p, 'PSNR grows with quality').toBeGreaterThan(prev);
        expect(file.length, 'size grows with quality').toBeGreaterThan(prevSize);
        prev = p;
        prevSize = file.length;
      }
    });
  }

  it('odd-size crops of a photo, every subsampling (kodim01)', async () => {
    const full = await photo('natural/kodim01.png');
    for (const [w, h] of [[37, 29], [333, 207], [1, 1], [65, 3]] as const) {
      const img = crop({ ...full, channels: 3 }, 101, 57, w, h);
      for (const subsampling of ['4:2:0', '4:2:2', '4:4:4'] as const) {
        const out = decodeJpeg(encodeJpeg(img.data, w, h, 95, { subsampling }), 'crop');
        expect([out.width, out.height]).toEqual([w, h]);
        // q95 tables are 1..5: errors of a few levels (measured PSNR >= 39 dB on these crops).
        expect(psnr(out.data, img.data), `${w}x${h} ${subsampling}`).toBeGreaterThan(w * h < 100 ? 33 : 37);
      }
    }
  });
});

describe('decoder features on encoder-built files', () => {
  const W = 37;
  const H = 29;
  const rgb = syntheticRgb8(W, H, 3);
  const grey = Uint8Array.from({ length: W * H }, (_, i) => rgb[3 * i + 1]!);

  it('quality 100, 4:4:4: within rounding of the input', () => {
    const out = decodeJpeg(encodeJpeg(rgb, W, H, 100, { subsampling: '4:4:4' }), 'q100');
    // All divisors 1: each coefficient rounds by <= 0.5, i.e. ~0.3 level rms per YCbCr sample, and
    // up to 1.77x that in RGB; 3 levels bounds the worst pixel (measured 2).
    expect(maxDiff(out.data, rgb)).toBeLessThanOrEqual(3);
  });

  it('grayscale files at several sizes', () => {
    for (const [w, h] of [[1, 1], [8, 8], [17, 9], [W, H]] as const) {
      const g = Uint8Array.from({ length: w * h }, (_, i) => grey[(Math.floor(i / w) % H) * W + (i % w)]!);
      const file = encodeJpeg(g, w, h, 100, { channels: 1 });
      expect(file[segments(file).find((s) => s.marker === 0xc0)!.start + 9], 'SOF component count').toBe(1);
      const out = decodeJpeg(file, 'grey');
      expect([out.width, out.height, out.channels]).toEqual([w, h, 1]);
      // Luma only: ~0.3 level rms rounding, 2 levels bounds the worst pixel (measured 1).
      expect(maxDiff(out.data, g), `${w}x${h}`).toBeLessThanOrEqual(2);
    }
  });

  for (const subsampling of ['4:2:0', '4:2:2', '4:4:4'] as const) {
    it(`${subsampling}: restart intervals and separate scans decode to the same pixels`, () => {
      const plain = decodeJpeg(encodeJpeg(rgb, W, H, 75, { subsampling }), 'plain');
      // The synthetic image carries +-12 levels of uniform noise, which q75 mostly drops (measured 23.3 /
      // 24.4 / 27.9 dB for 4:2:0 / 4:2:2 / 4:4:4).
      expect(psnr(plain.data, rgb)).toBeGreaterThan(22);
      const variants: JpegEncodeOptions[] = [{ restartInterval: 1 }, { restartInterval: 3 }, { restartInterval: 7 }, { separateScans: true }, { separateScans: true, restartInterval: 2 }];
      for (const v of variants) {
        const file = encodeJpeg(rgb, W, H, 75, { subsampling, ...v });
        if (v.restartInterval) expect(segments(file).some((s) => s.marker === 0xdd)).toBe(true);
        const out = decodeJpeg(file, JSON.stringify(v));
        expect(sameBytes(out.data, plain.data), `${subsampling} ${JSON.stringify(v)}`).toBe(true);
      }
    });
  }

  it('DQT / DHT placed anywhere before their scan, split or merged, with COM / APP segments and fill bytes', () => {
    const file = encodeJpeg(rgb, W, H, 60, { separateScans: true });
    const ref = decodeJpeg(file, 'ref').data;
    const segs = segments(file);
    const part = (m: number) => file.subarray(segs.find((s) => s.marker === m)!.start, segs.find((s) => s.marker === m)!.end);
    const firstSos = segs.find((s) => s.marker === 0xda)!.start;
    const scansAndEoi = file.subarray(firstSos);
    // Split DHT into one segment per table.
    const dhtPayload = part(0xc4).subarray(4);
    const dhts: number[][] = [];
    for (let p = 0; p < dhtPayload.length; ) {
      const n = dhtPayload.subarray(p + 1, p + 17).reduce((a, b) => a + b, 0);
      dhts.push(seg(0xc4, Array.from(dhtPayload.subarray(p, p + 17 + n))));
      p += 17 + n;
    }
    // Second and third scans follow the first; put chroma's DHT right before the second SOS.
    const sos2 = scansAndEoi.findIndex((v, i) => i > 0 && v === 0xff && scansAndEoi[i + 1] === 0xda);
    const com = seg(0xfe, Array.from('made by a test', (c) => c.charCodeAt(0)));
    const app = seg(0xe5, [1, 2, 3]);
    const rebuilt = concat([
      [0xff, 0xd8],
      com,
      part(0xc0), // SOF before the tables
      [0xff, 0xff], // fill bytes before a marker
      ...dhts.slice(0, 2),
      app,
      part(0xdb),
      scansAndEoi.subarray(0, sos2),
      ...dhts.slice(2),
      scansAndEoi.subarray(sos2),
    ]);
    expect(sameBytes(decodeJpeg(rebuilt, 'rebuilt').data, ref)).toBe(true);
  });

  it('a missing EOI is tolerated once the image data is complete', () => {
    const file = encodeJpeg(rgb, W, H, 50);
    const ref = decodeJpeg(file, 'ref').data;
    expect(sameBytes(decodeJpeg(file.subarray(0, file.length - 2), 'no EOI').data, ref)).toBe(true);
    expect(sameBytes(decodeJpeg(file.subarray(0, file.length - 1), 'half EOI').data, ref)).toBe(true);
  });
});

describe('malformed files give a JpegError', () => {
  const W = 23;
  const H = 17;
  const rgb = syntheticRgb8(W, H, 9);
  const good = encodeJpeg(rgb, W, H, 50, { restartInterval: 2 });

  const fails = (bytes: Uint8Array, pattern: RegExp, name = 'bad.jpg') => {
    let err: unknown;
    try {
      decodeJpeg(bytes, name);
    } catch (e) {
      err = e;
    }
    expect(err, `expected a JpegError matching ${pattern}`).toBeInstanceOf(JpegError);
    expect(err).toBeInstanceOf(SiloError);
    expect((err as Error).message).toMatch(pattern);
    expect((err as Error).message).toContain(name);
  };
  const patched = (at: number, ...v: number[]) => {
    const b = good.slice();
    b.set(v, at);
    return b;
  };
  const sof = segments(good).find((s) => s.marker === 0xc0)!.start;

  it('not a JPEG / empty', () => {
    fails(new Uint8Array(0), /not a JPEG/);
    fails(Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 13, 10, 26, 10]), /not a JPEG/, 'image.png');
  });

  it('every truncation before the end of the entropy-coded data', () => {
    for (let cut = 0; cut < good.length - 2; cut++) fails(good.subarray(0, cut), /truncated|not a JPEG|no image|marker/, `cut${cut}.jpg`);
  });

  it('unsupported processes and sample formats are named', () => {
    fails(patched(sof + 1, 0xc2), /progressive JPEG is not supported/);
    fails(patched(sof + 1, 0xc9), /arithmetic-coded \(SOF9\) JPEG is not supported/);
    fails(patched(sof + 1, 0xc3), /lossless \(SOF3\) JPEG is not supported/);
    fails(patched(sof + 4, 12), /12-bit samples are not supported/);
    fails(patched(sof + 9, 0), /0-component JPEG is not supported/);
  });

  it('inconsistent headers', () => {
    const segs = segments(good);
    const without = (m: number) => {
      const s = segs.find((x) => x.marker === m)!;
      return concat([good.subarray(0, s.start), good.subarray(s.end)]);
    };
    fails(without(0xc4), /Huffman tables .* not defined/);
    fails(without(0xdb), /quantisation table 0.*not defined/);
    fails(without(0xc0), /scan \(SOS\) before the frame header/);
    fails(patched(sof + 5, 0, 0), /height 0/); // SOF height 0 (needs DNL)
    fails(patched(sof + 11, 0x55), /invalid sampling factors 5x5/);
    const fractional = patched(sof + 11, 0x32); // Y 3x2 with Cb 2x2: 3 / 2 is not an integer ratio
    fractional[sof + 14] = 0x22;
    fails(fractional, /not an integer fraction/);
    // A large declared size (under the pixel cap) with only a few hundred bytes of data: refused before allocating.
    fails(patched(sof + 5, 0x1f, 0x40, 0x1f, 0x40), /declares 8000x8000 pixels/);
    const sos = segs.find((s) => s.marker === 0xda)!.start;
    fails(patched(sos + 5, 9), /component 9 is not in the frame/);
    fails(patched(sos + 2 + 2 + 1 + 6 + 1, 5), /spectral selection 0..5/);
  });

  it('the pixel cap (shared with PNG) is applied right after the frame header', () => {
    // A 1 MB file declaring 16384x16384: enough bytes for the blocks-per-byte check, refused by the cap at once.
    const huge = concat([patched(sof + 5, 0x40, 0x00, 0x40, 0x00), new Uint8Array(1 << 20)]);
    const t0 = performance.now();
    fails(huge, /16384x16384 = 268435456 pixels is more than maxPixels \(67108864\)/, 'huge.jpg');
    expect(performance.now() - t0).toBeLessThan(500);
    // The same cap as PNG's: 8193x8192 is over it, 8192x8192 is not (it fails later, on the data).
    expect(DEFAULT_MAX_PIXELS).toBe(8192 * 8192);
    fails(patched(sof + 5, 0x20, 0x00, 0x20, 0x01), /8193x8192 = 67117056 pixels is more than maxPixels/);
    fails(patched(sof + 5, 0x20, 0x00, 0x20, 0x00), /declares 8192x8192 pixels/);
    // maxPixels moves it.
    expect(() => decodeJpeg(good, 'small.jpg', { maxPixels: W * H - 1 })).toThrow(/small\.jpg: 23x17 = 391 pixels is more than maxPixels \(390\)/);
    expect(decodeJpeg(good, 'small.jpg', { maxPixels: W * H }).width).toBe(W);
  });

  it('corrupt entropy-coded data: a wrong or missing restart marker', () => {
    // 23x17 at 4:2:0 is 2x2 MCUs; with an interval of 2 there is one marker, RST0, after the first row.
    const rst = good.findIndex((v, i) => v === 0xff && good[i + 1] === 0xd0);
    expect(rst).toBeGreaterThan(0);
    fails(patched(rst + 1, 0xd3), /expected restart marker RST0 .* found 0xFFD3/);
    fails(patched(rst, 0x12), /expected restart marker RST0 .* found data/);
  });

  it('random mutations never give anything but an image of the declared size or a JpegError', () => {
    let s = 12345;
    const rnd = (n: number) => {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      return s % n;
    };
    let errors = 0;
    for (let t = 0; t < 400; t++) {
      const b = good.slice();
      for (let k = 0; k <= rnd(4); k++) b[rnd(b.length)] = rnd(256);
      try {
        const img = decodeJpeg(b, 'fuzz.jpg');
        expect(img.data.length).toBe(img.width * img.height * img.channels);
      } catch (e) {
        expect(e, String(e)).toBeInstanceOf(JpegError);
        errors++;
      }
    }
    expect(errors).toBeGreaterThan(0);
  });
});

describe('encoder arguments', () => {
  it('rejects bad sizes, data lengths and qualities', () => {
    const px = new Uint8Array(12);
    expect(() => encodeJpeg(px, 2, 2, 50)).not.toThrow();
    expect(() => encodeJpeg(px, 2, 3, 50)).toThrow(/expected 2x3x3 = 18 bytes, got 12/);
    expect(() => encodeJpeg(px, 0, 4, 50)).toThrow(ArgumentError);
    expect(() => encodeJpeg(px, 2, 2, 0)).toThrow(/quality must be an integer in 1..100/);
    expect(() => encodeJpeg(px, 2, 2, 101)).toThrow(ArgumentError);
    expect(() => encodeJpeg(px, 2, 2, 50, { restartInterval: -1 })).toThrow(ArgumentError);
    expect(() => encodeJpeg(px, 2, 2, 50, { subsampling: '4:1:1' as never })).toThrow(/unknown subsampling/);
  });
});
