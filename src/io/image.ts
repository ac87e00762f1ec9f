// Between 8-bit images and the [-1, 1] NCHW data the models take, and the crops / resizes that bring
// an arbitrary photo to a model's size. Browser-safe (no node: imports).

import { ArgumentError, assertArg } from '../engine/errors.js';
import { resizeImage, type ResizeFilter } from './resize.js';
import { checkImage, type Image8, type PixelImage } from './types.js';

export interface ChwData {
  data: Float32Array;
  shape: [1, 3, number, number];
}

/**
 * [1, 3, H, W] in [-1, 1], x / 127.5 - 1 (the diffusers / SILO convention). Gray (1 or 2 channels) is
 * replicated to R, G and B; an alpha channel is composited over `background` (default white), as toRgb8.
 */
export function imageToCHW(img: Image8, background: Rgb = WHITE): ChwData {
  checkImage(img, 'imageToCHW image');
  const rgb = img.channels === 3 ? img : toRgb8(img, background);
  const { width: w, height: h, data } = rgb;
  const plane = w * h;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) out[c * plane + i] = data[i * 3 + c]! / 127.5 - 1;
  }
  return { data: out, shape: [1, 3, h, w] };
}

/**
 * Image `index` of a [N, 3, H, W] (or [3, H, W]) array in [-1, 1] as 8-bit RGB: clamp to [-1, 1], then
 * floor((x + 1) * 127.5 + 0.5), i.e. round half up, as torchvision's save_image does
 * (mul(255).add_(0.5).clamp_(0, 255)); we compute in f64, torchvision in f32, so values within ~1e-5
 * of a .5 tie may round the other way. (diffusers' numpy_to_pil rounds ties to even instead.)
 * NaN or infinite values are an ArgumentError: they would otherwise save as silent garbage.
 */
export function chwToRgb8(data: Float32Array, shape: readonly number[], index = 0): Image8 {
  const dims = shape.length === 3 ? [1, ...shape] : [...shape];
  assertArg(dims.length === 4 && dims[1] === 3, `chwToRgb8: shape [${shape.join(', ')}] must be [N, 3, H, W] or [3, H, W]`);
  const [n, , h, w] = dims as [number, number, number, number];
  assertArg(data.length === n * 3 * h * w, `chwToRgb8: data has ${data.length} values, shape [${shape.join(', ')}] needs ${n * 3 * h * w}`);
  assertArg(Number.isInteger(index) && index >= 0 && index < n, `chwToRgb8: index ${index} out of range for batch ${n}`);
  const plane = h * w;
  const base = index * 3 * plane;
  const out = new Uint8Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) {
      const x = data[base + c * plane + i]!;
      if (!Number.isFinite(x)) throw new ArgumentError(`chwToRgb8: non-finite value ${x} at [${index}, ${c}, ${Math.floor(i / w)}, ${i % w}] of shape [${shape.join(', ')}]`);
      out[i * 3 + c] = Math.floor((Math.min(1, Math.max(-1, x)) + 1) * 127.5 + 0.5);
    }
  }
  return { width: w, height: h, channels: 3, data: out };
}

/** An opaque colour, 8 bits a channel. */
export type Rgb = readonly [number, number, number];
export const WHITE: Rgb = [255, 255, 255];
export const BLACK: Rgb = [0, 0, 0];

/** 'white', 'black' or '#rrggbb' (case-insensitive) as an Rgb; an ArgumentError names anything else. */
export function parseBackground(text: string): Rgb {
  const t = text.toLowerCase();
  if (t === 'white') return WHITE;
  if (t === 'black') return BLACK;
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/.exec(t);
  if (!m) throw new ArgumentError(`background "${text}": expected white, black or #rrggbb`);
  return [parseInt(m[1]!, 16), parseInt(m[2]!, 16), parseInt(m[3]!, 16)];
}

/**
 * 3-channel RGB (a copy even when `img` already is RGB): gray is replicated; an alpha channel is
 * composited over `background` (default white), round((c * a + bg * (255 - a)) / 255), so what a
 * viewer shows is what the model sees. Dropping alpha instead would expose whatever colour the file
 * stores under transparent pixels (often black, or garbage).
 */
