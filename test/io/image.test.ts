// Image <-> [-1, 1] CHW data, crops and resizing (against hand-computed values, a dense-matrix PIL
// reference and the degradations golden case's PIL-resized astronaut), alpha compositing over a
// background, and the Node file helpers.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ArgumentError } from '../../src/engine/errors.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import { BLACK, centerCrop, chwToRgb8, crop, cropToMultiple, hasTransparency, imageToCHW, parseBackground, resizeAndCenterCrop, toRgb8 } from '../../src/io/image.js';
import { decodeImage, sniffImageFormat } from '../../src/io/decode.js';
import { readImageFile, writePng } from '../../src/io/image-node.js';
import { decodePng, decodePng16 } from '../../src/io/png.js';
import { encodeJpeg, JpegError } from '../../src/io/jpeg.js';
import { resizeImage, type ResizeFilter } from '../../src/io/resize.js';
import { ImageError, type Channels, type Image8 } from '../../src/io/types.js';
import { GOLDEN_ROOT } from '../helpers/golden.js';
import { resizeRef } from '../ref/resize.js';

const ASSETS = new URL('../../../shared/assets/images', import.meta.url).pathname;

/** Pixel values that encode their position, so crops and layouts are checkable by eye. */
function coordImage(w: number, h: number, ch: Channels): Image8 {
  const data = new Uint8Array(w * h * ch);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < ch; c++) data[(y * w + x) * ch + c] = (y * 16 + x + c * 101) % 256;
  return { width: w, height: h, channels: ch, data };
}

function randomImage(w: number, h: number, ch: Channels, seed: number): Image8 {
  let s = seed;
  const data = Uint8Array.from({ length: w * h * ch }, () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 16) & 255);
  return { width: w, height: h, channels: ch, data };
}

describe('imageToCHW', () => {
  it('RGB -> [1, 3, H, W] planes, x / 127.5 - 1', () => {
    const img = { width: 3, height: 2, channels: 3 as const, data: Uint8Array.from([0, 255, 51, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 127, 128, 200]) };
    const { data, shape } = imageToCHW(img);
    expect(shape).toEqual([1, 3, 2, 3]);
    // Channel c, row y, column x comes from pixel y * 3 + x, sample c.
    for (let c = 0; c < 3; c++) for (let i = 0; i < 6; i++) expect(data[c * 6 + i]).toBe(Math.fround(img.data[i * 3 + c]! / 127.5 - 1));
    expect([data[0], data[6], data[12]]).toEqual([-1, 1, Math.fround(51 / 127.5 - 1)]);
  });

  it('replicates gray; composites alpha over the background (white by default), never exposing the hidden RGB', () => {
    // Gray + alpha: 10 fully transparent -> white 255; 200 opaque -> 200.
    const g = imageToCHW({ width: 2, height: 1, channels: 2, data: Uint8Array.from([10, 0, 200, 255]) }).data;
    expect(Array.from(g)).toEqual([255, 200, 255, 200, 255, 200].map((v) => Math.fround(v / 127.5 - 1)));
    // RGBA: (1, 2, 3) transparent -> the background; (4, 5, 6) at alpha 9 over black -> round(4 * 9 / 255) = 0, 0, 0.
    const rgba = { width: 1, height: 2, channels: 4 as const, data: Uint8Array.from([1, 2, 3, 0, 4, 5, 6, 9]) };
    expect(Array.from(imageToCHW(rgba, BLACK).data)).toEqual([0, 0, 0, 0, 0, 0].map((v) => Math.fround(v / 127.5 - 1)));
    // Over white: 4 * 9 + 255 * 246 = 62766 / 255 = 246.14 -> 246; 5 -> 62775 / 255 = 246.18 -> 246; 6 -> 246.2 -> 246.
    expect(Array.from(imageToCHW(rgba).data)).toEqual([255, 246, 255, 246, 255, 246].map((v) => Math.fround(v / 127.5 - 1)));
    expect(Array.from(imageToCHW({ width: 1, height: 1, channels: 1, data: Uint8Array.from([255]) }).data)).toEqual([1, 1, 1]);
  });

  it('refuses inconsistent images', () => {
    expect(() => imageToCHW({ width: 2, height: 2, channels: 3, data: new Uint8Array(5) })).toThrow(ArgumentError);
  });
});

