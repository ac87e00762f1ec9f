// Training data on the CPU: colour jitter (torchvision's formulas, against an independent HSV reference
// and closed forms), PyTorch's default initialisation of a new operator (bounds and fan-in per layer kind),
// the epoch-shuffled crop sampler (coverage, reproducibility, exact resume), packing, the loss curve and
// reading image folders and list files.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import type { Image8 } from '../../src/io/types.js';
import { encodePng } from '../../src/io/png-encode.js';
import { AugmentRng } from '../../src/solvers/training/augment.js';
import { applyJitter, colorJitter, drawJitter, shiftHue } from '../../src/solvers/training/jitter.js';
import { torchDefaultInit } from '../../src/solvers/training/init.js';
import { CropSampler, packImages, validationCrop } from '../../src/solvers/training/data.js';
import { curveSvg, lossCsv } from '../../src/solvers/training/curve.js';
import { listImagePaths, readTrainingImages } from '../../src/solvers/training/data-node.js';
import type { NamedParameter } from '../../src/solvers/training/adam.js';
import type { Tensor } from '../../src/engine/tensor.js';

function image(w: number, h: number, seed = 1): Image8 {
  const data = new Uint8Array(w * h * 3);
  const rng = new AugmentRng(seed);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(rng.next() * 256);
  return { width: w, height: h, channels: 3, data };
}

/** Python's colorsys, written out independently: the reference for the hue shift. */
function colorsysShift(r: number, g: number, b: number, shift: number): [number, number, number] {
  const maxc = Math.max(r, g, b);
  const minc = Math.min(r, g, b);
  const v = maxc;
  let h = 0;
  let s = 0;
  if (maxc !== minc) {
    s = (maxc - minc) / maxc;
    const rc = (maxc - r) / (maxc - minc);
    const gc = (maxc - g) / (maxc - minc);
    const bc = (maxc - b) / (maxc - minc);
    h = r === maxc ? bc - gc : g === maxc ? 2.0 + rc - bc : 4.0 + gc - rc;
    h = (((h / 6.0) % 1) + 1) % 1;
  }
  h = (((h + shift) % 1) + 1) % 1;
  if (s === 0) return [v, v, v];
  const i = Math.floor(h * 6.0);
  const f = h * 6.0 - i;
  const p = v * (1.0 - s);
  const q = v * (1.0 - s * f);
  const t = v * (1.0 - s * (1.0 - f));
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6] as [number, number, number];
}

