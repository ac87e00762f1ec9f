// Blur kernels from files (.npy written by hand here, text matrices, safetensors), their validation
// and normalisation rule, and the task factory makeDegradation with SILO's defaults.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { f32Entry, serializeSafetensors } from '../../src/formats/safetensors.js';
import {
  AvgPoolOperator,
  BlurOperator,
  InpaintingOperator,
  KernelFileError,
  SuperResolutionOperator,
  loadBlurKernel,
  parseBlurKernel,
  makeDegradation,
  DEGRADATION_TASKS,
  type DegradationTask,
} from '../../src/solvers/degradations/index.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { blurRef } from '../ref/degradations.js';
import { encodePng } from '../../src/io/png.js';
import { JpegOperator } from '../../src/solvers/degradations/jpeg.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

interface NpyOpts {
  descr?: string;
  fortran?: boolean;
  version?: 1 | 2;
  shape?: string;
  /** Bytes to drop from the end (a truncated file). */
  truncate?: number;
}

/** An .npy file written by hand: magic, version, header length, dict header padded to 64, raw data. */
function npy(values: ArrayLike<number>, rows: number, cols: number, o: NpyOpts = {}): Uint8Array {
  const descr = o.descr ?? '<f4';
  const version = o.version ?? 1;
  const pre = version === 1 ? 10 : 12;
  let header = `{'descr': '${descr}', 'fortran_order': ${o.fortran ? 'True' : 'False'}, 'shape': ${o.shape ?? `(${rows}, ${cols})`}, }`;
  while ((pre + header.length + 1) % 64 !== 0) header += ' ';
  header += '\n';
  const item = Number(descr.slice(2));
  const bytes = new Uint8Array(pre + header.length + item * values.length);
  const view = new DataView(bytes.buffer);
  bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  if (version === 1) view.setUint16(8, header.length, true);
  else view.setUint32(8, header.length, true);
  for (let i = 0; i < header.length; i++) bytes[pre + i] = header.charCodeAt(i);
  const little = descr[0] !== '>';
  for (let i = 0; i < values.length; i++) {
    const at = pre + header.length + item * i;
    if (descr.endsWith('f4')) view.setFloat32(at, values[i]!, little);
    else if (descr.endsWith('f8')) view.setFloat64(at, values[i]!, little);
    else if (descr.endsWith('i4')) view.setInt32(at, values[i]!, little);
  }
  return o.truncate ? bytes.subarray(0, bytes.length - o.truncate) : bytes;
}

const text = (s: string) => new TextEncoder().encode(s);

/** values / sum(values) in f64 (the documented rule), laid into an odd `size` square at the top left. */
function normalized(values: ArrayLike<number>, rows: number, size = rows): number[] {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i]!;
  const out = new Array<number>(size * size).fill(0);
  for (let y = 0; y < rows; y++) for (let x = 0; x < rows; x++) out[y * size + x] = values[y * rows + x]! / s;
  return out;
}