describe('chwToRgb8', () => {
  it('clamps and rounds half up: (x + 1) * 127.5 + 0.5, floored', () => {
    const xs = [-1, 1, 0, -0.5, 0.5, 2, -3, 0.999, -0.999];
    // Hand-computed: 0 -> 127.5 -> 128 (tie up), -0.5 -> 63.75 -> 64, 0.5 -> 191.25 -> 191, 0.999 -> 254.87 -> 255, -0.999 -> 0.1275 -> 0.
    const want = [0, 255, 128, 64, 191, 255, 0, 255, 0];
    const data = new Float32Array(3 * xs.length);
    data.set(xs, 0);
    data.set(xs, xs.length);
    data.set(xs, 2 * xs.length);
    const img = chwToRgb8(data, [1, 3, 1, xs.length]);
    expect([img.width, img.height, img.channels]).toEqual([xs.length, 1, 3]);
    for (let i = 0; i < xs.length; i++) expect([img.data[3 * i], img.data[3 * i + 1], img.data[3 * i + 2]], `x = ${xs[i]}`).toEqual([want[i], want[i], want[i]]);
  });

  it('inverts imageToCHW exactly on every 8-bit level and channel', () => {
    const img = { width: 16, height: 16, channels: 3 as const, data: Uint8Array.from({ length: 768 }, (_, i) => (i * 7 + (i % 3) * 85) % 256) };
    const { data, shape } = imageToCHW(img);
    expect(chwToRgb8(data, shape).data).toEqual(img.data);
    expect(new Set(img.data).size).toBe(256);
  });

  it('takes [3, H, W] and picks an image of a batch', () => {
    const a = imageToCHW(randomImage(5, 3, 3, 1)).data;
    const b = imageToCHW(randomImage(5, 3, 3, 2)).data;
    const both = new Float32Array([...a, ...b]);
    expect(chwToRgb8(both, [2, 3, 3, 5], 1).data).toEqual(randomImage(5, 3, 3, 2).data);
    expect(chwToRgb8(a, [3, 3, 5]).data).toEqual(randomImage(5, 3, 3, 1).data);
  });

  it('refuses NaN / infinity, bad shapes and indices', () => {
    const d = new Float32Array(12);
    d[7] = NaN;
    expect(() => chwToRgb8(d, [1, 3, 2, 2])).toThrow(/non-finite value NaN at \[0, 1, 1, 1\]/);
    d[7] = Infinity;
    expect(() => chwToRgb8(d, [1, 3, 2, 2])).toThrow(ArgumentError);
    expect(() => chwToRgb8(new Float32Array(8), [1, 2, 2, 2])).toThrow(/must be \[N, 3, H, W\]/);
    expect(() => chwToRgb8(new Float32Array(11), [1, 3, 2, 2])).toThrow(/data has 11 values/);
    expect(() => chwToRgb8(new Float32Array(12), [1, 3, 2, 2], 1)).toThrow(/index 1 out of range/);
  });
});

