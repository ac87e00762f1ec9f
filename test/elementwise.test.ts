import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import * as ew from '../src/engine/ops/elementwise.js';
import { getEngine, randomData, expectClose, F32_TOL } from './helpers/engine.js';
import { unaryRef, broadcastRef, gegluRef } from './ref/elementwise.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// f16 storage rounds inputs and outputs to 11 significant bits: relative 2^-11 per rounding.
const F16_TOL = { atol: 2e-3, rtol: 3e-3 };

describe('elementwise unary', () => {
  const acts = ['relu', 'silu', 'gelu', 'gelu_tanh', 'quick_gelu', 'leaky_relu', 'sigmoid'] as const;
  for (const act of acts) {
    it(`${act} on 1, 7 and 1031 elements (f32)`, async () => {
      for (const n of [1, 7, 1031]) {
        const data = randomData(n, 11 + n, -6, 6);
        const x = engine.tensor(data, [n]);
        const { result } = await runProgram(engine, act, (rec) => ew.unary(rec, x, { act, alpha: 0.2 }));
        expectClose(await result.read(), unaryRef(data, act, { alpha: 0.2 }), { atol: 1e-6, rtol: 1e-5 }, `${act} n=${n}`);
        x.dispose();
        result.dispose();
      }
    });
  }

  it('clamp and scale-shift', async () => {
    const data = randomData(300, 5, -3, 3);
    const x = engine.tensor(data, [3, 100]);
    const { result } = await runProgram(engine, 'clamp', (rec) => [ew.clamp(rec, x, -1, 0.5), ew.scale(rec, x, 2.5, -0.25)]);
    expectClose(await result[0]!.read(), unaryRef(data, 'none', { min: -1, max: 0.5 }), F32_TOL, 'clamp');
    expectClose(await result[1]!.read(), unaryRef(data, 'none', { scale: 2.5, shift: -0.25 }), F32_TOL, 'scale');
  });

  it('extreme inputs give finite activations (no exp overflow)', async () => {
    const data = new Float32Array([-1e4, -100, -20, 0, 20, 100, 1e4]);
    const x = engine.tensor(data, [7]);
    for (const act of acts) {
      const { result } = await runProgram(engine, act, (rec) => ew.unary(rec, x, { act }));
      const out = await result.read();
      expectClose(out, unaryRef(data, act), { atol: 1e-6, rtol: 1e-5 }, `${act} extremes`);
    }
  });

  it('more elements than one grid row of workgroups (2-D launch)', async () => {
    const n = 65535 * 256 + 517;
    const data = randomData(n, 3);
    const x = engine.tensor(data, [n]);
    const { result } = await runProgram(engine, 'big', (rec) => ew.unary(rec, x, { act: 'relu' }));
    const out = await result.read();
    expect(out[n - 1]).toBe(Math.max(0, data[n - 1]!));
    expectClose(out, unaryRef(data, 'relu'), F32_TOL, 'relu big');
    x.dispose();
    result.dispose();
  });
});

