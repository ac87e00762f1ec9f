// VJPs of the tiny autoencoder (src/models/taesd/vjp.ts) with the real pretrained TAEF2 weights
// (../shared/golden/taef2, read in place) on crops of the golden photo and latent, batch 2 with odd sizes
// (the encoder's stride-2 convs see 14x22 -> 7x11 -> 4x6 -> 2x3):
//   - an f64 CPU forward (test/ref/taesd.ts) matches the GPU forward, and its central difference along a
//     random direction matches <vjp, u> (tight: no f32 noise, step small enough to cross no ReLU kink);
//   - the f32 GPU forward's central difference along the VJP's own direction matches <vjp, u>;
//   - no tensor outlives a VJP; shape errors name the tensors.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram, type Recorder } from '../../src/engine/recorder.js';
import type { Tensor } from '../../src/engine/tensor.js';
import type { SafetensorsFile } from '../../src/formats/safetensors.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import { TinyAutoencoder } from '../../src/models/taesd/autoencoder.js';
import { taesdDecodeVjp, taesdEncodeVjp } from '../../src/models/taesd/vjp.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { goldenDir } from '../helpers/golden.js';
import { taesdForward64, type Act64 } from '../ref/taesd.js';

let engine: Engine;
let model: TinyAutoencoder;
let files: { encoder: SafetensorsFile; decoder: SafetensorsFile };
let image: Float32Array; // golden input.image_01 [1, 3, 256, 256] in [0, 1]
let latent: Float32Array; // golden latent [1, 32, 32, 32]

beforeAll(async () => {
  engine = await getEngine();
  const dir = goldenDir('taef2');
  const [encoder, decoder, golden] = await Promise.all([
    readSafetensorsFile(`${dir}/taef2_encoder.safetensors`),
    readSafetensorsFile(`${dir}/taef2_decoder.safetensors`),
    readSafetensorsFile(`${dir}/golden.safetensors`),
  ]);
  files = { encoder, decoder };
  model = TinyAutoencoder.load(engine, files, { dtype: 'f32' });
  image = golden.getF32('input.image_01');
  latent = golden.getF32('latent');
});
afterAll(() => model?.dispose());

type Shape4 = [number, number, number, number];

/** Crops [c, h, w] at (y0, x0) out of a [1, c, size, size] tensor. */
function crop(src: Float32Array, c: number, size: number, y0: number, x0: number, h: number, w: number): Float32Array {
  const out = new Float32Array(c * h * w);
  for (let k = 0; k < c; k++) {
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[(k * h + y) * w + x] = src[(k * size + y0 + y) * size + x0 + x]!;
  }
  return out;
}

