// Training images to batches (issue #13 item 3), on the CPU where the photos are decoded: an epoch-
// shuffled order (every image once per epoch, like a shuffling DataLoader), each pick a seeded random
// resized crop with flips and colour jitter, packed as [N, 3, S, S] in [-1, 1]. Validation images are
// centre-cropped to a square and resized, with no randomness. Reading folders and list files is the
// platform's job (data-node.ts in Node, the page's file picker in a browser).

import { assertArg } from '../../engine/errors.js';
import type { Image8 } from '../../io/types.js';
import { imageToCHW, resizeAndCenterCrop, toRgb8 } from '../../io/image.js';
import { augmentImage, AugmentRng, type AugmentOptions, type CropBox } from './augment.js';
import { colorJitter, type ColorJitterOptions, type JitterDraw } from './jitter.js';

export interface NamedImage {
  name: string;
  image: Image8;
}

export interface CropSettings extends AugmentOptions {
  jitter?: ColorJitterOptions;
}

export interface BatchPick {
  name: string;
  box: CropBox;
  hflip: boolean;
  vflip: boolean;
  jitter?: JitterDraw;
}

export interface ImageBatch {
  /** [N, 3, S, S] in [-1, 1] (x / 127.5 - 1). */
  data: Float32Array;
  shape: [number, 3, number, number];
  picks: BatchPick[];
}

/** Packs same-size images as [N, 3, H, W] in [-1, 1] (imageToCHW's conversion, one image after another). */
export function packImages(images: readonly Image8[]): { data: Float32Array; shape: [number, 3, number, number] } {
  assertArg(images.length > 0, 'packImages: no images');
  const { width: w, height: h } = images[0]!;
  const data = new Float32Array(images.length * 3 * w * h);
  images.forEach((img, n) => {
    assertArg(img.width === w && img.height === h, `packImages: image ${n} is ${img.width}x${img.height}, the first ${w}x${h}`);
    data.set(imageToCHW(img).data, n * 3 * w * h);
  });
  return { data, shape: [images.length, 3, h, w] };
}

/** Where a CropSampler is in its stream (saved in checkpoints so a resumed run draws the same crops). */
export interface SamplerState {
  rng: number;
  order: number[];
  pos: number;
  epoch: number;
  drawn: number;
}

/** Indices 0..size-1, each once per epoch in a new shuffled order (Fisher-Yates from `rng`). */
export class EpochOrder {
  private order: number[] = [];
  private pos = 0;
  /** Epochs started so far. */
  epoch = 0;

  constructor(
    readonly size: number,
    private readonly rng: AugmentRng,
  ) {}

  next(): number {
    if (this.pos >= this.order.length) {
      this.order = Array.from({ length: this.size }, (_, i) => i);
      for (let i = this.order.length - 1; i > 0; i--) {
        const j = this.rng.int(i + 1);
        [this.order[i], this.order[j]] = [this.order[j]!, this.order[i]!];
      }
      this.pos = 0;
      this.epoch++;
    }
    return this.order[this.pos++]!;
  }

  get state(): { order: number[]; pos: number; epoch: number } {
    return { order: this.order.slice(), pos: this.pos, epoch: this.epoch };
  }

  /** A saved state, refused (naming `what`) when it cannot belong to `size` items. */
  restore(s: { order: number[]; pos: number; epoch?: number }, what: string): void {
    const n = this.size;
    const ok =
      !!s && Array.isArray(s.order) &&
      (s.order.length === 0 || s.order.length === n) &&
      s.order.every((i) => Number.isInteger(i) && i >= 0 && i < n) &&
      new Set(s.order).size === s.order.length &&
      Number.isInteger(s.pos) && s.pos >= 0 && s.pos <= s.order.length &&
      (s.epoch === undefined || (Number.isInteger(s.epoch) && s.epoch >= 0));
    assertArg(ok, `${what}: the saved position does not fit ${n} items (was the data changed since the checkpoint?)`);
    this.order = s.order.slice();
    this.pos = s.pos;
    this.epoch = s.epoch ?? 0;
  }
}

/** Seeded batches of augmented crops; `state` / `restore` continue a stream exactly. */
export class CropSampler {
  private readonly rng: AugmentRng;
  private readonly order: EpochOrder;
  /** Batches drawn so far. */
  drawn = 0;

  /** The images as RGB (converted once; gray and alpha as toRgb8). */
  private readonly rgb: readonly NamedImage[];

  constructor(
    images: readonly NamedImage[],
    readonly settings: CropSettings,
    readonly seed: number,
  ) {
    assertArg(images.length > 0, 'training data: no images');
    const names = new Set<string>();
    for (const { name, image } of images) {
      assertArg(!names.has(name), `training data: image "${name}" is listed twice`);
      names.add(name);
      assertArg(image.width >= 1 && image.height >= 1, `training data: image "${name}" is empty`);
    }
    this.rgb = images.map(({ name, image }) => ({ name, image: image.channels === 3 ? image : toRgb8(image) }));
    this.rng = new AugmentRng(seed);
    this.order = new EpochOrder(images.length, this.rng);
  }

  /** Epochs started so far. */
  get epoch(): number {
    return this.order.epoch;
  }

  /** The next `n` crops. */
  next(n: number): ImageBatch {
    assertArg(Number.isInteger(n) && n >= 1, `training data: batch size ${n} must be an integer >= 1`);
    const crops: Image8[] = [];
    const picks: BatchPick[] = [];
    for (let k = 0; k < n; k++) {
      const { name, image } = this.rgb[this.order.next()]!;
      const a = augmentImage(image, this.rng, this.settings);
      const j = colorJitter(a.image, this.rng, this.settings.jitter ?? {});
      crops.push(j.image);
      picks.push({ name, box: a.box, hflip: a.hflip, vflip: a.vflip, ...(j.draw ? { jitter: j.draw } : {}) });
    }
    this.drawn++;
    return { ...packImages(crops), picks };
  }

  get state(): SamplerState {
    return { rng: this.rng.state, ...this.order.state, drawn: this.drawn };
  }

  restore(s: SamplerState): void {
    assertArg(!!s && Number.isInteger(s.drawn) && s.drawn >= 0, 'training data: the saved sampler state has no batch count');
    this.order.restore(s, 'training data');
    this.rng.state = s.rng;
    this.drawn = s.drawn;
  }
}

/** A validation image: resized so the short side is `size` (bicubic), then the centred square; no randomness. */
export function validationCrop(img: Image8, size: number): Image8 {
  assertArg(Number.isInteger(size) && size >= 1, `validation: size ${size} must be an integer >= 1`);
  return resizeAndCenterCrop(img.channels === 3 ? img : toRgb8(img), size, size, 'bicubic');
}