describe('elementwise binary with broadcasting', () => {
  const cases: Array<[number[], number[]]> = [
    [[5], [5]],
    [[2, 3, 7], [7]],
    [[2, 320, 3, 5], [1, 320, 1, 1]],
    [[1, 4, 1], [3, 1, 5]],
    [[2, 1, 3, 1, 2, 1, 3, 2], [1, 2, 1, 3, 1, 2, 1, 1]],
  ];
  for (const [sa, sb] of cases) {
    it(`${JSON.stringify(sa)} with ${JSON.stringify(sb)}`, async () => {
      const na = sa.reduce((p, d) => p * d, 1);
      const nb = sb.reduce((p, d) => p * d, 1);
      const da = randomData(na, na);
      const db = randomData(nb, nb + 1, 0.5, 2);
      const a = engine.tensor(da, sa);
      const b = engine.tensor(db, sb);
      const { result } = await runProgram(engine, 'binary', (rec) => ({
        add: ew.add(rec, a, b),
        sub: ew.sub(rec, a, b),
        mul: ew.mul(rec, a, b),
        div: ew.div(rec, a, b),
        sa: ew.scaleAdd(rec, a, 0.5, b, -2),
        max: ew.maximum(rec, a, b),
        addSilu: ew.add(rec, a, b, { act: 'silu' }),
      }));
      const ref = (f: (x: number, y: number) => number) => broadcastRef(da, sa, db, sb, f);
      expect(result.add.shape).toEqual(ref((x, y) => x + y).shape);
      expectClose(await result.add.read(), ref((x, y) => x + y).out, F32_TOL, 'add');
      expectClose(await result.sub.read(), ref((x, y) => x - y).out, F32_TOL, 'sub');
      expectClose(await result.mul.read(), ref((x, y) => x * y).out, F32_TOL, 'mul');
      expectClose(await result.div.read(), ref((x, y) => x / y).out, F32_TOL, 'div');
      expectClose(await result.sa.read(), ref((x, y) => 0.5 * x - 2 * y).out, F32_TOL, 'scaleAdd');
      expectClose(await result.max.read(), ref((x, y) => Math.max(x, y)).out, F32_TOL, 'max');
      expectClose(await result.addSilu.read(), ref((x, y) => (x + y) / (1 + Math.exp(-(x + y)))).out, F32_TOL, 'add+silu');
    });
  }

  it('rejects shapes that do not broadcast, naming both', async () => {
    const a = engine.zeros([2, 3]);
    const b = engine.zeros([4]);
    await expect(runProgram(engine, 'bad', (rec) => ew.add(rec, a, b))).rejects.toThrow(/\[2, 3\] and \[4\]/);
    // the failed recording left no program open
    expect(engine.activeRecorder).toBeNull();
  });
});

describe('geglu', () => {
  it('splits hidden/gate in diffusers order on awkward sizes', async () => {
    for (const [rows, d] of [[1, 1], [3, 5], [77, 320]] as const) {
      const data = randomData(rows * 2 * d, rows + d, -4, 4);
      const x = engine.tensor(data, [rows, 2 * d]);
      const { result } = await runProgram(engine, 'geglu', (rec) => ew.geglu(rec, x));
      expect(result.shape).toEqual([rows, d]);
      expectClose(await result.read(), gegluRef(data, rows, d), { atol: 1e-6, rtol: 1e-5 }, `geglu ${rows}x${d}`);
    }
  });
});

describe('f16 storage', () => {
  it('unary, binary and geglu in f16 (needs shader-f16)', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 elementwise: this adapter has no shader-f16');
      ctx.skip();
    }
    const data = randomData(1000, 9, -4, 4);
    const x = engine.tensor(data, [10, 100], 'f16');
    const b = engine.tensor(randomData(100, 10), [100], 'f16');
    const xr = await x.read(); // f16-rounded inputs are the reference's inputs
    const br = await b.read();
    const { result } = await runProgram(engine, 'f16', (rec) => [ew.silu(rec, x), ew.add(rec, x, b), ew.geglu(rec, x)]);
    expect(result[0]!.dtype).toBe('f16');
    expectClose(await result[0]!.read(), unaryRef(xr, 'silu'), F16_TOL, 'silu f16');
    expectClose(await result[1]!.read(), broadcastRef(xr, [10, 100], br, [100], (p, q) => p + q).out, F16_TOL, 'add f16');
    expectClose(await result[2]!.read(), gegluRef(xr, 10, 50), F16_TOL, 'geglu f16');
  });
});

describe('collapseDims', () => {
  it('merges dims both operands walk contiguously and drops size-1 dims', () => {
    // same shapes: one dim
    expect(ew.collapseDims([2, 3, 4], [12, 4, 1], [12, 4, 1])).toEqual({ dims: [24], sa: [1], sb: [1] });
    // per-channel bias [1, C, 1, 1] on [N, C, H, W]: H and W merge, C stays, N stays
    expect(ew.collapseDims([2, 5, 3, 4], [60, 12, 4, 1], [0, 1, 0, 0])).toEqual({ dims: [2, 5, 12], sa: [60, 12, 1], sb: [0, 1, 0] });
    // scalar broadcast: one dim, stride 0
    expect(ew.collapseDims([2, 3], [3, 1], [0, 0])).toEqual({ dims: [6], sa: [1], sb: [0] });
    expect(ew.collapseDims([1, 1], [1, 1], [1, 1])).toEqual({ dims: [1], sa: [0], sb: [0] });
  });
});