describe('crops', () => {
  it('centerCrop offsets follow torchvision (round half to even)', () => {
    const img = coordImage(11, 9, 3);
    // surplus 1 -> 0, 2 -> 1, 3 -> 2 (round(1.5)), 5 -> 2 (round(2.5)), 7 -> 4 (round(3.5)).
    for (const [w, h, left, top] of [[10, 8, 0, 0], [9, 7, 1, 1], [8, 6, 2, 2], [6, 4, 2, 2], [4, 2, 4, 4], [11, 9, 0, 0]]) {
      const c = centerCrop(img, w!, h!);
      expect([c.width, c.height]).toEqual([w, h]);
      expect(c.data).toEqual(crop(img, left!, top!, w!, h!).data);
      expect(c.data[0]).toBe(top! * 16 + left!);
    }
  });

  it('crop copies the window; 16-bit images crop alike', () => {
    const c = crop(coordImage(7, 6, 2), 2, 3, 3, 2);
    expect(Array.from(c.data)).toEqual([50, 151, 51, 152, 52, 153, 66, 167, 67, 168, 68, 169]);
    const img16 = { width: 3, height: 3, channels: 1 as const, data: Uint16Array.from([1, 2, 3, 4, 5, 6, 7, 8, 60000]) };
    const c16 = centerCrop(img16, 1, 1);
    expect(c16.data).toBeInstanceOf(Uint16Array);
    expect(Array.from(c16.data)).toEqual([5]);
  });

  it('cropToMultiple trims to multiples of 8, centred', () => {
    const c = cropToMultiple(coordImage(21, 17, 1), 8);
    expect([c.width, c.height]).toEqual([16, 16]);
    expect(c.data).toEqual(centerCrop(coordImage(21, 17, 1), 16, 16).data);
    const same = coordImage(16, 8, 3);
    const kept = cropToMultiple(same, 8);
    expect(kept.data).toEqual(same.data);
    expect(kept.data).not.toBe(same.data);
  });

  it('refuses windows outside the image', () => {
    expect(() => centerCrop(coordImage(4, 4, 3), 5, 4)).toThrow(/does not fit in the 4x4 image/);
    expect(() => crop(coordImage(4, 4, 3), 2, 0, 3, 1)).toThrow(/not inside the 4x4 image/);
    expect(() => cropToMultiple(coordImage(7, 9, 3), 8)).toThrow(/smaller than 8/);
  });
});

describe('resizeImage', () => {
  it('same size is an exact copy; a constant image stays constant under every filter', () => {
    const img = randomImage(13, 7, 3, 5);
    for (const f of ['bicubic', 'bilinear', 'box'] as const) {
      const same = resizeImage(img, 13, 7, f);
      expect(same.data).toEqual(img.data);
      expect(same.data).not.toBe(img.data);
      for (const [w, h] of [[1, 1], [5, 3], [40, 19], [13, 30]]) {
        const flat = { width: 13, height: 7, channels: 2 as const, data: new Uint8Array(13 * 7 * 2).fill(0).map((_, i) => (i % 2 ? 255 : 77)) };
        const r = resizeImage(flat, w!, h!, f);
        expect(new Set(r.data.filter((_, i) => i % 2 === 0))).toEqual(new Set([77]));
        expect(new Set(r.data.filter((_, i) => i % 2 === 1))).toEqual(new Set([255]));
      }
    }
  });

  it('box halving is the 2x2 block mean, rounded half up (hand-computed)', () => {
    const img = { width: 4, height: 2, channels: 1 as const, data: Uint8Array.from([0, 1, 10, 20, 2, 0, 30, 40]) };
    // means: (0 + 1 + 2 + 0) / 4 = 0.75 -> 1; (10 + 20 + 30 + 40) / 4 = 25.
    expect(Array.from(resizeImage(img, 2, 1, 'box').data)).toEqual([1, 25]);
    // bilinear halving has a 4-tap triangle: weights 1/8, 3/8, 3/8, 1/8 (the last clipped at the edge and renormalised).
    const row = { width: 4, height: 1, channels: 1 as const, data: Uint8Array.from([0, 80, 160, 240]) };
    // out 0 at centre 1: taps 0..2 with weights 3/8, 3/8, 1/8 -> (0 * 3 + 80 * 3 + 160) / 7 = 57.14 -> 57
    // out 1 at centre 3: taps 1..3 with weights 1/8, 3/8, 3/8 -> (80 + 160 * 3 + 240 * 3) / 7 = 182.86 -> 183
    expect(Array.from(resizeImage(row, 2, 1, 'bilinear').data)).toEqual([57, 183]);
  });

  it('equals the dense-matrix PIL reference on awkward sizes (shrink, enlarge, one axis, to 1)', () => {
    const cases: [number, number, Channels, number, number][] = [
      [17, 11, 3, 8, 5],
      [9, 13, 1, 20, 27],
      [10, 7, 4, 10, 3],
      [31, 5, 2, 7, 5],
      [6, 6, 3, 1, 1],
      [1, 1, 3, 3, 2],
      [25, 19, 3, 11, 40],
    ];
    let seed = 10;
    for (const [w, h, ch, ow, oh] of cases) {
      const img = randomImage(w, h, ch, seed++);
      for (const f of ['bicubic', 'bilinear', 'box'] as ResizeFilter[]) {
        const got = resizeImage(img, ow, oh, f);
        expect([got.width, got.height, got.channels]).toEqual([ow, oh, ch]);
        expect(Array.from(got.data), `${w}x${h}x${ch} -> ${ow}x${oh} ${f}`).toEqual(Array.from(resizeRef(img.data, w, h, ch, ow, oh, f)));
      }
    }
  });

  it('bicubic 512 -> 256 of the astronaut equals PIL (the degradations golden input.image)', async () => {
    // The golden input is skimage's astronaut, PIL BICUBIC to 256x256, stored as u8 / 127.5 - 1.
    const img = await decodePng(readFileSync(join(ASSETS, 'faces/astronaut.png')), 'astronaut.png');
    const golden = (await readSafetensorsFile(`${GOLDEN_ROOT}/degradations/golden.safetensors`)).getRaw('input.image') as Float32Array;
    const ours = imageToCHW(resizeImage(img, 256, 256, 'bicubic')).data;
    expect(ours.length).toBe(golden.length);
    let worst = 0;
    for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - golden[i]!));
    expect(worst).toBeLessThan(1e-6); // equal 8-bit levels (both f32 of u8 / 127.5 - 1)
  });

  it('resizeAndCenterCrop covers the target, keeps the aspect, and crops the middle', () => {
    const img = randomImage(30, 20, 3, 3);
    const r = resizeAndCenterCrop(img, 16, 16);
    expect([r.width, r.height]).toEqual([16, 16]);
    expect(r.data).toEqual(centerCrop(resizeImage(img, 24, 16), 16, 16).data); // 30x20 * 0.8 = 24x16
    expect(resizeAndCenterCrop(img, 30, 20).data).toEqual(img.data);
    expect(resizeAndCenterCrop(img, 10, 40).height).toBe(40);
  });

  it('refuses bad sizes and filters', () => {
    expect(() => resizeImage(randomImage(2, 2, 3, 1), 0, 2)).toThrow(ArgumentError);
    expect(() => resizeImage(randomImage(2, 2, 3, 1), 2, 2, 'lanczos' as ResizeFilter)).toThrow(/unknown filter 'lanczos'/);
  });
});