describe('loadBlurKernel', () => {
  // A non-symmetric 5x5 "streak" (f32-exact values).
  const streak = Float32Array.from({ length: 25 }, (_, i) => (i % 6 === 0 ? 0.5 : i % 7 === 1 ? 0.25 : 0));
  streak[3] = 2;

  it('reads a float32 C-order .npy (DPS motion kernels) and normalises it to sum 1', () => {
    const k = parseBlurKernel(npy(streak, 5, 5), 'motion_000.npy');
    expect(k.format).toBe('npy');
    expect(k.size).toBe(5);
    expect(k.fileSize).toBe(5);
    // Division in f64 of the same f32 values: equal to the last bit.
    expect(Array.from(k.kernel)).toEqual(normalized(streak, 5));
    expect(k.kernel.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 14);
  });

  it('reads float64 big-endian (format 2.0 header) and Fortran order (transposed back)', () => {
    const v = [1, 2, 3, 4, 5, 6, 7, 8, 9.5];
    const be = parseBlurKernel(npy(v, 3, 3, { descr: '>f8', version: 2 }), 'k.npy');
    expect(Array.from(be.kernel)).toEqual(normalized(v, 3));
    // Column-major storage of the matrix [[1, 2, 3], [4, 5, 6], [7, 8, 9.5]].
    const colMajor = [1, 4, 7, 2, 5, 8, 3, 6, 9.5];
    const f = parseBlurKernel(npy(colMajor, 3, 3, { descr: '<f8', fortran: true }), 'k.npy');
    expect(Array.from(f.kernel)).toEqual(normalized(v, 3));
  });

  it('pads an even kernel to odd with a zero row at the bottom and a zero column at the right', () => {
    const v = Float32Array.from({ length: 16 }, (_, i) => i + 1);
    const k = parseBlurKernel(npy(v, 4, 4), 'even.npy');
    expect(k.size).toBe(5);
    expect(k.fileSize).toBe(4);
    expect(Array.from(k.kernel)).toEqual(normalized(v, 4, 5));
    for (let i = 0; i < 5; i++) {
      expect(k.kernel[4 * 5 + i]).toBe(0);
      expect(k.kernel[i * 5 + 4]).toBe(0);
    }
  });

  it('reads a text matrix: whitespace / comma separated, comments and blank lines skipped', () => {
    const k = parseBlurKernel(text('# a 3x3 kernel\n1, 2, 3\n\n4 5 6   # middle row\n7\t8,9\n'), 'kernel.txt');
    expect(k.format).toBe('text');
    expect(Array.from(k.kernel)).toEqual(normalized([1, 2, 3, 4, 5, 6, 7, 8, 9], 3));
    // Negative taps are fine while the sum stays positive.
    const s = parseBlurKernel(text('-1 2 -1\n2 4 2\n-1 2 -1\n'), 'sharp.csv');
    expect(s.kernel[4]).toBeCloseTo(4 / 8, 15);
  });

  it('reads a safetensors file with one 2-D tensor (f32 and f64)', () => {
    const v = randomData(49, 4, 0, 1);
    const k = parseBlurKernel(serializeSafetensors({ kernel: f32Entry(v, [7, 7]) }), 'k.safetensors');
    expect(k.format).toBe('safetensors');
    expect(Array.from(k.kernel)).toEqual(normalized(v, 7));
    const v64 = Float64Array.from({ length: 9 }, (_, i) => 0.1 * (i + 1) + 1e-12);
    const raw = new Uint8Array(v64.buffer);
    const st64 = serializeSafetensors({ k: { dtype: 'F64', shape: [3, 3], data: raw } });
    expect(Array.from(parseBlurKernel(st64, 'k64.safetensors').kernel)).toEqual(normalized(v64, 3));
  });

  it('reads a grayscale PNG (16 and 8 bit) through the async loadBlurKernel; npy too', async () => {
    const v16 = Uint16Array.from({ length: 25 }, (_, i) => (i * 7919) % 65536);
    const k16 = await loadBlurKernel(await encodePng({ width: 5, height: 5, channels: 1, data: v16 }), 'k16.png');
    expect(k16.format).toBe('png');
    expect(Array.from(k16.kernel)).toEqual(normalized(v16, 5));
    const v8 = Uint8Array.from({ length: 16 }, (_, i) => 10 * i);
    const k8 = await loadBlurKernel(await encodePng({ width: 4, height: 4, channels: 1, data: v8 }), 'k8.png');
    // 8-bit samples become v * 257 at 16 bits, a common factor the normalisation removes.
    expect(k8.size).toBe(5);
    expectClose(k8.kernel, normalized(v8, 4, 5), { atol: 1e-16, rtol: 1e-15 }, '8-bit PNG kernel');
    const n = await loadBlurKernel(npy(streak, 5, 5), 'motion_000.npy');
    expect(Array.from(n.kernel)).toEqual(normalized(streak, 5));
  });

  it('rejects an RGB PNG, a broken PNG, and a PNG given to the synchronous parser, naming the file', async () => {
    const rgb = await encodePng({ width: 3, height: 3, channels: 3, data: new Uint8Array(27).fill(9) });
    await expect(loadBlurKernel(rgb, 'color.png')).rejects.toThrow(/color\.png: PNG is rgb with 3 channels; a kernel must be a grayscale PNG/);
    await expect(loadBlurKernel(rgb.subarray(0, 30), 'cut.png')).rejects.toThrow(/blur kernel file cut\.png: /);
    expect(() => parseBlurKernel(rgb, 'color.png')).toThrow(/color\.png: PNG kernels are decoded asynchronously: use loadBlurKernel/);
  });

  const bad: Array<[string, () => Uint8Array, string, RegExp]> = [
    ['an integer .npy', () => npy([1, 2, 3, 4, 5, 6, 7, 8, 9], 3, 3, { descr: '<i4' }), 'int.npy', /int\.npy: \.npy: dtype '<i4' is not float32 or float64/],
    ['a 3-D .npy', () => npy(new Float32Array(18), 3, 3, { shape: '(2, 3, 3)' }), 'cube.npy', /cube\.npy: \.npy: shape \(2, 3, 3\) is not a 2-D matrix/],
    ['a truncated .npy', () => npy(streak, 5, 5, { truncate: 8 }), 'cut.npy', /cut\.npy: \.npy: holds 92 data bytes, expected 100/],
    ['a .npy without the magic', () => text('1 2 3'), 'fake.npy', /fake\.npy: \.npy: does not start with the magic/],
    ['a NaN tap', () => npy([1, 1, 1, 1, NaN, 1, 1, 1, 1], 3, 3), 'nan.npy', /nan\.npy: tap \(1, 1\) is NaN; every tap must be finite/],
    ['an all-zero kernel', () => npy(new Float32Array(9), 3, 3), 'zero.npy', /zero\.npy: kernel is all zeros/],
    ['a negative sum', () => text('1 -2 1\n-2 1 -2\n1 -2 1'), 'neg.txt', /neg\.txt: taps sum to -3; a blur kernel needs a positive sum/],
    ['a cancelling sum', () => text('1 -1\n1 -0.999999999'), 'cancel.txt', /cancel\.txt: taps sum to .* a cancellation/],
    ['a non-square matrix', () => text('1 2 3\n4 5 6\n'), 'wide.txt', /wide\.txt: kernel is 2x3, expected a square matrix/],
    ['ragged rows', () => text('1 2 3\n4 5\n6 7 8\n'), 'ragged.txt', /ragged\.txt: row 2 has 2 values, row 1 has 3/],
    ['a word in a text matrix', () => text('1 2\n3 abc\n'), 'words.txt', /words\.txt: line 2, column 2: 'abc' is not a finite number/],
    ['an empty text file', () => text('# nothing\n\n'), 'empty.txt', /empty\.txt: holds no numbers/],
    ['binary junk', () => Uint8Array.from([0xff, 0xfe, 0x00, 0x12, 0x80]), 'junk.bin', /junk\.bin: is neither \.npy, safetensors nor UTF-8 text/],
    ['two tensors in safetensors', () => serializeSafetensors({ a: f32Entry([1], [1, 1]), b: f32Entry([1], [1, 1]) }), 'two.safetensors', /two\.safetensors: safetensors must hold exactly one tensor, found 2 \(a, b\)/],
    ['a 1-D safetensors tensor', () => serializeSafetensors({ k: f32Entry([1, 2, 3], [3]) }), 'vec.safetensors', /vec\.safetensors: tensor "k" has shape \[3\], expected a 2-D matrix/],
    ['a corrupt safetensors', () => text('{"k": 1}'), 'bad.safetensors', /blur kernel file bad\.safetensors: safetensors bad\.safetensors/],
  ];
  for (const [what, bytes, name, re] of bad) {
    it(`rejects ${what}, naming the file`, () => {
      let err: unknown;
      try {
        parseBlurKernel(bytes(), name);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KernelFileError);
      expect((err as Error).message).toMatch(re);
    });
  }
});

