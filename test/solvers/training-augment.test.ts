// Seeded training augmentation (src/solvers/training/augment.ts): torchvision's RandomResizedCrop box
// rules (scale, aspect ratio, placement, the centred fallback), reproducibility from the seed, the draw
// statistics, flips pixel by pixel, and the resized crop against crop + resize done by hand.
import { describe, it, expect } from 'vitest';
import type { Image8 } from '../../src/io/types.js';
import { crop } from '../../src/io/image.js';
import { resizeImage } from '../../src/io/resize.js';
import { AugmentRng, augmentImage, flipImage, randomResizedCropBox } from '../../src/solvers/training/augment.js';

function image(w: number, h: number, c: 3 | 1 = 3): Image8 {
  const data = new Uint8Array(w * h * c);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + (i >> 5)) & 255;
  return { width: w, height: h, channels: c, data };
}

describe('randomResizedCropBox', () => {
  it('boxes stay inside, cover 75-100 % of the area and keep the aspect ratio within [3/4, 4/3] (up to rounding)', () => {
    const rng = new AugmentRng(7);
    let sum = 0;
    const n = 2000;
    for (let i = 0; i < n; i++) {
      const b = randomResizedCropBox(rng, 640, 480);
      expect(b.left >= 0 && b.top >= 0 && b.left + b.width <= 640 && b.top + b.height <= 480).toBe(true);
      const frac = (b.width * b.height) / (640 * 480);
      expect(frac).toBeGreaterThan(0.74);
      expect(frac).toBeLessThanOrEqual(1);
      const r = b.width / b.height;
      expect(r).toBeGreaterThan(0.74);
      expect(r).toBeLessThan(1.34);
      sum += frac;
    }
    // Uniform area fraction in [0.75, 1], less the boxes that did not fit (wide crops of a 4:3 image).
    expect(sum / n).toBeGreaterThan(0.8);
    expect(sum / n).toBeLessThan(0.9);
  });

  it('the same seed gives the same boxes, another seed other boxes', () => {
    const draw = (seed: number) => {
      const rng = new AugmentRng(seed);
      return Array.from({ length: 20 }, () => randomResizedCropBox(rng, 512, 384));
    };
    expect(draw(11)).toEqual(draw(11));
    expect(draw(11)).not.toEqual(draw(12));
  });

  it('falls back to the centred crop at the nearest allowed ratio when no draw fits', () => {
    const rng = new AugmentRng(1);
    // 1000x10 is 100:1: no box of >= 75 % of its area has a ratio in [3/4, 4/3].
    expect(randomResizedCropBox(rng, 1000, 10)).toEqual({ left: 493, top: 0, width: 13, height: 10 });
    expect(randomResizedCropBox(rng, 10, 1000)).toEqual({ left: 0, top: 493, width: 10, height: 13 });
  });

  it('refuses impossible settings', () => {
    const rng = new AugmentRng(1);
    expect(() => randomResizedCropBox(rng, 0, 5)).toThrow(/image 0x5/);
    expect(() => randomResizedCropBox(rng, 5, 5, [0.9, 0.5])).toThrow(/scale \[0.9, 0.5\]/);
    expect(() => randomResizedCropBox(rng, 5, 5, [0.5, 1], [2, 1])).toThrow(/ratio \[2, 1\]/);
    expect(() => new AugmentRng(-1)).toThrow(/seed -1/);
  });
});

describe('augmentImage', () => {
  it('flips mirror pixel by pixel', () => {
    const img = image(5, 3);
    const px = (im: Image8, x: number, y: number) => Array.from(im.data.subarray((y * im.width + x) * 3, (y * im.width + x + 1) * 3));
    const h = flipImage(img, true, false);
    const v = flipImage(img, false, true);
    const hv = flipImage(img, true, true);
    for (let y = 0; y < 3; y++) {
      for (let x = 0; x < 5; x++) {
        expect(px(h, x, y)).toEqual(px(img, 4 - x, y));
        expect(px(v, x, y)).toEqual(px(img, x, 2 - y));
        expect(px(hv, x, y)).toEqual(px(img, 4 - x, 2 - y));
      }
    }
  });

  it('is the crop resized to size x size, then flipped as drawn; flips happen about half the time', () => {
    const img = image(97, 61);
    const rng = new AugmentRng(3);
    let h = 0;
    let v = 0;
    for (let i = 0; i < 200; i++) {
      const r = augmentImage(img, rng, { size: 32 });
      expect([r.image.width, r.image.height, r.image.channels]).toEqual([32, 32, 3]);
      if (i < 5) {
        const b = r.box;
        const want = flipImage(resizeImage(crop(img, b.left, b.top, b.width, b.height), 32, 32, 'bilinear'), r.hflip, r.vflip);
        expect(Array.from(r.image.data)).toEqual(Array.from(want.data));
      }
      h += r.hflip ? 1 : 0;
      v += r.vflip ? 1 : 0;
    }
    expect(h).toBeGreaterThan(70);
    expect(h).toBeLessThan(130);
    expect(v).toBeGreaterThan(70);
    expect(v).toBeLessThan(130);
    const never = augmentImage(img, new AugmentRng(3), { size: 8, hflip: 0, vflip: 0 });
    expect([never.hflip, never.vflip]).toEqual([false, false]);
    expect(() => augmentImage(img, rng, { size: 8, hflip: 2 })).toThrow(/hflip probability 2/);
  });
});