describe('toRgb8', () => {
  it('replicates gray, copies RGB, composites alpha over the background', () => {
    expect(Array.from(toRgb8({ width: 2, height: 1, channels: 1, data: Uint8Array.from([9, 7]) }).data)).toEqual([9, 9, 9, 7, 7, 7]);
    // gray 9 transparent over white -> 255; gray 7 at alpha 1 over white: (7 + 255 * 254) / 255 = 254.03 -> 254.
    expect(Array.from(toRgb8({ width: 2, height: 1, channels: 2, data: Uint8Array.from([9, 0, 7, 1]) }).data)).toEqual([255, 255, 255, 254, 254, 254]);
    expect(Array.from(toRgb8({ width: 1, height: 1, channels: 4, data: Uint8Array.from([1, 2, 3, 255]) }).data)).toEqual([1, 2, 3]);
    // (200, 100, 0) at alpha 128 over #102030: (200*128 + 16*127) / 255 = 108.4 -> 108; (100*128 + 32*127) / 255 = 66.1 -> 66; (48*127) / 255 = 23.9 -> 24.
    expect(Array.from(toRgb8({ width: 1, height: 1, channels: 4, data: Uint8Array.from([200, 100, 0, 128]) }, [16, 32, 48]).data)).toEqual([108, 66, 24]);
    const rgb = { width: 1, height: 1, channels: 3 as const, data: Uint8Array.from([1, 2, 3]) };
    expect(toRgb8(rgb).data).toEqual(rgb.data);
    expect(toRgb8(rgb).data).not.toBe(rgb.data);
  });

  it('parseBackground takes white, black and #rrggbb only', () => {
    expect(parseBackground('white')).toEqual([255, 255, 255]);
    expect(parseBackground('BLACK')).toEqual([0, 0, 0]);
    expect(parseBackground('#0a10Ff')).toEqual([10, 16, 255]);
    for (const bad of ['', 'grey', '#fff', '#12345g', ' white', '0x000000', '#1234567']) expect(() => parseBackground(bad), bad).toThrow(ArgumentError);
  });

  it('hasTransparency looks at the alpha samples only', () => {
    expect(hasTransparency({ width: 2, height: 1, channels: 4, data: Uint8Array.from([0, 0, 0, 255, 9, 9, 9, 255]) })).toBe(false);
    expect(hasTransparency({ width: 2, height: 1, channels: 4, data: Uint8Array.from([0, 0, 0, 255, 9, 9, 9, 254]) })).toBe(true);
    expect(hasTransparency({ width: 1, height: 1, channels: 2, data: Uint8Array.from([255, 0]) })).toBe(true);
    expect(hasTransparency({ width: 1, height: 1, channels: 3, data: Uint8Array.from([0, 0, 0]) })).toBe(false);
  });
});

