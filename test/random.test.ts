import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { philox4x32, philoxBits, uniformCPU, normalCPU, STREAM_NORMAL } from '../src/engine/random.js';
import { randomUniform, randomNormal, randomBits } from '../src/engine/ops/random.js';
import { f16BitsToF32, f32ToF16Bits } from '../src/engine/dtype.js';
import { getEngine, expectClose, randomData } from './helpers/engine.js';
import { philoxRef, normalCdf } from './ref/random.js';
import { erf } from './ref/math.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const hex = (w: ArrayLike<number>) => Array.from(w, (x) => (x >>> 0).toString(16).padStart(8, '0')).join(' ');

// Random123 kat_vectors, philox4x32 with 10 rounds: counter, key, expected output.
const KAT: Array<[number[], number[], string]> = [
  [[0, 0, 0, 0], [0, 0], '6627e8d5 e169c58d bc57ac4c 9b00dbd8'],
  [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], '408f276d 41c83b0e a20bc7c6 6d5451fd'],
  [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], 'd16cfe09 94fdcceb 5001e420 24126ea1'],
];

const u64 = (lo: number, hi: number) => (BigInt(hi) << 32n) | BigInt(lo);

async function readBits(t: { buffer: GPUBuffer; size: number; name: string }): Promise<Uint32Array> {
  const raw = await engine.readBytes(t.buffer, t.size * 4, t.name);
  return new Uint32Array(raw.buffer, 0, t.size);
}

describe('Philox4x32-10 in TypeScript', () => {
  it('matches the published known-answer vectors', () => {
    for (const [ctr, key, want] of KAT) expect(hex(philox4x32(ctr, key))).toBe(want);
  });

  it('matches an independent BigInt implementation on 2000 random counters and keys', () => {
    const r = randomData(12000, 77, 0, 1);
    for (let i = 0; i < 2000; i++) {
      const w = Array.from(r.subarray(6 * i, 6 * i + 6), (x) => Math.floor(x * 2 ** 32) >>> 0);
      expect(hex(philox4x32(w.slice(0, 4), w.slice(4)))).toBe(hex(philoxRef(w.slice(0, 4), w.slice(4))));
    }
  });

  it('philoxBits lays element i at word i % 4 of block i / 4 with counter (block, offset lo, offset hi, stream)', () => {
    const seed = u64(0x12345678, 0x9abcdef0);
    const offset = u64(0xdeadbeef, 7);
    const bits = philoxBits(9, seed, offset, 3);
    const block2 = philox4x32([2, 0xdeadbeef, 7, 3], [0x12345678, 0x9abcdef0]);
    expect(bits[8]).toBe(block2[0]);
    expect(hex(bits.subarray(4, 8))).toBe(hex(philox4x32([1, 0xdeadbeef, 7, 3], [0x12345678, 0x9abcdef0])));
    // a number seed equals the same bigint seed
    expect(hex(philoxBits(5, 2 ** 40 + 5))).toBe(hex(philoxBits(5, 2n ** 40n + 5n)));
  });

  it('rejects invalid seeds and offsets', () => {
    expect(() => uniformCPU(4, -1)).toThrow(/seed must be a non-negative integer/);
    expect(() => uniformCPU(4, 1, 0.5)).toThrow(/offset must be a non-negative integer/);
    expect(() => uniformCPU(4, 2n ** 64n)).toThrow(/seed must be in \[0, 2\^64\)/);
  });
});

describe('Philox on the GPU', () => {
  it('reproduces the known-answer vectors (WGSL 16-bit-half multiply)', async () => {
    const { result } = await runProgram(engine, 'kat', (rec) =>
      KAT.map(([c, k]) => randomBits(rec, 4, u64(k[0]!, k[1]!), { firstBlock: c[0], offset: u64(c[1]!, c[2]!), stream: c[3] })),
    );
    for (let i = 0; i < KAT.length; i++) expect(hex(await readBits(result[i]!))).toBe(KAT[i]![2]);
  });

  it('raw words equal the TypeScript words bit for bit (sizes 1, 7, 1031, 65543; 64-bit seeds and offsets)', async () => {
    const cases: Array<[number, bigint | number, bigint | number, number]> = [
      [1, 0, 0, 0],
      [7, 42, 3, 1],
      [1031, 2n ** 64n - 1n, 2n ** 63n + 12345n, 0],
      [65543, 123456789012345, 2 ** 52, 7],
    ];
    const { result } = await runProgram(engine, 'bits', (rec) => cases.map(([n, s, o, st]) => randomBits(rec, n, s, { offset: o, stream: st })));
    for (let i = 0; i < cases.length; i++) {
      const [n, s, o, st] = cases[i]!;
      const want = philoxBits(n, s, o, st);
      const got = await readBits(result[i]!);
      let mismatches = 0;
      for (let j = 0; j < n; j++) if (got[j] !== want[j]) mismatches++;
      expect(mismatches, `n=${n}`).toBe(0);
    }
  });
});

