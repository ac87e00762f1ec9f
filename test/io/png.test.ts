// PNG decoder and encoder. Synthesized files come from test/ref/png.ts (an independent writer on
// node:zlib) with known pixels; the real images under shared/assets/images are checked against the
// manifest's sizes and an independent reader; the encoder is checked by round trips and by that
// reader; malformed files must fail fast with a PngError naming the file and the problem.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ArgumentError } from '../../src/engine/errors.js';
import { decodePng, decodePng16, encodePng, PngError, readPngHeader } from '../../src/io/png.js';
import type { Channels, Image16, Image8 } from '../../src/io/types.js';
import { buildPng, chunk, concat, ihdr, readPngRef, scanlines, SIGNATURE, type RawPngSpec } from '../ref/png.js';

const ASSETS = new URL('../../../shared/assets/images', import.meta.url).pathname;

/** Deterministic integers in [0, n) (mulberry32). */
function rng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

/** Index of the first differing sample, or -1 (also -1 only when the lengths match). (toEqual is slow on megapixel arrays.) */
function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

const SPP: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const NAMES: Record<number, string> = { 0: 'gray', 2: 'rgb', 3: 'palette', 4: 'gray-alpha', 6: 'rgba' };

/**
 * What the decoder must return for `spec`, from the documented rules: tRNS adds alpha (0 on the key
 * colour / from the palette's alpha list, else opaque); to 8 bits, 16-bit keeps the high byte and
 * d < 8 scales by 255 / (2^d - 1); to 16 bits, d < 16 scales by 65535 / (2^d - 1).
 */
function expectedPixels(spec: RawPngSpec, outDepth: 8 | 16): { channels: number; data: number[] } {
  const { colorType: ct, bitDepth: d, samples, palette, trns } = spec;
  const max = outDepth === 8 ? 255 : 65535;
  const scale = (v: number) => (outDepth === 8 && d === 16 ? v >> 8 : (v * max) / (2 ** d - 1));
  const spp = SPP[ct]!;
  const data: number[] = [];
  const n = spec.width * spec.height;
  if (ct === 3) {
    for (let i = 0; i < n; i++) {
      const idx = samples[i]!;
      for (let c = 0; c < 3; c++) data.push((palette![idx * 3 + c]! * max) / 255);
      if (trns) data.push(((idx < trns.length ? trns[idx]! : 255) * max) / 255);
    }
    return { channels: trns ? 4 : 3, data };
  }
  const key = trns ? Array.from({ length: spp }, (_, c) => trns[2 * c]! * 256 + trns[2 * c + 1]!) : null;
  for (let i = 0; i < n; i++) {
    const px = Array.from({ length: spp }, (_, c) => samples[i * spp + c]!);
    data.push(...px.map(scale));
    if (key) data.push(px.every((v, c) => v === key[c]) ? 0 : max);
  }
  return { channels: spp + (key ? 1 : 0), data };
}

/** Random stored samples for a colour type / depth, with some runs so every filter meets repeats. */
function randomSpec(ct: 0 | 2 | 3 | 4 | 6, d: number, w: number, h: number, seed: number, interlace: boolean): RawPngSpec {
  const r = rng(seed);
  const spp = SPP[ct]!;
  const nPal = ct === 3 ? Math.min(2 ** d, 1 + r(2 ** d)) : 0;
  const top = ct === 3 ? nPal : 2 ** d;
  const samples = new Uint16Array(w * h * spp);
  for (let i = 0; i < samples.length; i++) samples[i] = i > spp && r(4) === 0 ? samples[i - spp]! : r(top);
  const palette = ct === 3 ? Array.from({ length: nPal * 3 }, () => r(256)) : undefined;
  return { width: w, height: h, colorType: ct, bitDepth: d, interlace, samples, palette, idatChunks: 1 + r(4) };
}