describe('file helpers and format dispatch', () => {
  const dir = mkdtempSync(join(tmpdir(), 'silo-io-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writePng -> readImageFile round-trips RGB, gray and an Image16', async () => {
    const img = randomImage(9, 4, 3, 8);
    await writePng(join(dir, 'a.png'), img.data, 9, 4);
    expect(await readImageFile(join(dir, 'a.png'))).toMatchObject({ width: 9, height: 4, channels: 3, data: img.data });
    const gray = randomImage(3, 5, 1, 9);
    await writePng(join(dir, 'g.png'), gray.data, 3, 5, 1);
    expect((await readImageFile(join(dir, 'g.png'))).data).toEqual(gray.data);
    const deep = { width: 2, height: 2, channels: 1 as const, data: Uint16Array.from([0, 1, 65535, 4097]) };
    await writePng(join(dir, 'd.png'), deep);
    expect((await decodePng16(readFileSync(join(dir, 'd.png')), 'd.png')).data).toEqual(deep.data);
    await expect(writePng(join(dir, 'x.png'), new Uint8Array(10), 2, 2)).rejects.toThrow(/data has 10 samples/);
  });

  it('dispatches on magic bytes, not the name; other formats name what was found and what is supported', async () => {
    const png = readFileSync(join(ASSETS, 'sr/img_005_SRF_4_LR.png'));
    writeFileSync(join(dir, 'misnamed.jpg'), png);
    expect((await readImageFile(join(dir, 'misnamed.jpg'))).width).toBe(57);
    const jpeg = Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 0, 16]);
    expect(sniffImageFormat(jpeg)).toBe('jpeg');
    await expect(decodeImage(jpeg, 'cut.jpg')).rejects.toThrow(JpegError); // dispatched to the JPEG decoder
    const photo = randomImage(24, 16, 3, 4);
    writeFileSync(join(dir, 'photo.png'), encodeJpeg(photo.data, 24, 16, 90)); // a JPEG under a .png name
    expect(await readImageFile(join(dir, 'photo.png'))).toMatchObject({ width: 24, height: 16, channels: 3 });
    expect(sniffImageFormat(Uint8Array.from([0x47, 0x49, 0x46, 0x38, 0x39, 0x61]))).toBe('gif');
    expect(sniffImageFormat(new TextEncoder().encode('RIFF\0\0\0\0WEBPVP8 '))).toBe('webp');
    expect(sniffImageFormat(new TextEncoder().encode('hello'))).toBe(null);
    await expect(decodeImage(Uint8Array.from([0x47, 0x49, 0x46, 0x38, 0x39, 0x61]), 'x.gif')).rejects.toThrow(/^image x\.gif: a GIF file; supported formats: PNG, JPEG$/);
    writeFileSync(join(dir, 'notes.txt'), 'hello world');
    await expect(readImageFile(join(dir, 'notes.txt'))).rejects.toThrow(/notes\.txt: not a known image format \(first bytes 68 65 6c 6c 6f 20 77 6f\); supported formats: PNG, JPEG/);
    await expect(readImageFile(join(dir, 'missing.png'))).rejects.toThrow(ImageError);
    await expect(readImageFile(join(dir, 'missing.png'))).rejects.toThrow(/missing\.png: cannot read the file/);
  });
});
