// The JPEG degradation on the GPU (src/solvers/degradations/jpeg.ts, kernels/jpeg.wgsl) against the
// float64 CPU reference of the same pipeline (test/ref/jpeg.ts, written from T.81's DCT formulas),
// against the real codec's decode(encode(x)) (src/io/jpeg.ts, entropy coding included), and its
// straight-through adjoint against a scatter-form transpose and <A_lin x, y> = <x, A_lin^T y>.
// Differences are reported in 8-bit levels (1 level = 1 / 127.5 in [-1, 1]).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import type { DType } from '../../src/engine/dtype.js';
import { f16BitsToF32, f32ToF16Bits } from '../../src/engine/dtype.js';
import { runProgram } from '../../src/engine/recorder.js';
import { ArgumentError } from '../../src/engine/errors.js';
import { JpegOperator, jpegRoundTrip } from '../../src/solvers/degradations/index.js';
import type { JpegSubsampling } from '../../src/io/jpeg.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { jpegAdjointRef, jpegRef, rgb8ToNchw, syntheticRgb8, type SamplingRef } from '../ref/jpeg.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const LEVEL = 1 / 127.5;
const SAMPLING: Record<JpegSubsampling, SamplingRef> = { '4:2:0': [2, 2], '4:2:2': [2, 1], '4:4:4': [1, 1] };

/** A batch of synthetic 8-bit images (gradients, hard edges, noise) as [N, 3, H, W] in [-1, 1], and the 8-bit images. */
function batch(n: number, h: number, w: number, seed: number): { x: Float32Array; rgb8: Uint8Array[] } {
  const x = new Float32Array(n * 3 * h * w);
  const rgb8: Uint8Array[] = [];
  for (let b = 0; b < n; b++) {
    const img = syntheticRgb8(w, h, seed + b);
    rgb8.push(img);
    x.set(rgb8ToNchw(img, w, h), b * 3 * h * w);
  }
  return { x, rgb8 };
}

type Which = 'apply' | 'applyLinear' | 'adjoint';

async function gpu(op: JpegOperator, x: Float32Array, shape: number[], what: Which, dtype: DType = 'f32'): Promise<{ out: Float32Array; dispatches: number }> {
  const xt = engine.tensor(x, shape, dtype, 'x');
  const { result, report } = await runProgram(engine, `jpeg_${what}`, (rec) => (what === 'adjoint' ? op.adjoint(rec, xt, shape) : op[what](rec, xt)));
  const out = await result.read();
  result.dispose();
  xt.dispose();
  return { out, dispatches: report.dispatches };
}

function maxDiffLevels(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / LEVEL);
  return m;
}

describe('JpegOperator vs the CPU reference of the same pipeline', () => {
  // f32 sums of 0..255 samples over the colour, DCT, IDCT and upsampling stages err by ~1e-4 level
  // (measured max 6.8e-5 on lavapipe and SwiftShader); 1e-3 level leaves 10x headroom. A coefficient
  // within ~1e-5 of a quantisation boundary could round the other way in f32, which these fixed
  // inputs do not hit.
  const TOL = { atol: 1e-3 * LEVEL, rtol: 0 };
  const cases: [number[], JpegSubsampling, number][] = [
    [[1, 3, 40, 24], '4:2:0', 10],
    [[2, 3, 33, 47], '4:2:0', 10],
    [[1, 3, 1, 1], '4:2:0', 10],
    [[1, 3, 17, 9], '4:4:4', 10],
    [[2, 3, 19, 26], '4:2:2', 10],
    [[1, 3, 33, 47], '4:2:0', 75],
  ];
  for (const [shape, sub, q] of cases) {
    it(`apply and applyLinear, ${shape.join('x')} ${sub} q${q}`, async () => {
      const [n, , h, w] = shape as [number, number, number, number];
      const { x } = batch(n, h, w, 7 + h);
      const op = new JpegOperator({ quality: q, subsampling: sub });
      const { out, dispatches } = await gpu(op, x, shape, 'apply');
      expect(dispatches, 'colour + 2 block passes + colour back').toBe(4);
      expectClose(out, jpegRef(x, shape, q, SAMPLING[sub]), TOL, `apply ${shape.join('x')} ${sub}`);
      // The degradation really happened: far from the input.
      expect(maxDiffLevels(out, x)).toBeGreaterThan(5);
      const lin = await gpu(op, x, shape, 'applyLinear');
      expectClose(lin.out, jpegRef(x, shape, q, SAMPLING[sub], false), TOL, `applyLinear ${shape.join('x')} ${sub}`);
    });
  }

  it('f16 images (planes stay f32): within f16 rounding of the reference on the rounded input', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 jpeg: this adapter has no shader-f16');
      ctx.skip();
    }
    const shape = [1, 3, 21, 30];
    const x16 = batch(1, 21, 30, 5).x.map((v) => f16BitsToF32(f32ToF16Bits(v)));
    const { out } = await gpu(new JpegOperator(), x16, shape, 'apply', 'f16');
    // Outputs in [-1, 1] rounded to f16: half an ulp is <= 2^-12 = 2.4e-4.
    expectClose(out, jpegRef(x16, shape, 10), { atol: 3e-4, rtol: 0 }, 'apply f16');
  });
});