async function expectDecodes(spec: RawPngSpec, label: string): Promise<void> {
  const file = buildPng(spec);
  for (const depth of [8, 16] as const) {
    const img = depth === 8 ? await decodePng(file, label) : await decodePng16(file, label);
    const want = expectedPixels(spec, depth);
    expect([img.width, img.height, img.channels, img.bitDepth], `${label} -> ${depth}`).toEqual([spec.width, spec.height, want.channels, depth]);
    expect(img.data).toBeInstanceOf(depth === 8 ? Uint8Array : Uint16Array);
    const got = Array.from(img.data);
    const bad = got.findIndex((v, i) => v !== want.data[i]);
    expect(bad, `${label} -> ${depth}: first wrong sample ${bad} (got ${got[bad]}, want ${want.data[bad]})`).toBe(-1);
    expect(img.header).toEqual({ width: spec.width, height: spec.height, bitDepth: spec.bitDepth, colorType: NAMES[spec.colorType], interlaced: !!spec.interlace });
  }
}

// Sizes with empty Adam7 passes (1x1 has only pass 1, 2x1 passes 1 and 6, ...), odd widths that leave
// sub-byte padding, and one big enough for every pass to have several rows.
const SIZES: [number, number][] = [
  [1, 1],
  [2, 1],
  [1, 5],
  [3, 3],
  [7, 5],
  [13, 11],
  [33, 17],
];
const DEPTHS: [0 | 2 | 3 | 4 | 6, number[]][] = [
  [0, [1, 2, 4, 8, 16]],
  [2, [8, 16]],
  [3, [1, 2, 4, 8]],
  [4, [8, 16]],
  [6, [8, 16]],
];

describe('decodePng: synthesized files, pixel-exact', () => {
  for (const [ct, depths] of DEPTHS) {
    for (const d of depths) {
      it(`${NAMES[ct]} ${d}-bit, plain and Adam7, all filters, split IDAT`, async () => {
        let seed = ct * 100 + d;
        for (const interlace of [false, true]) {
          for (const [w, h] of SIZES) await expectDecodes(randomSpec(ct, d, w, h, seed++, interlace), `${NAMES[ct]}${d}_${w}x${h}${interlace ? 'i' : ''}.png`);
        }
      });
    }
  }

  it('tRNS: gray and RGB colour keys (every depth), partial palette alpha, plain and Adam7', async () => {
    let seed = 7;
    for (const interlace of [false, true]) {
      for (const [ct, depths] of [DEPTHS[0]!, DEPTHS[1]!] as const) {
        for (const d of depths) {
          const spec = randomSpec(ct, d, 9, 7, seed++, interlace);
          // The key is pixel 3's colour, so some pixels are transparent; written big-endian 16-bit.
          const spp = SPP[ct]!;
          spec.trns = Array.from({ length: spp }, (_, c) => spec.samples[3 * spp + c]!).flatMap((v) => [v >> 8, v & 255]);
          await expectDecodes(spec, `trns_${NAMES[ct]}${d}.png`);
        }
      }
      for (const d of [1, 2, 4, 8]) {
        const spec = randomSpec(3, d, 11, 6, seed++, interlace);
        const nPal = spec.palette!.length / 3;
        spec.trns = Array.from({ length: Math.max(1, nPal - 1) }, (_, i) => (i * 97) % 256); // shorter than the palette: the rest opaque
        await expectDecodes(spec, `trns_palette${d}.png`);
      }
    }
  });

  it('every filter type on every row position, including the first row (no previous row)', async () => {
    for (const ft of [0, 1, 2, 3, 4]) {
      for (const [ct, d] of [[2, 8], [6, 16], [0, 4]] as const) {
        const spec = { ...randomSpec(ct, d, 10, 4, 50 + ft, false), filter: () => ft };
        await expectDecodes(spec, `filter${ft}.png`);
      }
    }
  });

  it('skips ancillary chunks, accepts a suggested palette in an RGB image, and reads the header alone', async () => {
    const spec = randomSpec(2, 8, 5, 4, 3, false);
    spec.extra = [chunk('gAMA', [0, 0, 177, 143]), chunk('tEXt', Array.from('Comment\0hi', (c) => c.charCodeAt(0)))];
    spec.palette = [1, 2, 3, 4, 5, 6];
    await expectDecodes(spec, 'ancillary.png');
    expect(readPngHeader(buildPng({ ...spec, interlace: true }), 'h.png')).toEqual({ width: 5, height: 4, bitDepth: 8, colorType: 'rgb', interlaced: true });
  });
});