describe('makeDegradation', () => {
  it('builds every task with SILO defaults (eta, sigma) and a description', () => {
    const want: Record<DegradationTask, { eta: number; name: RegExp; cls: unknown }> = {
      gaussian_blur: { eta: 0.5, name: /^gaussian_blur$/, cls: BlurOperator },
      motion_blur: { eta: 0.5, name: /^motion_blur$/, cls: BlurOperator },
      sr4: { eta: 0.5, name: /^sr4$/, cls: SuperResolutionOperator },
      sr8: { eta: 0.5, name: /^sr8$/, cls: SuperResolutionOperator },
      inpaint_center: { eta: 1.0, name: /^inpaint_box$/, cls: InpaintingOperator },
      inpaint_random: { eta: 1.0, name: /^inpaint_box$/, cls: InpaintingOperator },
      jpeg10: { eta: 0.5, name: /^jpeg10$/, cls: JpegOperator },
      avgpool4: { eta: 0.5, name: /^avgpool4$/, cls: AvgPoolOperator },
    };
    expect([...DEGRADATION_TASKS].sort()).toEqual(Object.keys(want).sort());
    const motionKernel = parseBlurKernel(npy(randomData(9, 1, 0, 1), 3, 3), 'm.npy');
    for (const task of DEGRADATION_TASKS) {
      const d = makeDegradation(engine, task, 128, 128, { motionKernel, seed: 3 });
      expect(d.operator, task).toBeInstanceOf(want[task].cls);
      expect(d.operator.name, task).toMatch(want[task].name);
      expect(d.eta, task).toBe(want[task].eta);
      expect(d.sigma, task).toBe(0.02);
      expect(d.description, task).toMatch(new RegExp(`^${task}: .*noise sigma 0.02, eta ${want[task].eta}$`));
      d.operator.dispose();
    }
  });

  it('uses SILO sizes: 61x61 std 3 blur, x4 / x8 output, an H/2 box centred (256 at 512), overrides', () => {
    const blur = makeDegradation(engine, 'gaussian_blur', 64, 64).operator as BlurOperator;
    expect(blur.size).toBe(61);
    expect(blur.kernel[30 * 61 + 31]! / blur.kernel[30 * 61 + 30]!).toBeCloseTo(Math.exp(-1 / 18), 6);
    const sr8 = makeDegradation(engine, 'sr8', 512, 512).operator as SuperResolutionOperator;
    expect([sr8.outH, sr8.outW]).toEqual([64, 64]);
    const box = makeDegradation(engine, 'inpaint_center', 512, 512).operator as InpaintingOperator;
    expect(box.box).toEqual({ top: 128, left: 128, h: 256, w: 256 });
    const a = makeDegradation(engine, 'inpaint_random', 256, 256, { seed: 9 }).operator as InpaintingOperator;
    const b = makeDegradation(engine, 'inpaint_random', 256, 256, { seed: 9 }).operator as InpaintingOperator;
    expect(a.box).toEqual(b.box);
    expect(a.box.h).toBe(128);
    // The margins scale with the image like the box (16 at 512: 8 at 256, 2 at 64), so small images work.
    expect(a.box.top).toBeGreaterThanOrEqual(8);
    expect(a.box.top + a.box.h).toBeLessThanOrEqual(256 - 8);
    const small = makeDegradation(engine, 'inpaint_random', 64, 64, { seed: 9 }).operator as InpaintingOperator;
    expect(small.box.h).toBe(32);
    expect(small.box.top).toBeGreaterThanOrEqual(2);
    expect(small.box.left + small.box.w).toBeLessThanOrEqual(62);
    small.dispose();
    const o = makeDegradation(engine, 'sr4', 32, 32, { sigma: 0.05, eta: 2 });
    expect([o.sigma, o.eta]).toEqual([0.05, 2]);
    for (const op of [blur, sr8, box, a, b, o.operator]) op.dispose();
  });

  it('motion_blur: the kernel file drives the operator (forward vs CPU correlation)', async () => {
    const v = randomData(49, 8, 0, 1);
    v[6] = 3; // a strong corner tap: non-symmetric
    const d = makeDegradation(engine, 'motion_blur', 11, 13, { motionKernel: parseBlurKernel(npy(v, 7, 7), 'streak.npy') });
    expect(d.description).toMatch(/motion blur 7x7 from streak\.npy/);
    const shape = [1, 3, 11, 13];
    const x = randomData(429, 2);
    const tx = engine.tensor(x, shape);
    const { result } = await runProgram(engine, 'motion', (rec) => d.operator.apply(rec, tx));
    const k = normalized(v, 7);
    // 49 f32 products of values in [-1, 1] with taps summing to 1: a few ulps.
    expectClose(await result.read(), blurRef(x, shape, Float32Array.from(k), 7), { atol: 2e-6, rtol: 0 }, 'motion blur');
    for (const t of [tx, result]) t.dispose();
    d.operator.dispose();
  });

  it('avgpool4 brings its measurement back to full size like SR (SILO encodes E(y) at full size)', async () => {
    const pool = makeDegradation(engine, 'avgpool4', 40, 24).operator;
    const sr = makeDegradation(engine, 'sr4', 40, 24).operator;
    const y = engine.tensor(randomData(2 * 3 * 10 * 6, 21), [2, 3, 10, 6], 'f32', 'y');
    const { result } = await runProgram(engine, 'upsample', (rec) => [pool.upsampleMeasurement!(rec, y), sr.upsampleMeasurement!(rec, y)] as const);
    expect(result[0].shape).toEqual([2, 3, 40, 24]);
    // The same torchvision bicubic-antialias matrices as the SR operator's upsampler.
    expectClose(await result[0].read(), await result[1].read(), { atol: 1e-6, rtol: 0 }, 'avgpool4 upsample vs sr4 upsample');
    for (const t of [y, result[0], result[1]]) t.dispose();
    pool.dispose();
    sr.dispose();
  });

  it('rejects motion_blur without a kernel file and unknown tasks', () => {
    expect(() => makeDegradation(engine, 'motion_blur', 64, 64)).toThrow(/task 'motion_blur' needs opts\.motionKernel/);
    expect(() => makeDegradation(engine, 'jpeg5' as DegradationTask, 64, 64)).toThrow(/unknown task 'jpeg5' \(known: gaussian_blur, motion_blur/);
  });
});