describe('JpegOperator vs the real codec (decode(encode(x)) with Huffman coding)', () => {
  // On 8-bit inputs the codec computes the same float pipeline and rounds its output to 8 bits once:
  // |GPU - codec| <= 0.5 level, plus the GPU's f32 error (1e-3 level as above). Measured: 0.5000.
  const cases: [number[], JpegSubsampling][] = [
    [[1, 3, 40, 24], '4:2:0'],
    [[2, 3, 33, 47], '4:2:0'],
    [[1, 3, 64, 80], '4:4:4'],
  ];
  for (const [shape, sub] of cases) {
    it(`${shape.join('x')} ${sub} q10`, async () => {
      const [n, , h, w] = shape as [number, number, number, number];
      const { x, rgb8 } = batch(n, h, w, 100 + w);
      const { out } = await gpu(new JpegOperator({ quality: 10, subsampling: sub }), x, shape, 'apply');
      const codec = new Float32Array(x.length);
      for (let b = 0; b < n; b++) codec.set(rgb8ToNchw(jpegRoundTrip(rgb8[b]!, w, h, 10, sub), w, h), b * 3 * h * w);
      expectClose(out, codec, { atol: (0.5 + 1e-3) * LEVEL, rtol: 0 }, `gpu vs codec ${shape.join('x')}`);
    });
  }
});

describe('JpegOperator adjoint (straight-through surrogate)', () => {
  const cases: [number[], JpegSubsampling][] = [
    [[1, 3, 40, 24], '4:2:0'],
    [[2, 3, 33, 47], '4:2:0'],
    [[1, 3, 1, 1], '4:2:0'],
    [[1, 3, 7, 5], '4:2:2'],
    [[1, 3, 9, 11], '4:4:4'],
  ];
  for (const [shape, sub] of cases) {
    it(`${shape.join('x')} ${sub}`, async () => {
      const size = shape.reduce((a, b) => a * b, 1);
      const x = randomData(size, 11 + size);
      const y = randomData(size, 12 + size);
      const op = new JpegOperator({ subsampling: sub });
      const ax = (await gpu(op, x, shape, 'applyLinear')).out;
      const { out: aty, dispatches } = await gpu(op, y, shape, 'adjoint');
      expect(dispatches).toBe(1);
      // Each output sums <= 16 taps of O(1) values in f32 (measured max error 7.3e-7).
      expectClose(aty, jpegAdjointRef(y, shape, SAMPLING[sub]), { atol: 5e-6, rtol: 1e-5 }, `adjoint ${shape.join('x')}`);
      let l = 0;
      let r = 0;
      let scale = 0;
      for (let i = 0; i < size; i++) {
        l += ax[i]! * y[i]!;
        r += x[i]! * aty[i]!;
        scale += Math.abs(x[i]! * aty[i]!);
      }
      // Two f32 pipelines summed over up to ~9k terms: relative to sum |x_i (A^T y)_i|, 1e-5 (measured <= 1e-6).
      expect(Math.abs(l - r) / scale, `<Ax, y> = ${l}, <x, A^T y> = ${r}`).toBeLessThan(1e-5);
    });
  }
});

describe('JpegOperator construction and arguments', () => {
  it('defaults to SILO: quality 10, 4:2:0, libjpeg tables', () => {
    const op = new JpegOperator();
    expect(op.name).toBe('jpeg10');
    expect(op.subsampling).toBe('4:2:0');
    // IJG: scale 5000 / 10 = 500; (16 * 500 + 50) / 100 = 80 and chroma (17 * 500 + 50) / 100 = 85; 99 -> 495 -> clamped to 255.
    expect([op.tables.luma[0], op.tables.chroma[0], op.tables.chroma[63]]).toEqual([80, 85, 255]);
  });

  it('rejects non-RGB inputs, mismatched adjoint shapes and bad qualities', async () => {
    const op = new JpegOperator();
    const x = engine.tensor(new Float32Array(2 * 8 * 8), [1, 2, 8, 8], 'f32', 'x2');
    const g = engine.tensor(new Float32Array(3 * 8 * 8), [1, 3, 8, 8], 'f32', 'g');
    await expect(runProgram(engine, 'bad', (rec) => op.apply(rec, x))).rejects.toThrow(ArgumentError);
    await expect(runProgram(engine, 'bad', (rec) => op.adjoint(rec, g, [1, 3, 8, 9]))).rejects.toThrow(/must have the input's shape/);
    x.dispose();
    g.dispose();
    expect(() => new JpegOperator({ quality: 0 })).toThrow(ArgumentError);
    expect(() => new JpegOperator({ quality: 10.5 })).toThrow(ArgumentError);
  });
});