describe('decodePng: the shared test images', () => {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir)) {
      const p = join(dir, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (e.toLowerCase().endsWith('.png')) files.push(p);
    }
  };
  walk(ASSETS);
  const manifest = JSON.parse(readFileSync(join(ASSETS, 'manifest.json'), 'utf8')) as { files: { path: string; width?: number; height?: number }[] };
  const sizes = new Map(manifest.files.map((f) => [f.path, f]));

  it('finds the images and the manifest lists each one', () => {
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(sizes.has(relative(ASSETS, f)), `${relative(ASSETS, f)} in manifest.json`).toBe(true);
  });

  it('decodes every image to the manifest size, equal to an independent reader', async () => {
    for (const f of files) {
      const bytes = readFileSync(f);
      const img = await decodePng(bytes, f);
      const m = sizes.get(relative(ASSETS, f))!;
      if (m.width !== undefined) expect([img.width, img.height], f).toEqual([m.width, m.height]);
      const ref = readPngRef(bytes); // these are all 8/16-bit, non-interlaced, non-palette
      expect([img.width, img.height, img.channels], f).toEqual([ref.width, ref.height, ref.samples.length / (ref.width * ref.height)]);
      expect(ref.bitDepth).toBe(8);
      expect(firstDiff(img.data, ref.samples), `${f}: first differing sample`).toBe(-1);
    }
  });
});

describe('encodePng', () => {
  const image = (w: number, h: number, ch: Channels, depth: 8 | 16, seed: number) => {
    const r = rng(seed);
    const data = depth === 8 ? new Uint8Array(w * h * ch) : new Uint16Array(w * h * ch);
    // Smooth ramps plus noise, so the adaptive choice varies from row to row.
    for (let i = 0; i < data.length; i++) {
      const x = Math.floor(i / ch) % w;
      const y = Math.floor(i / ch / w);
      data[i] = Math.min(2 ** depth - 1, Math.floor(((x * 3 + y * 5 + (i % ch) * 40) % 200) * (depth === 8 ? 1 : 300)) + r(depth === 8 ? 20 : 5000));
    }
    return { width: w, height: h, channels: ch, data } as Image8 | Image16;
  };

  it('round-trips gray, gray + alpha, RGB and RGBA at 8 and 16 bits, every filter choice, odd sizes', async () => {
    let seed = 1;
    for (const depth of [8, 16] as const) {
      for (const ch of [1, 2, 3, 4] as const) {
        for (const [w, h] of [[1, 1], [5, 3], [37, 19]]) {
          for (const filter of ['adaptive', 'none', 'sub', 'up', 'average', 'paeth'] as const) {
            const img = image(w!, h!, ch, depth, seed++);
            const file = await encodePng(img, { filter });
            const back = depth === 8 ? await decodePng(file, 'rt.png') : await decodePng16(file, 'rt.png');
            expect([back.width, back.height, back.channels, back.bitDepth]).toEqual([w, h, ch, depth]);
            expect(back.data).toBeInstanceOf(img.data.constructor);
            expect(firstDiff(back.data, img.data), `${ch}ch ${depth}-bit ${w}x${h} ${filter}`).toBe(-1);
            // The independent reader sees the same samples, valid CRCs, and the requested filter.
            const ref = readPngRef(file);
            expect([ref.colorType, ref.bitDepth]).toEqual([[0, 0, 4, 2, 6][ch], depth]);
            expect(firstDiff(ref.samples, img.data)).toBe(-1);
            if (filter !== 'adaptive') expect(new Set(ref.filters)).toEqual(new Set([['none', 'sub', 'up', 'average', 'paeth'].indexOf(filter)]));
          }
        }
      }
    }
  });

  it('a photo: exact round trip, several IDAT chunks, adaptive filtering smaller than none', async () => {
    const bytes = readFileSync(join(ASSETS, 'natural/kodim05.png'));
    const img = await decodePng(bytes, 'kodim05.png');
    const adaptive = await encodePng(img);
    const none = await encodePng(img, { filter: 'none' });
    expect(adaptive.length).toBeLessThan(none.length);
    const ref = readPngRef(adaptive);
    expect(ref.chunkTypes.filter((t) => t === 'IDAT').length).toBeGreaterThan(1);
    expect(new Set(ref.filters).size).toBeGreaterThan(1); // the heuristic does pick per row
    expect(firstDiff((await decodePng(adaptive, 'x')).data, img.data)).toBe(-1);
  });

  it('refuses inconsistent images with an ArgumentError', async () => {
    await expect(encodePng({ width: 2, height: 2, channels: 3, data: new Uint8Array(11) })).rejects.toThrow(ArgumentError);
    await expect(encodePng({ width: 0, height: 2, channels: 3, data: new Uint8Array(0) })).rejects.toThrow(/invalid size 0x2/);
    await expect(encodePng({ width: 1, height: 1, channels: 5 as Channels, data: new Uint8Array(5) })).rejects.toThrow(/channel count 5/);
    await expect(encodePng({ width: 1, height: 1, channels: 1, data: new Uint8Array(1) }, { filter: 'median' as 'none' })).rejects.toThrow(/unknown filter/);
  });
});