describe('colour jitter', () => {
  it('hue shifts match an independent HSV round trip, and the primaries land where they should', () => {
    const rng = new AugmentRng(3);
    for (let k = 0; k < 2000; k++) {
      const [r, g, b] = [rng.next(), rng.next(), rng.next()];
      const shift = rng.uniform(-0.5, 0.5);
      const got = shiftHue(r, g, b, shift);
      const want = colorsysShift(r, g, b, shift);
      for (let c = 0; c < 3; c++) expect(Math.abs(got[c]! - want[c]!)).toBeLessThan(1e-12);
    }
    const near = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]!) < 1e-12);
    expect(near(shiftHue(1, 0, 0, 1 / 3), [0, 1, 0])).toBe(true);
    expect(near(shiftHue(1, 0, 0, -1 / 3), [0, 0, 1])).toBe(true);
    expect(near(shiftHue(1, 0, 0, 1 / 6), [1, 1, 0])).toBe(true);
    expect(near(shiftHue(0.4, 0.4, 0.4, 0.3), [0.4, 0.4, 0.4])).toBe(true);
  });

  it('brightness, contrast and saturation are torchvision\'s blends, clamped and rounded once', () => {
    const img = image(7, 5);
    const px = (im: Image8, i: number, c: number) => im.data[i * 3 + c]!;
    const bright = applyJitter(img, { order: [0, 1, 2, 3], brightness: 1.3 });
    for (let i = 0; i < 35; i++) for (let c = 0; c < 3; c++) expect(px(bright, i, c)).toBe(Math.round(Math.min(1, (1.3 * px(img, i, c)) / 255) * 255));
    // Contrast 0: every pixel becomes the mean grey level (0.2989 R + 0.587 G + 0.114 B).
    let mean = 0;
    for (let i = 0; i < 35; i++) mean += (0.2989 * px(img, i, 0) + 0.587 * px(img, i, 1) + 0.114 * px(img, i, 2)) / 255;
    mean /= 35;
    const flat = applyJitter(img, { order: [1, 0, 2, 3], contrast: 0 });
    for (let i = 0; i < 35 * 3; i++) expect(flat.data[i]).toBe(Math.round(mean * 255));
    // Saturation 0: each pixel its own grey.
    const grey = applyJitter(img, { order: [2, 0, 1, 3], saturation: 0 });
    for (let i = 0; i < 35; i++) {
      const g = Math.round(((0.2989 * px(img, i, 0) + 0.587 * px(img, i, 1) + 0.114 * px(img, i, 2)) / 255) * 255);
      for (let c = 0; c < 3; c++) expect(px(grey, i, c)).toBe(g);
    }
    // Factor 1 everywhere and no hue: the image back exactly.
    expect(applyJitter(img, { order: [3, 2, 1, 0], brightness: 1, contrast: 1, saturation: 1, hue: 0 }).data).toEqual(img.data);
  });

  it('the order matters (brightness then contrast differs from contrast then brightness once clamping bites)', () => {
    const img = image(9, 9, 5);
    const a = applyJitter(img, { order: [0, 1, 2, 3], brightness: 1.8, contrast: 0.3 });
    const b = applyJitter(img, { order: [1, 0, 2, 3], brightness: 1.8, contrast: 0.3 });
    expect(a.data).not.toEqual(b.data);
  });

  it('draws: every permutation occurs, factors stay in range, the same seed gives the same draws', () => {
    const rng = new AugmentRng(11);
    const perms = new Set<string>();
    for (let i = 0; i < 3000; i++) {
      const d = drawJitter(rng, { brightness: 0.2, contrast: 0.5, saturation: 1.5, hue: 0.1 });
      perms.add(d.order.join());
      expect(d.brightness!).toBeGreaterThanOrEqual(0.8);
      expect(d.brightness!).toBeLessThanOrEqual(1.2);
      expect(d.contrast!).toBeGreaterThanOrEqual(0.5);
      expect(d.saturation!).toBeGreaterThanOrEqual(0); // max(0, 1 - 1.5)
      expect(d.saturation!).toBeLessThanOrEqual(2.5);
      expect(Math.abs(d.hue!)).toBeLessThanOrEqual(0.1);
    }
    expect(perms.size).toBe(24);
    const img = image(8, 6);
    const once = (seed: number) => colorJitter(img, new AugmentRng(seed), { brightness: 0.3, hue: 0.1 }).image.data;
    expect(once(4)).toEqual(once(4));
    expect(once(4)).not.toEqual(once(5));
    // All off: nothing drawn, the image itself.
    const off = colorJitter(img, new AugmentRng(1), {});
    expect(off.image).toBe(img);
    expect(off.draw).toBeUndefined();
  });

  it('refuses factors it cannot use, by name', () => {
    expect(() => drawJitter(new AugmentRng(1), { hue: 0.7 })).toThrow(/hue 0.7/);
    expect(() => drawJitter(new AugmentRng(1), { brightness: -1 })).toThrow(/brightness -1/);
    expect(() => applyJitter({ width: 2, height: 1, channels: 1, data: new Uint8Array(2) }, { order: [0, 1, 2, 3] })).toThrow(/RGB/);
  });
});