describe('randomUniform', () => {
  it('equals uniformCPU bit for bit on sizes 1, 7, 1031 and an SD latent [2, 4, 9, 9]', async () => {
    const shapes = [[1], [7], [1031], [2, 4, 9, 9]];
    const { result } = await runProgram(engine, 'uniform', (rec) => shapes.map((s, i) => randomUniform(rec, s, 1000 + i, { offset: i })));
    for (let i = 0; i < shapes.length; i++) {
      const got = await result[i]!.read();
      const want = uniformCPU(got.length, 1000 + i, i);
      expect(Array.from(got), `shape ${shapes[i]}`).toEqual(Array.from(want));
      expect(Math.min(...got)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...got)).toBeLessThan(1);
    }
  });

  it('same seed and offset give the same stream across shapes; a smaller draw is a prefix', async () => {
    const { result } = await runProgram(engine, 'shapes', (rec) => [
      randomUniform(rec, [3, 7, 5], 9, { offset: 2 }),
      randomUniform(rec, [105], 9, { offset: 2 }),
      randomUniform(rec, [1, 1, 105, 1], 9, { offset: 2 }),
      randomUniform(rec, [13], 9, { offset: 2 }),
    ]);
    const a = Array.from(await result[0]!.read());
    expect(Array.from(await result[1]!.read())).toEqual(a);
    expect(Array.from(await result[2]!.read())).toEqual(a);
    expect(Array.from(await result[3]!.read())).toEqual(a.slice(0, 13));
  });

  it('different seeds, offsets and distributions give unrelated streams', async () => {
    const n = 4096;
    const { result } = await runProgram(engine, 'streams', (rec) => [
      randomUniform(rec, [n], 5),
      randomUniform(rec, [n], 6),
      randomUniform(rec, [n], 5, { offset: 1 }),
      randomUniform(rec, [n], 5, { offset: 2n ** 32n }), // offset high word only
    ]);
    const xs = await Promise.all(result.map((t) => t.read()));
    // Pearson correlation of independent uniforms: sd 1/sqrt(n) = 0.0156; bound 5 sd.
    const corr = (p: Float32Array, q: Float32Array) => {
      let sp = 0, sq = 0, spq = 0, spp = 0, sqq = 0;
      for (let i = 0; i < n; i++) {
        sp += p[i]!; sq += q[i]!; spq += p[i]! * q[i]!; spp += p[i]! ** 2; sqq += q[i]! ** 2;
      }
      return (spq - (sp * sq) / n) / Math.sqrt((spp - sp ** 2 / n) * (sqq - sq ** 2 / n));
    };
    for (let i = 0; i < xs.length; i++) {
      for (let j = i + 1; j < xs.length; j++) {
        let same = 0;
        for (let k = 0; k < n; k++) if (xs[i]![k] === xs[j]![k]) same++;
        expect(same, `streams ${i} and ${j}: equal elements`).toBeLessThan(4); // P(equal) = 2^-24 each
        expect(Math.abs(corr(xs[i]!, xs[j]!)), `streams ${i} and ${j}: correlation`).toBeLessThan(5 / Math.sqrt(n));
      }
    }
    // the normal stream uses stream id 1, not a transform of the uniform words
    expect(philoxBits(8, 5, 0, STREAM_NORMAL)[0]).not.toBe(philoxBits(8, 5, 0)[0]);
  });

  it('moments of 1e6 uniforms: mean 1/2 and variance 1/12 within 5 standard errors', async () => {
    const n = 1_000_000;
    const { result } = await runProgram(engine, 'umoments', (rec) => randomUniform(rec, [1000, 1000], 2024));
    const x = await result.read();
    let s = 0, s2 = 0, lo = 1, hi = 0;
    for (const v of x) {
      s += v; s2 += v * v; lo = Math.min(lo, v); hi = Math.max(hi, v);
    }
    const mean = s / n;
    const variance = s2 / n - mean * mean;
    expect(Math.abs(mean - 0.5)).toBeLessThan(5 * Math.sqrt(1 / 12 / n)); // SE 2.9e-4
    expect(Math.abs(variance - 1 / 12)).toBeLessThan(5 * Math.sqrt(1 / 180 / n)); // SE of var = sqrt((1/80 - 1/144)/n)
    expect(lo).toBeGreaterThanOrEqual(0);
    expect(hi).toBeLessThan(1);
    result.dispose();
  });

  it('f16 storage: 11-bit uniforms, exact in f16 and below 1 (needs shader-f16)', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 random: this adapter has no shader-f16');
      ctx.skip();
    }
    const { result } = await runProgram(engine, 'u16', (rec) => [
      randomUniform(rec, [1031], 3, { dtype: 'f16' }),
      randomNormal(rec, [1031], 3, { dtype: 'f16', mean: 0.5, std: 2 }),
    ]);
    expect(result[0]!.dtype).toBe('f16');
    expect(Array.from(await result[0]!.read())).toEqual(Array.from(uniformCPU(1031, 3, 0, 11)));
    // f16 output: the f32 value rounded once to binary16; allow one f16 ulp for log/sin/cos differences.
    const want = normalCPU(1031, 3, 0, 0.5, 2);
    const got = await result[1]!.read();
    const ulp = (v: number) => Math.max(2 ** -24, 2 ** (Math.floor(Math.log2(Math.abs(v) || 2 ** -14)) - 10));
    for (let i = 0; i < want.length; i++) {
      const w16 = f16BitsToF32(f32ToF16Bits(want[i]!));
      expect(Math.abs(got[i]! - w16), `element ${i}: ${got[i]} vs ${w16}`).toBeLessThanOrEqual(ulp(w16) * 1.01);
    }
  });
});