describe('decodePng: malformed files fail with a clear PngError', () => {
  const good = () => randomSpec(2, 8, 6, 5, 99, false);
  const goodFile = buildPng({ ...good(), idatChunks: 3 });

  /** Offset of the n-th (1-based) chunk of `type`. */
  const findChunk = (file: Uint8Array, type: string, n = 1) => {
    for (let pos = 8, seen = 0; pos < file.length; ) {
      const len = new DataView(file.buffer, file.byteOffset).getUint32(pos);
      if (String.fromCharCode(...file.subarray(pos + 4, pos + 8)) === type && ++seen === n) return pos;
      pos += 12 + len;
    }
    throw new Error(`no ${type} #${n}`);
  };

  const cases: [string, () => Uint8Array, RegExp][] = [
    ['empty file', () => new Uint8Array(0), /the file is empty/],
    ['bad signature', () => Uint8Array.from(goodFile, (v, i) => (i === 1 ? 0x51 : v)), /bad signature: not a PNG file/],
    ['a JPEG', () => Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 74, 70, 73, 70]), /bad signature.*looks like a JPEG/],
    ['only part of the signature', () => goodFile.slice(0, 5), /shorter than the 8-byte PNG signature/],
    [
      'bad CRC in IDAT #2',
      () => {
        const f = goodFile.slice();
        f[findChunk(f, 'IDAT', 2) + 8] ^= 0x10;
        return f;
      },
      /CRC mismatch in chunk IDAT #2 at offset \d+ \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)/,
    ],
    [
      'bad CRC in IHDR',
      () => {
        const f = goodFile.slice();
        f[16 + 3] ^= 1; // the width's low byte
        return f;
      },
      /CRC mismatch in chunk IHDR/,
    ],
    ['truncated inside IDAT', () => goodFile.slice(0, findChunk(goodFile, 'IDAT', 3) + 10), /truncated: chunk IDAT at offset \d+ declares \d+ data bytes/],
    ['truncated before IEND', () => goodFile.slice(0, findChunk(goodFile, 'IEND')), /truncated: the file ends at byte \d+ before the IEND chunk/],
    ['truncated inside a chunk header', () => goodFile.slice(0, findChunk(goodFile, 'IEND') + 5), /truncated.*inside a chunk header/],
    [
      'truncated zlib stream (valid CRCs)',
      () => {
        const z = deflateSync(scanlines(good()));
        return buildPng(good(), z.subarray(0, z.length >> 1));
      },
      /truncated image data: the zlib stream in the IDAT chunks ends early/,
    ],
    ['complete zlib stream with too few rows', () => buildPng(good(), deflateSync(scanlines(good()).subarray(0, 40))), /truncated image data: it inflates to 40 bytes, a 6x5 8-bit rgb image needs 95/],
    ['too much image data', () => buildPng(good(), deflateSync(concat([scanlines(good()), new Uint8Array(7)]))), /inflates to more than the 95 bytes/],
    ['corrupt deflate data (valid CRCs)', () => buildPng(good(), Uint8Array.from([0x78, 0x9c, 0xff, 0xff, 0xff, 0xff, 0x00, 0x12, 0x34])), /corrupt image data: zlib says/],
    ['zero width', () => buildPng({ ...good(), width: 0, samples: [] }), /invalid image size 0x5: zero width or height/],
    ['zero height', () => buildPng({ ...good(), height: 0, samples: [] }), /invalid image size 6x0: zero width or height/],
    ['invalid filter type', () => buildPng({ ...good(), filter: (r) => (r === 2 ? 5 : 0) }), /invalid filter type 5 on scanline 2/],
    [
      'invalid filter type in an Adam7 pass',
      () => buildPng({ ...good(), interlace: true, filter: (r, p) => (p === 6 && r === 1 ? 9 : 1) }),
      /invalid filter type 9 on scanline 1 of Adam7 pass 7/,
    ],
    ['palette index out of range', () => buildPng({ ...randomSpec(3, 4, 4, 4, 5, false), samples: new Uint16Array(16).fill(3), palette: [0, 0, 0, 9, 9, 9] }), /palette index 3 at pixel \(0, 0\) but the palette has 2 entries/],
    ['palette image without PLTE', () => buildPng({ ...randomSpec(3, 8, 4, 4, 5, false), palette: undefined }), /palette image without a PLTE chunk/],
    ['invalid bit depth', () => buildPng({ ...good(), bitDepth: 4 }), /invalid bit depth 4 for colour type 2 \(rgb\); allowed: 8, 16/],
    ['invalid colour type', () => concat([SIGNATURE, ihdr(2, 2, 8, 5), chunk('IEND')]), /invalid colour type 5/],
    ['unknown critical chunk', () => buildPng({ ...good(), extra: [chunk('ZZZZ', [1])] }), /unsupported critical chunk ZZZZ/],
    ['first chunk not IHDR', () => concat([SIGNATURE, chunk('gAMA', [0, 0, 0, 1]), goodFile.subarray(8)]), /the first chunk is gAMA, a PNG must start with IHDR/],
    [
      'IDAT chunks not consecutive',
      () => {
        const z = deflateSync(scanlines(good()));
        return concat([SIGNATURE, ihdr(6, 5, 8, 2), chunk('IDAT', z.subarray(0, 10)), chunk('tEXt', [65, 0, 66]), chunk('IDAT', z.subarray(10)), chunk('IEND')]);
      },
      /IDAT chunks are not consecutive/,
    ],
    ['no IDAT', () => concat([SIGNATURE, ihdr(6, 5, 8, 2), chunk('IEND')]), /no IDAT chunk/],
    ['corrupt chunk type', () => concat([SIGNATURE, ihdr(6, 5, 8, 2), Uint8Array.from([0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0])]), /corrupt chunk header at offset 33/],
    ['bad IHDR length', () => concat([SIGNATURE, chunk('IHDR', [0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0]), chunk('IEND')]), /IHDR chunk has 12 bytes, expected 13/],
    ['interlace method 2', () => concat([SIGNATURE, chunk('IHDR', [0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 2]), chunk('IEND')]), /unsupported interlace method 2/],
  ];

  for (const [what, make, message] of cases) {
    it(what, { timeout: 5000 }, async () => {
      const err = await decodePng(make(), 'bad.png').then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(PngError);
      expect((err as PngError).message).toMatch(/^png bad\.png: /);
      expect((err as PngError).message).toMatch(message);
      expect((err as PngError).file).toBe('bad.png');
    });
  }

  it('refuses a zlib bomb at the first byte past the image size, without inflating the rest', async () => {
    // 64 MiB of zeros deflate to ~64 KiB; the 6x5 header needs 95 bytes.
    const bomb = deflateSync(new Uint8Array(64 << 20), { level: 9 });
    const t0 = performance.now();
    await expect(decodePng(buildPng(good(), bomb), 'bomb.png')).rejects.toThrow(/png bomb\.png: the image data inflates to more than the 95 bytes/);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('refuses images over maxPixels before inflating', async () => {
    await expect(decodePng(goodFile, 'big.png', { maxPixels: 29 })).rejects.toThrow(/png big\.png: 6x5 = 30 pixels is more than maxPixels \(29\)/);
    expect((await decodePng(goodFile, 'ok.png', { maxPixels: 30 })).width).toBe(6);
  });
});