describe('torchDefaultInit', () => {
  const p = (name: string, shape: number[], transposed = false): NamedParameter => ({ name, tensor: { shape: transposed ? [shape[1]!, shape[0]!] : shape } as unknown as Tensor, ...(transposed ? { transposed } : {}) });
  const params = [
    p('conv.weight', [24, 5, 3, 3]),
    p('conv.bias', [24]),
    p('convT.weight', [40, 7, 3, 3]), // ConvTranspose2d [in, out, k, k]: torch's fan_in is 7 * 9
    p('convT.bias', [7]),
    p('lin.weight', [300, 50], true), // held transposed; the state layout decides fan_in
    p('lin.bias', [300]),
    p('norm.weight', [6, 4, 4]),
    p('norm.bias', [6, 4, 4]),
  ];

  it('kaiming-uniform bounds 1/sqrt(fan_in) from the state dict\'s dim 1, uniform statistics, norms at 1 and 0', () => {
    const v = torchDefaultInit(params, 9);
    const check = (name: string, fanIn: number) => {
      const a = v.get(name)!;
      const bound = 1 / Math.sqrt(fanIn);
      let max = 0;
      let sum = 0;
      let sq = 0;
      for (const x of a) {
        max = Math.max(max, Math.abs(x));
        sum += x;
        sq += x * x;
      }
      expect(max).toBeLessThanOrEqual(bound);
      if (a.length >= 1000) {
        expect(max).toBeGreaterThan(0.98 * bound);
        expect(Math.abs(sum / a.length)).toBeLessThan(0.05 * bound);
        expect(sq / a.length / ((bound * bound) / 3)).toBeGreaterThan(0.9);
        expect(sq / a.length / ((bound * bound) / 3)).toBeLessThan(1.1);
      }
    };
    check('conv.weight', 45);
    check('conv.bias', 45);
    check('convT.weight', 63);
    check('convT.bias', 63);
    check('lin.weight', 50);
    check('lin.bias', 50);
    // A bias bound from the wrong fan-in (conv's 5 * 9 = 45 vs convT's 63) would exceed this:
    expect(Math.max(...v.get('convT.bias')!.map(Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(63));
    expect(v.get('norm.weight')!.every((x) => x === 1)).toBe(true);
    expect(v.get('norm.bias')!.every((x) => x === 0)).toBe(true);
    expect(v.get('lin.weight')!.length).toBe(15000);
  });

  it('values depend on the name and seed, not on the listing order', () => {
    const a = torchDefaultInit(params, 9);
    const b = torchDefaultInit([...params].reverse(), 9);
    for (const [k, x] of a) expect(b.get(k)).toEqual(x);
    expect(torchDefaultInit(params, 10).get('conv.weight')).not.toEqual(a.get('conv.weight'));
    expect(() => torchDefaultInit([p('orphan.bias', [3])], 1)).toThrow(/orphan.bias/);
  });
});

describe('CropSampler', () => {
  const images = [0, 1, 2, 3, 4].map((i) => ({ name: `img${i}`, image: image(40 + 3 * i, 30 + i, i + 1) }));

  it('every image once per epoch, in a seeded order; crops are size x size in [-1, 1]', () => {
    const s = new CropSampler(images, { size: 16, jitter: { brightness: 0.1 } }, 3);
    const names: string[] = [];
    for (let i = 0; i < 5; i++) {
      const b = s.next(3);
      expect(b.shape).toEqual([3, 3, 16, 16]);
      expect(b.data.every((v) => v >= -1 && v <= 1)).toBe(true);
      names.push(...b.picks.map((p) => p.name));
    }
    for (let e = 0; e < 3; e++) expect(new Set(names.slice(5 * e, 5 * e + 5)).size).toBe(5);
    expect(s.epoch).toBe(3);
  });

  it('the same seed gives the same batches; state / restore continue the stream exactly', () => {
    const a = new CropSampler(images, { size: 12, jitter: { hue: 0.05 } }, 8);
    const b = new CropSampler(images, { size: 12, jitter: { hue: 0.05 } }, 8);
    a.next(4);
    b.next(4);
    expect(a.next(2).data).toEqual(b.next(2).data);
    const saved = JSON.parse(JSON.stringify(a.state));
    const next = a.next(3);
    const c = new CropSampler(images, { size: 12, jitter: { hue: 0.05 } }, 999);
    c.restore(saved);
    const again = c.next(3);
    expect(again.data).toEqual(next.data);
    expect(again.picks).toEqual(next.picks);
    expect(() => new CropSampler(images.slice(0, 2), { size: 12 }, 1).restore(saved)).toThrow(/training data: the saved position does not fit 2 items/);
    expect(() => new CropSampler([images[0]!, images[0]!], { size: 8 }, 1)).toThrow(/"img0" is listed twice/);
  });

  it('packImages is x / 127.5 - 1 in NCHW; validationCrop is deterministic', () => {
    const img = image(3, 2);
    const { data, shape } = packImages([img, img]);
    expect(shape).toEqual([2, 3, 2, 3]);
    for (let i = 0; i < 6; i++) for (let c = 0; c < 3; c++) expect(data[(3 + c) * 6 + i]).toBeCloseTo(img.data[i * 3 + c]! / 127.5 - 1, 6);
    const v = validationCrop(image(50, 30), 16);
    expect([v.width, v.height]).toEqual([16, 16]);
    expect(validationCrop(image(50, 30), 16).data).toEqual(v.data);
    expect(() => packImages([image(3, 2), image(2, 3)])).toThrow(/image 1 is 2x3/);
  });
});

describe('loss curve and CSV', () => {
  it('the SVG draws the losses and the validation lines; the CSV has a row per step', () => {
    const steps = Array.from({ length: 30 }, (_, i) => ({ step: i + 1, loss: 1 / (i + 1), lr: 1e-3, sigmas: [0.01] }));
    const v = [0, 15, 30].map((s) => ({ step: s, sigma: 0, latentL1: 0.5 - s / 100, identityL1: 0.6, images: [] }));
    const svg = curveSvg(steps, v, 'blur <test>');
    expect(svg.startsWith('<svg')).toBe(true);
    expect((svg.match(/<polyline/g) ?? []).length).toBe(4);
    expect(svg).toContain('blur &lt;test>');
    expect(svg).toContain('held-out latent L1: 0.2000');
    const csv = lossCsv(steps).trim().split('\n');
    expect(csv.length).toBe(31);
    expect(csv[1]).toBe('1,1,0.001,0.01');
    // With a decoder, validation also has the round trip through the autoencoder: a fifth line.
    const withTrip = curveSvg(steps, v.map((r) => ({ ...r, roundTripL1: 0.1 })), 'blur');
    expect((withTrip.match(/<polyline/g) ?? []).length).toBe(5);
    expect(withTrip).toContain('E(A(D(E(x)))): 0.1000');
  });
});

describe('reading training images (Node)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'silo-train-data-'));
    mkdirSync(join(dir, 'b', 'deep'), { recursive: true });
    const png = await encodePng(image(4, 3));
    for (const f of ['z.png', 'a.png', 'b/deep/c.png', 'b/y.PNG']) writeFileSync(join(dir, f), png);
    writeFileSync(join(dir, 'b', 'notes.md'), 'not an image');
    writeFileSync(join(dir, 'list.txt'), '# held out\nb/deep/c.png\n\n a.png \n');
    writeFileSync(join(dir, 'bad.txt'), 'b/notes.md\n');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('folders recursively in sorted order, list files relative to the list, each image once', async () => {
    const rel = (ps: string[]) => ps.map((p) => relative(dir, p));
    expect(rel(await listImagePaths([dir]))).toEqual(['a.png', 'b/deep/c.png', 'b/y.PNG', 'z.png']);
    expect(rel(await listImagePaths([join(dir, 'list.txt')]))).toEqual(['b/deep/c.png', 'a.png']);
    expect(rel(await listImagePaths([join(dir, 'a.png'), dir]))).toEqual(['a.png', 'b/deep/c.png', 'b/y.PNG', 'z.png']);
    const imgs = await readTrainingImages([join(dir, 'b')]);
    expect(imgs.map((i) => [i.image.width, i.image.height])).toEqual([[4, 3], [4, 3]]);
  });

  it('refuses what is not there or not an image, naming the flag and path', async () => {
    await expect(listImagePaths([join(dir, 'missing')], '--validate')).rejects.toThrow(/--validate .*missing: no such file or folder/);
    await expect(listImagePaths([join(dir, 'b', 'notes.md')])).rejects.toThrow(/notes.md: not an image/);
    await expect(listImagePaths([join(dir, 'bad.txt')])).rejects.toThrow(/"b\/notes.md" is not a .png/);
    mkdirSync(join(dir, 'empty'), { recursive: true });
    await expect(listImagePaths([join(dir, 'empty')])).rejects.toThrow(/holds no .png/);
  });
});