export function toRgb8(img: Image8, background: Rgb = WHITE): Image8 {
  checkImage(img, 'toRgb8 image');
  const { width, height, channels: ch, data } = img;
  const out = new Uint8Array(width * height * 3);
  const hasAlpha = ch === 2 || ch === 4;
  for (let i = 0; i < width * height; i++) {
    const a = hasAlpha ? data[i * ch + ch - 1]! : 255;
    for (let c = 0; c < 3; c++) {
      const v = data[i * ch + (ch <= 2 ? 0 : c)]!;
      // Integer arithmetic: a = 255 keeps v exactly, a = 0 gives the background exactly.
      out[i * 3 + c] = a === 255 ? v : Math.floor((v * a + background[c]! * (255 - a) + 127) / 255);
    }
  }
  return { width, height, channels: 3, data: out };
}

/** Whether any pixel is not fully opaque (false for images without an alpha channel). */
export function hasTransparency(img: Image8): boolean {
  if (img.channels !== 2 && img.channels !== 4) return false;
  for (let i = img.channels - 1; i < img.data.length; i += img.channels) if (img.data[i] !== 255) return true;
  return false;
}

/** Python's round(): half to even (x.5 only arises here). */
const roundHalfEven = (v: number) => (v - Math.floor(v) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v));

/**
 * The central width x height window, offsets as torchvision's CenterCrop: round((W - width) / 2) with
 * Python's round (half to even), so an odd surplus of 1 crops 0 px on the left, of 3 crops 2. A window
 * larger than the image is an ArgumentError (torchvision would pad).
 */
export function centerCrop<T extends Uint8Array | Uint16Array>(img: PixelImage<T>, width: number, height: number): PixelImage<T> {
  checkImage(img, 'centerCrop image');
  assertArg(Number.isInteger(width) && Number.isInteger(height) && width >= 1 && height >= 1, `centerCrop: size ${width}x${height} must be integers >= 1`);
  assertArg(width <= img.width && height <= img.height, `centerCrop: ${width}x${height} does not fit in the ${img.width}x${img.height} image`);
  const left = roundHalfEven((img.width - width) / 2);
  const top = roundHalfEven((img.height - height) / 2);
  return crop(img, left, top, width, height);
}

/** The window at (left, top) of width x height. */
export function crop<T extends Uint8Array | Uint16Array>(img: PixelImage<T>, left: number, top: number, width: number, height: number): PixelImage<T> {
  checkImage(img, 'crop image');
  assertArg(
    [left, top, width, height].every(Number.isInteger) && left >= 0 && top >= 0 && width >= 1 && height >= 1 && left + width <= img.width && top + height <= img.height,
    `crop: window ${width}x${height} at (${left}, ${top}) is not inside the ${img.width}x${img.height} image`,
  );
  const ch = img.channels;
  const out = new (img.data.constructor as new (n: number) => T)(width * height * ch);
  for (let y = 0; y < height; y++) {
    const src = ((top + y) * img.width + left) * ch;
    out.set(img.data.subarray(src, src + width * ch), y * width * ch);
  }
  return { width, height, channels: img.channels, data: out };
}

/** Center-crops each side down to a multiple of `multiple` (e.g. 8 for SD's VAE): at most multiple - 1 px lost a side. */
export function cropToMultiple<T extends Uint8Array | Uint16Array>(img: PixelImage<T>, multiple: number): PixelImage<T> {
  assertArg(Number.isInteger(multiple) && multiple >= 1, `cropToMultiple: multiple ${multiple} must be an integer >= 1`);
  const w = img.width - (img.width % multiple);
  const h = img.height - (img.height % multiple);
  assertArg(w >= 1 && h >= 1, `cropToMultiple: the ${img.width}x${img.height} image is smaller than ${multiple} on a side`);
  return w === img.width && h === img.height ? { ...img, data: img.data.slice() as T } : centerCrop(img, w, h);
}

/**
 * Scales `img` (aspect kept) just enough to cover width x height, then center-crops to exactly that:
 * the usual way to bring a photo to a model's size, e.g. 512 x 512. The scaled size is
 * max(target, round(side * s)) with s = max(width / W, height / H); resampling is resizeImage's
 * (PIL-style antialiased bicubic by default).
 */
export function resizeAndCenterCrop(img: Image8, width: number, height: number, filter: ResizeFilter = 'bicubic'): Image8 {
  checkImage(img, 'resizeAndCenterCrop image');
  assertArg(Number.isInteger(width) && Number.isInteger(height) && width >= 1 && height >= 1, `resizeAndCenterCrop: size ${width}x${height} must be integers >= 1`);
  const s = Math.max(width / img.width, height / img.height);
  const rw = Math.max(width, Math.round(img.width * s));
  const rh = Math.max(height, Math.round(img.height * s));
  return centerCrop(resizeImage(img, rw, rh, filter), width, height);
}