// torch.clamp, torch.maximum and torch.minimum propagate NaN, and unbounded unary ops keep +-Inf.
// Expected values are written out by hand (PyTorch semantics), not produced by our references.
describe('NaN and Inf in elementwise ops', () => {
  it('clamp(NaN, lo, hi) is NaN; clamp(+-Inf) is the bound', async () => {
    const x = engine.tensor(new Float32Array([NaN, -Infinity, Infinity, 0.25, -7, 7]), [6]);
    const { result } = await runProgram(engine, 'clamp-nan', (rec) => ew.clamp(rec, x, -1, 1));
    expect(Array.from(await result.read())).toEqual([NaN, -1, 1, 0.25, -1, 1]);
    x.dispose();
    result.dispose();
  });

  it('a NaN with a payload and a negative sign stays NaN through clamp', async () => {
    const data = new Float32Array(3);
    new Uint32Array(data.buffer).set([0xff800001, 0x7fc00000, 0x3f800000]);
    const x = engine.tensor(data, [3]);
    const { result } = await runProgram(engine, 'clamp-nan-bits', (rec) => ew.clamp(rec, x, -0.5, 0.5));
    expect(Array.from(await result.read())).toEqual([NaN, NaN, 0.5]);
    x.dispose();
    result.dispose();
  });

  it('scale and copy keep +-Inf and NaN (no hidden clamp to f32 max)', async () => {
    const x = engine.tensor(new Float32Array([Infinity, -Infinity, NaN, 2]), [4]);
    const { result } = await runProgram(engine, 'inf', (rec) => [ew.scale(rec, x, 2), ew.copy(rec, x), ew.silu(rec, x)]);
    expect(Array.from(await result[0]!.read())).toEqual([Infinity, -Infinity, NaN, 4]);
    expect(Array.from(await result[1]!.read())).toEqual([Infinity, -Infinity, NaN, 2]);
    expect(Number.isNaN((await result[2]!.read())[2])).toBe(true);
    x.dispose();
  });

  it('relu(NaN) is NaN (a NaN must not vanish inside a ReLU network such as SILO\'s CNN)', async () => {
    const x = engine.tensor(new Float32Array([NaN, -1, 2, -Infinity, Infinity]), [5]);
    const { result } = await runProgram(engine, 'relu-nan', (rec) => ew.relu(rec, x));
    expect(Array.from(await result.read())).toEqual([NaN, 0, 2, 0, Infinity]);
    x.dispose();
  });

  it('maximum and minimum propagate NaN from either side', async () => {
    const a = engine.tensor(new Float32Array([NaN, 1, 2, -Infinity]), [4]);
    const b = engine.tensor(new Float32Array([0, NaN, 3, 5]), [4]);
    const { result } = await runProgram(engine, 'maxmin', (rec) => [ew.maximum(rec, a, b), ew.minimum(rec, a, b)]);
    expect(Array.from(await result[0]!.read())).toEqual([NaN, NaN, 3, 5]);
    expect(Array.from(await result[1]!.read())).toEqual([NaN, NaN, 2, -Infinity]);
    a.dispose();
    b.dispose();
  });

  it('clamp(NaN) is NaN in f16 storage', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 clamp NaN: this adapter has no shader-f16');
      ctx.skip();
    }
    const x = engine.tensor(new Float32Array([NaN, 3, -3]), [3], 'f16');
    const { result } = await runProgram(engine, 'clamp16', (rec) => ew.clamp(rec, x, -1, 1));
    expect(Array.from(await result.read())).toEqual([NaN, 1, -1]);
    x.dispose();
  });
});