function concat(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

async function evaluate(inputs: { data: Float32Array; shape: number[] }[], fn: (rec: Recorder, ts: Tensor[]) => Tensor): Promise<Float32Array> {
  const ts = inputs.map((i) => engine.tensor(i.data, i.shape));
  try {
    const { result } = await runProgram(engine, 'taesd vjp test', (rec) => fn(rec, ts));
    try {
      return await result.read();
    } finally {
      result.dispose();
    }
  } finally {
    for (const t of ts) t.dispose();
  }
}

interface Case {
  what: string;
  part: 'encoder' | 'decoder';
  x: Float32Array;
  xShape: Shape4;
  gShape: Shape4;
  forward: (rec: Recorder, x: Tensor) => Tensor;
  vjp: (rec: Recorder, x: Tensor, g: Tensor) => Tensor;
}

/**
 * f64 check: step h = 1e-7 on inputs of O(1). The f64 forward's rounding contributes ~1e-16 / 1e-7 = 1e-9
 * of the derivative; ReLU kinks crossed contribute in proportion to h (measured: 1e-2 at h = 1e-5 for the
 * encoder, where one kink was crossed; nothing visible at 1e-6 and 1e-7). What is left is the f32 rounding
 * of the GPU VJP's elements, each a few 1e-7 relative, so the limit is 1e-6 of sum |vjp_i u_i| (the worst
 * case of per-element relative errors of 1e-6). Measured: 1.5e-6 (decoder) and 3.2e-5 (encoder) absolute,
 * 16x and 130x below it on lavapipe and SwiftShader. |<vjp, u>| is asserted to be over 100x the limit, so
 * the check is a relative one of at least 1e-2 (the random u cancels much of the sum: ~1/sqrt(n)).
 */
const H64 = 1e-7;
const REL64 = 1e-6;
/**
 * f32 check along u = vjp / max|vjp| (so <vjp, u> = |vjp|^2 / max|vjp|, as large as a direction allows, well
 * above the f32 noise of the two forwards). The step trades that noise (~1/h) against ReLU kinks crossed
 * (~h; the encoder is the kinkier: at 32x32, 34% off at h = 1e-2, 1% at 3e-4). Measured at these steps:
 * 9e-4 (decoder, h 1e-3) and 1.5e-3 (encoder, h 1e-4) of <vjp, u> on both adapters. Limit: 1e-2 of it, a
 * loose check (the f64 one above is the tight one) that still catches an O(1) error of the f32 pipeline.
 */
const HF32 = { decoder: 1e-3, encoder: 1e-4 };
const RELF32 = { decoder: 1e-2, encoder: 1e-2 };

async function check(c: Case): Promise<void> {
  const gLen = c.gShape.reduce((a, b) => a * b, 1);
  const g = randomData(gLen, 17);
  let t0 = performance.now();
  const live = engine.pool.stats.liveBytes;
  const vjp = await evaluate([{ data: c.x, shape: c.xShape }, { data: g, shape: c.gShape }], (rec, [x, gt]) => c.vjp(rec, x!, gt!));
  const yGpu = await evaluate([{ data: c.x, shape: c.xShape }], (rec, [x]) => c.forward(rec, x!));
  expect(vjp.length).toBe(c.x.length);
  // Every recomputed activation, tape input and intermediate gradient was released.
  expect(engine.pool.stats.liveBytes).toBe(live);
  const tGpu = performance.now() - t0;

  // The f64 reference forward against the GPU's f32 one: measured ~2e-6 of the largest value (f32 sums
  // of 576-term products through ~30 layers); 1e-4 catches a wrong layer.
  t0 = performance.now();
  const get = (name: string) => files[c.part].getF32(name);
  const f64 = (d: Float64Array) => taesdForward64(model.config, c.part, get, { data: d, shape: c.xShape } satisfies Act64).data;
  const yRef = f64(Float64Array.from(c.x));
  expectClose(yGpu, yRef, { atol: 1e-4 * maxAbs(yRef), rtol: 0 }, `${c.what}: GPU forward vs f64 reference`);

  const u = randomData(c.x.length, 18);
  const xp = Float64Array.from(c.x, (v, i) => v + H64 * u[i]!);
  const xm = Float64Array.from(c.x, (v, i) => v - H64 * u[i]!);
  const fd64 = (dot(g, f64(xp)) - dot(g, f64(xm))) / (2 * H64);
  const d64 = dot(vjp, u);
  const scale64 = vjp.reduce((s, v, i) => s + Math.abs(v * u[i]!), 0);
  const tCpu = performance.now() - t0;
  console.log(`${c.what}: f64 central difference ${fd64}, <vjp, u> ${d64} (error ${(fd64 - d64).toExponential(2)}, limit ${(REL64 * scale64).toExponential(2)})`);
  const bound64 = REL64 * scale64;
  expect(Math.abs(d64)).toBeGreaterThan(100 * bound64);
  expect(Math.abs(fd64 - d64)).toBeLessThan(bound64);

  // f32 GPU central difference along the VJP's own direction; each side against the step actually taken.
  t0 = performance.now();
  const h = HF32[c.part];
  const m = maxAbs(vjp);
  const w = vjp.map((v) => v / m);
  const xp32 = c.x.map((v, i) => v + h * w[i]!);
  const xm32 = c.x.map((v, i) => v - h * w[i]!);
  const yp = await evaluate([{ data: xp32, shape: c.xShape }], (rec, [x]) => c.forward(rec, x!));
  const ym = await evaluate([{ data: xm32, shape: c.xShape }], (rec, [x]) => c.forward(rec, x!));
  let fd32 = 0;
  for (let i = 0; i < gLen; i++) fd32 += g[i]! * (yp[i]! - ym[i]!);
  fd32 /= 2 * h;
  const d32 = dot(vjp, Float64Array.from(xp32, (v, i) => (v - xm32[i]!) / (2 * h)));
  console.log(
    `${c.what}: f32 central difference (h ${h}) ${fd32}, <vjp, u> ${d32} (rel err ${((fd32 - d32) / d32).toExponential(2)}); ` +
      `GPU ${(tGpu / 1000).toFixed(1)} s, CPU ${(tCpu / 1000).toFixed(1)} s, f32 FD ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  expect(Math.abs(fd32 - d32)).toBeLessThan(RELF32[c.part] * Math.abs(d32));
}

describe('TAEF2 VJPs (real weights, batch 2, odd sizes)', () => {
  it('taesdDecodeVjp: latent [2, 32, 2, 3] -> raw image [2, 3, 16, 24]', async () => {
    const z = concat(crop(latent, 32, 32, 10, 12, 2, 3), crop(latent, 32, 32, 20, 3, 2, 3));
    await check({
      what: 'decode',
      part: 'decoder',
      x: z,
      xShape: [2, 32, 2, 3],
      gShape: [2, 3, 16, 24],
      forward: (rec, x) => model.decode(rec, x),
      vjp: (rec, x, g) => taesdDecodeVjp(rec, model, x, g),
    });
  });

  it('taesdEncodeVjp: image [2, 3, 14, 22] -> latent [2, 32, 2, 3]', async () => {
    const x = concat(crop(image, 3, 256, 100, 90, 14, 22), crop(image, 3, 256, 20, 150, 14, 22));
    await check({
      what: 'encode',
      part: 'encoder',
      x,
      xShape: [2, 3, 14, 22],
      gShape: [2, 32, 2, 3],
      forward: (rec, t) => model.encode(rec, t),
      vjp: (rec, t, g) => taesdEncodeVjp(rec, model, t, g),
    });
  });

  it('shape errors name the tensors and the expected shapes', async () => {
    const run = (xShape: number[], gShape: number[], fn: (rec: Recorder, x: Tensor, g: Tensor) => Tensor) =>
      evaluate(
        [
          { data: new Float32Array(xShape.reduce((a, b) => a * b, 1)), shape: xShape },
          { data: new Float32Array(gShape.reduce((a, b) => a * b, 1)), shape: gShape },
        ],
        (rec, [x, g]) => fn(rec, x!, g!),
      );
    const dec = (rec: Recorder, x: Tensor, g: Tensor) => taesdDecodeVjp(rec, model, x, g);
    const enc = (rec: Recorder, x: Tensor, g: Tensor) => taesdEncodeVjp(rec, model, x, g);
    await expect(run([1, 16, 2, 2], [1, 3, 16, 16], dec)).rejects.toThrow(/taesdDecodeVjp: latent must be \[N, 32, h, w\], got \[1, 16, 2, 2\]/);
    await expect(run([1, 32, 2, 2], [1, 3, 8, 8], dec)).rejects.toThrow(/taesdDecodeVjp: gradImage \[1, 3, 8, 8\] must be \[1, 3, 16, 16\]/);
    await expect(run([1, 3, 14, 22], [1, 32, 2, 2], enc)).rejects.toThrow(/taesdEncodeVjp: gradLatent \[1, 32, 2, 2\] must be \[1, 32, 2, 3\]/);
    await expect(run([1, 4, 16, 16], [1, 32, 2, 2], enc)).rejects.toThrow(/taesdEncodeVjp: image must be \[N, 3, H, W\], got \[1, 4, 16, 16\]/);
  });
});