describe('randomNormal', () => {
  // GPU and CPU share the 24-bit inputs exactly. normalCPU uses f64 Math.log/cos/sin then rounds to
  // f32; the kernel evaluates its own f32 log and sin/cos polynomials (not the built-ins, whose
  // accuracy varies by adapter). Measured on 4e6 values: max |diff| 4.8e-7 (1 ulp at |z| ~ 4), max
  // relative 3.2e-7, identical on lavapipe and SwiftShader. Tolerance: 1e-6 absolute + 1e-6 relative.
  const TOL = { atol: 1e-6, rtol: 1e-6 };

  it('is close to normalCPU on sizes 1, 7, 1031 and [2, 4, 9, 9], with mean/std applied', async () => {
    const shapes = [[1], [7], [1031], [2, 4, 9, 9]];
    const { result } = await runProgram(engine, 'normal', (rec) => shapes.map((s, i) => randomNormal(rec, s, 77 + i, { offset: 5 })));
    for (let i = 0; i < shapes.length; i++) {
      const got = await result[i]!.read();
      expectClose(got, normalCPU(got.length, 77 + i, 5), TOL, `normal ${shapes[i]}`);
    }
    const { result: ms } = await runProgram(engine, 'normal-ms', (rec) => randomNormal(rec, [333], 1, { mean: -3, std: 0.25 }));
    expectClose(await ms.read(), normalCPU(333, 1, 0, -3, 0.25), TOL, 'mean -3 std 0.25');
  });

  it('1e6 normals: close to normalCPU, moments, Kolmogorov-Smirnov', async () => {
    const n = 1_000_000;
    const { result } = await runProgram(engine, 'nmoments', (rec) => randomNormal(rec, [n], 31337, { offset: 11 }));
    const x = await result.read();
    expectClose(x, normalCPU(n, 31337, 11), TOL, '1e6 normals vs normalCPU');
    let s = 0, s2 = 0, s3 = 0, s4 = 0;
    for (const v of x) {
      s += v; s2 += v * v; s3 += v * v * v; s4 += v * v * v * v;
    }
    const mean = s / n;
    const std = Math.sqrt(s2 / n - mean * mean);
    // Standard errors for N(0,1): mean 1/sqrt(n) = 1e-3, std 1/sqrt(2n) = 7.1e-4,
    // skewness sqrt(6/n) = 2.4e-3, excess kurtosis sqrt(24/n) = 4.9e-3. Bounds are 5 standard errors.
    expect(Math.abs(mean)).toBeLessThan(5e-3);
    expect(Math.abs(std - 1)).toBeLessThan(3.6e-3);
    expect(Math.abs(s3 / n)).toBeLessThan(1.2e-2);
    expect(Math.abs(s4 / n - 3)).toBeLessThan(2.5e-2);
    // KS distance against the normal CDF: sqrt(n) * D < 1.95 rejects only at p < 0.001.
    const sorted = Float64Array.from(x).sort();
    let d = 0;
    for (let i = 0; i < n; i++) {
      const c = normalCdf(sorted[i]!, erf);
      d = Math.max(d, Math.abs(c - i / n), Math.abs(c - (i + 1) / n));
    }
    expect(Math.sqrt(n) * d).toBeLessThan(1.95);
    expect(Number.isFinite(sorted[0]!) && Number.isFinite(sorted[n - 1]!)).toBe(true);
    result.dispose();
  });

  it('rejects bad arguments, naming the op', async () => {
    await expect(runProgram(engine, 'bad', (rec) => randomNormal(rec, [4], -2))).rejects.toThrow(/random_normal: seed must be a non-negative integer/);
    await expect(runProgram(engine, 'bad', (rec) => randomUniform(rec, [2, 1.5], 1))).rejects.toThrow(/random_uniform: invalid shape \[2, 1.5\]/);
    await expect(runProgram(engine, 'bad', (rec) => randomUniform(rec, [4], 1, { offset: -1 }))).rejects.toThrow(/random_uniform: offset/);
    expect(engine.activeRecorder).toBeNull();
  });
});
