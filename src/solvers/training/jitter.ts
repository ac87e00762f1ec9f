// Seeded colour jitter for training crops: torchvision's ColorJitter (brightness, contrast, saturation,
// hue factors drawn uniformly, applied in a random order) with its tensor formulas on [0, 1] floats:
// blends against black (brightness), the mean grey level (contrast) or the grey image (saturation),
// clamped to [0, 1]; hue shifts H in HSV. The result is rounded to 8 bits once at the end, so the same
// seed gives the same pixels everywhere.

import { assertArg } from '../../engine/errors.js';
import type { Image8 } from '../../io/types.js';
import type { AugmentRng } from './augment.js';

export interface ColorJitterOptions {
  /** Factor drawn from [max(0, 1 - b), 1 + b]; 0 leaves it off. */
  brightness?: number;
  contrast?: number;
  saturation?: number;
  /** Shift drawn from [-h, h] (fractions of the hue circle), h <= 0.5. */
  hue?: number;
}

export interface JitterDraw {
  /** The order the four adjustments ran in (0 brightness, 1 contrast, 2 saturation, 3 hue). */
  order: number[];
  brightness?: number;
  contrast?: number;
  saturation?: number;
  hue?: number;
}

export function checkJitter(o: ColorJitterOptions): void {
  for (const k of ['brightness', 'contrast', 'saturation'] as const) {
    const v = o[k];
    assertArg(v === undefined || (Number.isFinite(v) && v >= 0), `color jitter: ${k} ${v} must be a finite number >= 0`);
  }
  assertArg(o.hue === undefined || (Number.isFinite(o.hue) && o.hue >= 0 && o.hue <= 0.5), `color jitter: hue ${o.hue} must be in [0, 0.5]`);
}

/** torchvision's get_params: a permutation of the four, then each enabled factor in that order. */
export function drawJitter(rng: AugmentRng, o: ColorJitterOptions): JitterDraw {
  checkJitter(o);
  const order = [0, 1, 2, 3];
  for (let i = 3; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const draw: JitterDraw = { order };
  const keys = ['brightness', 'contrast', 'saturation'] as const;
  for (const k of order) {
    if (k < 3) {
      const v = o[keys[k]!];
      if (v) draw[keys[k]!] = rng.uniform(Math.max(0, 1 - v), 1 + v);
    } else if (o.hue) draw.hue = rng.uniform(-o.hue, o.hue);
  }
  return draw;
}

const grey = (r: number, g: number, b: number) => 0.2989 * r + 0.587 * g + 0.114 * b;
const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

/** torchvision's _rgb2hsv / hue shift / _hsv2rgb for one pixel (values in [0, 1]). */
export function shiftHue(r: number, g: number, b: number, shift: number): [number, number, number] {
  const maxc = Math.max(r, g, b);
  const minc = Math.min(r, g, b);
  const eq = maxc === minc;
  const cr = maxc - minc;
  const s = cr / (eq ? 1 : maxc);
  const d = eq ? 1 : cr;
  const [rc, gc, bc] = [(maxc - r) / d, (maxc - g) / d, (maxc - b) / d];
  let h = maxc === r ? bc - gc : maxc === g ? 2 + rc - bc : 4 + gc - rc;
  h = (h / 6 + 1) % 1;
  h = (((h + shift) % 1) + 1) % 1;
  const v = maxc;
  const i6 = Math.floor(h * 6);
  const f = h * 6 - i6;
  const p = clamp01(v * (1 - s));
  const q = clamp01(v * (1 - s * f));
  const t = clamp01(v * (1 - s * (1 - f)));
  switch (i6 % 6) {
    case 0:
      return [v, t, p];
    case 1:
      return [q, v, p];
    case 2:
      return [p, v, t];
    case 3:
      return [p, q, v];
    case 4:
      return [t, p, v];
    default:
      return [v, p, q];
  }
}

/** The draw applied to an RGB image (alpha, if any, passes through). */
export function applyJitter(img: Image8, draw: JitterDraw): Image8 {
  const { width, height, channels: c } = img;
  assertArg(c === 3 || c === 4, `color jitter: needs an RGB(A) image, got ${c} channel(s)`);
  const n = width * height;
  const px = new Float64Array(3 * n);
  for (let i = 0; i < n; i++) for (let k = 0; k < 3; k++) px[3 * i + k] = img.data[i * c + k]! / 255;
  const blend = (f: number, other: (i: number) => number) => {
    for (let i = 0; i < n; i++) {
      const o = other(i);
      for (let k = 0; k < 3; k++) px[3 * i + k] = clamp01(f * px[3 * i + k]! + (1 - f) * o);
    }
  };
  for (const k of draw.order) {
    if (k === 0 && draw.brightness !== undefined) blend(draw.brightness, () => 0);
    else if (k === 1 && draw.contrast !== undefined) {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += grey(px[3 * i]!, px[3 * i + 1]!, px[3 * i + 2]!);
      const mean = sum / n;
      blend(draw.contrast, () => mean);
    } else if (k === 2 && draw.saturation !== undefined) blend(draw.saturation, (i) => grey(px[3 * i]!, px[3 * i + 1]!, px[3 * i + 2]!));
    else if (k === 3 && draw.hue !== undefined) {
      for (let i = 0; i < n; i++) {
        const [r, g, b] = shiftHue(px[3 * i]!, px[3 * i + 1]!, px[3 * i + 2]!, draw.hue);
        px[3 * i] = r;
        px[3 * i + 1] = g;
        px[3 * i + 2] = b;
      }
    }
  }
  const out = new Uint8Array(img.data);
  for (let i = 0; i < n; i++) for (let k = 0; k < 3; k++) out[i * c + k] = Math.round(px[3 * i + k]! * 255);
  return { ...img, data: out };
}

/** drawJitter then applyJitter; the image unchanged (and nothing drawn) when every factor is off. */
export function colorJitter(img: Image8, rng: AugmentRng, o: ColorJitterOptions): { image: Image8; draw?: JitterDraw } {
  if (!o.brightness && !o.contrast && !o.saturation && !o.hue) return { image: img };
  const draw = drawJitter(rng, o);
  return { image: applyJitter(img, draw), draw };
}
