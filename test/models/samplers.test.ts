// Downsample2D and Upsample2D (src/models/samplers.ts, shared by the UNet and the VAE) against the CPU
// references on odd sizes: the forward (diffusers' padding 0 means F.pad(0, 1, 0, 1) before the stride-2
// conv, whichever model uses it), the stage's output shape, and its VJP against the conv backward
// reference (down) and the adjoint identity <vjp(g), v> = <g, J v> (up: J v = f(v) - f(0) for this affine map).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { parseSafetensors, f32Entry, serializeSafetensors } from '../../src/formats/safetensors.js';
import { WeightLoader } from '../../src/models/weights.js';
import { Downsample2D, Upsample2D } from '../../src/models/samplers.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { conv2dRef } from '../ref/conv2d.js';
import { conv2dBackwardRef } from '../ref/conv2d-backward.js';
import { nearest2xRef } from '../ref/resample.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const C = 6;
const W = randomData(C * C * 9, 11, -0.3, 0.3);
const B = randomData(C, 12, -0.2, 0.2);

function loader<T>(make: (w: WeightLoader) => T): T {
  const file = parseSafetensors(serializeSafetensors({ 'conv.weight': f32Entry(W, [C, C, 3, 3]), 'conv.bias': f32Entry(B, [C]) }), 'sampler.safetensors');
  return WeightLoader.build(engine, file, {}, make);
}

/** x [N, C, H, W] with `end` zero rows and columns appended. */
function padEnd(x: Float32Array, [n, c, h, w]: number[], end: number): { data: Float32Array; shape: number[] } {
  const out = new Float32Array(n! * c! * (h! + end) * (w! + end));
  for (let p = 0; p < n! * c!; p++) {
    for (let y = 0; y < h!; y++) for (let xx = 0; xx < w!; xx++) out[(p * (h! + end) + y) * (w! + end) + xx] = x[(p * h! + y) * w! + xx]!;
  }
  return { data: out, shape: [n!, c!, h! + end, w! + end] };
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
};

describe('Downsample2D', () => {
  for (const padding of [1, 0]) {
    it(`padding ${padding}${padding === 0 ? ' (zero-pad right and bottom first)' : ''}: forward, output shape and VJP on 2x6x7x9`, async () => {
      const shape = [2, C, 7, 9];
      const x = randomData(2 * C * 63, 21 + padding, -2, 2);
      const d = loader((w) => new Downsample2D(w, C, padding));
      const stage = d.stage('down');
      const src = padding === 0 ? padEnd(x, shape, 1) : { data: x, shape };
      const ref = conv2dRef(src.data, src.shape, W, [C, C, 3, 3], B, { stride: [2, 2], padding: [padding, padding] });
      expect(stage.outShape!(shape)).toEqual(ref.shape);
      const g = randomData(ref.out.length, 31 + padding);
      const xt = engine.tensor(x, shape, 'f32', 'x');
      const gt = engine.tensor(g, ref.shape, 'f32', 'g');
      try {
        const { result } = await runProgram(engine, 'down', (rec) => ({ y: stage.forward(rec, xt), dx: stage.vjp(rec, xt, gt) }));
        expect(result.y.shape).toEqual(ref.shape);
        expectClose(await result.y.read(), ref.out, { atol: 1e-5, rtol: 1e-5 }, 'forward');
        const end = padding === 0 ? 1 : 0;
        const dref = conv2dBackwardRef(x, shape, W, [C, C, 3, 3], g, { stride: [2, 2], padding: [padding, padding], padEnd: [end, end] });
        expectClose(await result.dx.read(), dref.gradX, { atol: 1e-5, rtol: 1e-5 }, 'vjp');
        result.y.dispose();
        result.dx.dispose();
      } finally {
        xt.dispose();
        gt.dispose();
        d.conv.weight.dispose();
        d.conv.bias!.dispose();
      }
    });
  }
});

describe('Upsample2D', () => {
  it('forward, output shape and VJP on 2x6x5x3', async () => {
    const shape = [2, C, 5, 3];
    const x = randomData(2 * C * 15, 41, -2, 2);
    const u = loader((w) => new Upsample2D(w, C));
    const stage = u.stage('up');
    const up = nearest2xRef(x, 2 * C, 5, 3);
    const ref = conv2dRef(up, [2, C, 10, 6], W, [C, C, 3, 3], B, { padding: [1, 1] });
    expect(stage.outShape!(shape)).toEqual(ref.shape);
    const g = randomData(ref.out.length, 42);
    const v = randomData(x.length, 43);
    const ts = [engine.tensor(x, shape, 'f32', 'x'), engine.tensor(g, ref.shape, 'f32', 'g'), engine.tensor(v, shape, 'f32', 'v'), engine.zeros(shape, 'f32', 'zero')];
    const [xt, gt, vt, zt] = ts as [typeof ts[0], typeof ts[0], typeof ts[0], typeof ts[0]];
    try {
      const { result } = await runProgram(engine, 'up', (rec) => ({
        y: stage.forward(rec, xt),
        dx: stage.vjp(rec, xt, gt),
        fv: stage.forward(rec, vt),
        f0: stage.forward(rec, zt),
      }));
      expectClose(await result.y.read(), ref.out, { atol: 1e-5, rtol: 1e-5 }, 'forward');
      const [dx, fv, f0] = [await result.dx.read(), await result.fv.read(), await result.f0.read()];
      const jv = fv.map((a, i) => a - f0[i]!);
      const lhs = dot(dx, v);
      expect(Math.abs(lhs - dot(g, jv))).toBeLessThan(1e-4 * (1 + Math.abs(lhs)));
      for (const t of Object.values(result)) t.dispose();
    } finally {
      for (const t of ts) t.dispose();
      u.conv.weight.dispose();
      u.conv.bias!.dispose();
    }
  });
});
