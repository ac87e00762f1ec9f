// Seeded data augmentation for training crops (issue #13 item 3, first part), on the CPU where the photos
// are decoded: torchvision's RandomResizedCrop (its get_params, drawn from our own generator), the crop
// resized to the training size, and random horizontal and vertical flips. The same seed gives the same
// crops on every platform; colour jitter is not built yet.

import { assertArg } from '../../engine/errors.js';
import type { Image8 } from '../../io/types.js';
import { crop } from '../../io/image.js';
import { resizeImage, type ResizeFilter } from '../../io/resize.js';
import { roundHalfEven } from '../schedulers/schedule.js';

/** Uniform numbers from a 32-bit seed (mulberry32): reproducible everywhere, not cryptographic. */
export class AugmentRng {
  private s: number;
  constructor(seed: number) {
    assertArg(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff, `augment: seed ${seed} must be an integer in [0, 2^32)`);
    this.s = seed >>> 0;
  }
  /** The generator's whole state (a checkpoint saves it; assigning it continues the same stream). */
  get state(): number {
    return this.s;
  }
  set state(v: number) {
    assertArg(Number.isInteger(v) && v >= 0 && v <= 0xffffffff, `augment: state ${v} must be an integer in [0, 2^32)`);
    this.s = v >>> 0;
  }
  /** [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.min(n - 1, Math.floor(this.next() * n));
  }
}

export interface CropBox {
  left: number;
  top: number;
  width: number;
  height: number;
}

/**
 * torchvision's RandomResizedCrop.get_params: up to 10 draws of an area fraction in `scale` and a
 * log-uniform aspect ratio (width / height) in `ratio`; the first box that fits is placed uniformly.
 * Otherwise the whole image, cut to the nearest ratio in range, centred.
 */
export function randomResizedCropBox(rng: AugmentRng, width: number, height: number, scale: [number, number] = [0.75, 1], ratio: [number, number] = [3 / 4, 4 / 3]): CropBox {
  assertArg(Number.isInteger(width) && Number.isInteger(height) && width >= 1 && height >= 1, `randomResizedCrop: image ${width}x${height} must be at least 1x1`);
  assertArg(scale[0] > 0 && scale[0] <= scale[1] && scale[1] <= 1, `randomResizedCrop: scale [${scale.join(', ')}] must satisfy 0 < lo <= hi <= 1`);
  assertArg(ratio[0] > 0 && ratio[0] <= ratio[1], `randomResizedCrop: ratio [${ratio.join(', ')}] must satisfy 0 < lo <= hi`);
  const area = width * height;
  const [lr0, lr1] = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(lr0, lr1));
    const w = roundHalfEven(Math.sqrt(target * aspect));
    const h = roundHalfEven(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) return { top: rng.int(height - h + 1), left: rng.int(width - w + 1), width: w, height: h };
  }
  const inRatio = width / height;
  let [w, h] = [width, height];
  if (inRatio < ratio[0]) h = roundHalfEven(w / ratio[0]);
  else if (inRatio > ratio[1]) w = roundHalfEven(h * ratio[1]);
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), width: w, height: h };
}

export interface AugmentOptions {
  /** Output side (square crops, as SILO trains). */
  size: number;
  scale?: [number, number];
  ratio?: [number, number];
  /** Flip probabilities (0.5 each by default; 0 turns a flip off). */
  hflip?: number;
  vflip?: number;
  filter?: ResizeFilter;
}

/** The image mirrored left-right and / or top-bottom. */
export function flipImage(img: Image8, horizontal: boolean, vertical: boolean): Image8 {
  const { width: w, height: h, channels: c } = img;
  const out = new Uint8Array(img.data.length);
  for (let y = 0; y < h; y++) {
    const sy = vertical ? h - 1 - y : y;
    for (let x = 0; x < w; x++) {
      const sx = horizontal ? w - 1 - x : x;
      out.set(img.data.subarray((sy * w + sx) * c, (sy * w + sx + 1) * c), (y * w + x) * c);
    }
  }
  return { ...img, data: out };
}

/** One training crop: a random resized crop to size x size, then the flips; with what was drawn. */
export function augmentImage(img: Image8, rng: AugmentRng, o: AugmentOptions): { image: Image8; box: CropBox; hflip: boolean; vflip: boolean } {
  assertArg(Number.isInteger(o.size) && o.size >= 1, `augment: size ${o.size} must be an integer >= 1`);
  for (const [k, p] of [['hflip', o.hflip], ['vflip', o.vflip]] as const) {
    assertArg(p === undefined || (p >= 0 && p <= 1), `augment: ${k} probability ${p} must be in [0, 1]`);
  }
  const box = randomResizedCropBox(rng, img.width, img.height, o.scale, o.ratio);
  const hflip = rng.next() < (o.hflip ?? 0.5);
  const vflip = rng.next() < (o.vflip ?? 0.5);
  const resized = resizeImage(crop(img, box.left, box.top, box.width, box.height), o.size, o.size, o.filter ?? 'bilinear');
  return { image: hflip || vflip ? flipImage(resized, hflip, vflip) : resized, box, hflip, vflip };
}
