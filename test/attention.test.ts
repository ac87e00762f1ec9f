import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import type { DType } from '../src/engine/dtype.js';
import { runProgram } from '../src/engine/recorder.js';
import { attention, attentionNaive, type AttentionOptions } from '../src/engine/ops/attention.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { attentionRef } from './ref/attention.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// f32: the kernels sum at most 257 keys and 160 head elements in f32 (online softmax with exp2
// rescaling); outputs are convex combinations of v in [-1, 1], so 1e-5 absolute + relative.
const TOL: Tolerance = { atol: 1e-5, rtol: 1e-5 };
// Large logits (|score| up to ~500): an f32 dot product of such terms is off by ~1e-4 in the
// logit, which moves softmax weights by ~1e-4 relative; the reference is exact (f64).
const LARGE_TOL: Tolerance = { atol: 5e-4, rtol: 5e-4 };
// f16 storage: inputs are f16 (the reference gets the same rounded values), arithmetic is f32,
// and the output is rounded to f16 once: 2^-11 relative, so 1e-3 absolute at |out| <= 1.
const F16_TOL: Tolerance = { atol: 1e-3, rtol: 2e-3 };

interface Case {
  B: number;
  lq: number;
  lk: number;
  heads: number;
  D: number;
  causal?: boolean;
  scale?: number;
  /** q and k are uniform in [-mag, mag] (v in [-1, 1]). */
  mag?: number;
}

const label = (c: Case) =>
  `B${c.B} Lq${c.lq} Lk${c.lk} H${c.heads} D${c.D}${c.causal ? ' causal' : ''}${c.mag ? ` |qk|<=${c.mag}` : ''}${c.scale ? ` scale ${c.scale}` : ''}`;

function inputs(c: Case) {
  const hd = c.heads * c.D;
  const mag = c.mag ?? 1;
  return {
    q: randomData(c.B * c.lq * hd, 1 + c.lq * 7 + c.D, -mag, mag),
    k: randomData(c.B * c.lk * hd, 2 + c.lk * 5 + c.heads, -mag, mag),
    v: randomData(c.B * c.lk * hd, 3 + c.lk + c.D, -1, 1),
  };
}

type AttnFn = typeof attention;

/** Uploads the case's inputs in `dtype`, runs each op, returns outputs and the inputs as stored. */
async function run(c: Case, fns: AttnFn[], dtype: DType = 'f32') {
  const hd = c.heads * c.D;
  const data = inputs(c);
  const q = engine.tensor(data.q, [c.B, c.lq, hd], dtype);
  const k = engine.tensor(data.k, [c.B, c.lk, hd], dtype);
  const v = engine.tensor(data.v, [c.B, c.lk, hd], dtype);
  const opts: AttentionOptions = { heads: c.heads, causal: c.causal, scale: c.scale };
  const { result } = await runProgram(engine, 'attention test', (rec) => fns.map((f) => f(rec, q, k, v, opts)));
  const outs: Float32Array[] = [];
  for (const r of result) {
    expect(r.shape).toEqual([c.B, c.lq, hd]);
    expect(r.dtype).toBe(dtype);
    outs.push(await r.read());
    r.dispose();
  }
  const stored = { q: await q.read(), k: await k.read(), v: await v.read() };
  for (const t of [q, k, v]) t.dispose();
  return { outs, stored };
}

describe('attention (flash) vs the f64 reference', () => {
  const cases: Case[] = [
    { B: 2, lq: 1, lk: 1, heads: 1, D: 8 },
    { B: 2, lq: 1, lk: 77, heads: 8, D: 40 },
    { B: 2, lq: 7, lk: 100, heads: 3, D: 5 },
    { B: 2, lq: 77, lk: 77, heads: 8, D: 8, causal: true }, // CLIP-like causal self-attention
    { B: 2, lq: 100, lk: 77, heads: 8, D: 40 }, // cross-attention to 77 text tokens
    { B: 2, lq: 257, lk: 7, heads: 1, D: 80 },
    { B: 1, lq: 77, lk: 257, heads: 3, D: 160 },
    { B: 2, lq: 257, lk: 257, heads: 3, D: 40, causal: true },
    { B: 2, lq: 100, lk: 100, heads: 3, D: 5, causal: true },
    { B: 2, lq: 7, lk: 1, heads: 8, D: 80, scale: 0.3 },
  ];
  for (const c of cases) {
    it(label(c), async () => {
      const { outs, stored } = await run(c, [attention]);
      expectClose(outs[0]!, attentionRef(stored.q, stored.k, stored.v, c), TOL, label(c));
    });
  }

  it('large-magnitude logits stay finite and accurate (|score| up to ~500)', async () => {
    for (const c of [
      { B: 2, lq: 77, lk: 100, heads: 1, D: 8, mag: 13 },
      { B: 1, lq: 7, lk: 77, heads: 3, D: 5, mag: 15, causal: true },
    ] as Case[]) {
      const { outs, stored } = await run(c, [attention, attentionNaive]);
      const ref = attentionRef(stored.q, stored.k, stored.v, c);
      expect(outs[0]!.every(Number.isFinite), `${label(c)}: finite`).toBe(true);
      expectClose(outs[0]!, ref, LARGE_TOL, `${label(c)} flash`);
      expectClose(outs[1]!, ref, LARGE_TOL, `${label(c)} naive`);
    }
  });

  it('a larger case: 1024 queries x 1024 keys, 8 heads x 40 (rows sampled against the reference)', async () => {
    const c: Case = { B: 1, lq: 1024, lk: 1024, heads: 8, D: 40 };
    const { outs, stored } = await run(c, [attention]);
    const rows = [0, 1, 63, 64, 500, 1022, 1023];
    const ref = attentionRef(stored.q, stored.k, stored.v, { ...c, rows });
    const hd = c.heads * c.D;
    const pick = (a: Float32Array) => Float32Array.from(rows.flatMap((r) => [...a.subarray(r * hd, (r + 1) * hd)]));
    expectClose(pick(outs[0]!), pick(ref), TOL, label(c));
  });
});

describe('attention vs attentionNaive', () => {
  const cases: Case[] = [
    { B: 2, lq: 77, lk: 77, heads: 8, D: 40, causal: true },
    { B: 2, lq: 257, lk: 77, heads: 3, D: 80 },
    { B: 1, lq: 100, lk: 257, heads: 1, D: 5 },
  ];
  for (const c of cases) {
    it(label(c), async () => {
      const { outs, stored } = await run(c, [attention, attentionNaive]);
      expectClose(outs[0]!, outs[1]!, TOL, `${label(c)} flash vs naive`);
      expectClose(outs[1]!, attentionRef(stored.q, stored.k, stored.v, c), TOL, `${label(c)} naive vs reference`);
    });
  }
});

describe('attention with f16 storage', () => {
  for (const c of [
    { B: 2, lq: 100, lk: 77, heads: 8, D: 40 },
    { B: 2, lq: 77, lk: 77, heads: 3, D: 5, causal: true },
  ] as Case[]) {
    it(`${label(c)} (needs shader-f16)`, async (ctx) => {
      if (!engine.hasF16) {
        console.log('SKIP f16 attention: this adapter has no shader-f16');
        ctx.skip();
      }
      const { outs, stored } = await run(c, [attention, attentionNaive], 'f16');
      const ref = attentionRef(stored.q, stored.k, stored.v, c);
      expectClose(outs[0]!, ref, F16_TOL, `${label(c)} flash f16`);
      expectClose(outs[1]!, ref, F16_TOL, `${label(c)} naive f16`);
    });
  }
});

describe('attention argument errors', () => {
  it('names the op and the shapes', async () => {
    const q = engine.zeros([2, 7, 40]);
    const k = engine.zeros([2, 5, 40]);
    const kb = engine.zeros([1, 5, 40]);
    const k32 = engine.zeros([2, 5, 32]);
    const flat = engine.zeros([14, 40]);
    const bad = async (fn: AttnFn, a: typeof q, b: typeof q, c: typeof q, opts: AttentionOptions, re: RegExp) => {
      await expect(runProgram(engine, 'bad', (rec) => fn(rec, a, b, c, opts))).rejects.toThrow(re);
      expect(engine.activeRecorder).toBeNull();
    };
    await bad(attention, q, k, k, { heads: 3 }, /attention: last dim 40 is not divisible by heads=3/);
    await bad(attention, q, kb, kb, { heads: 8 }, /attention: batch of q \(2\) and k\/v \(1\) differ/);
    await bad(attention, q, k, kb, { heads: 8 }, /attention: k and v shapes differ/);
    await bad(attention, q, k32, k32, { heads: 8 }, /attention: last dims of q \(40\) and k\/v \(32\) differ/);
    await bad(attention, flat, k, k, { heads: 8 }, /attention: q, k and v must be \[B, L, heads\*headDim\] \(got q \[14, 40\]/);
    await bad(attention, q, k, k, { heads: 0 }, /heads must be a positive integer/);
    await bad(attentionNaive, q, k, k, { heads: 3 }, /attentionNaive: last dim 40 is not divisible by heads=3/);
    for (const t of [q, k, kb, k32, flat]) t.dispose();
  });

  it('attentionNaive refuses a score matrix larger than one binding', async () => {
    const q = engine.zeros([1, 16384, 8]);
    await expect(runProgram(engine, 'big', (rec) => attentionNaive(rec, q, q, q, { heads: 8 }))).rejects.toThrow(
      /attentionNaive: the score matrix \[8, 16384, 16384\] needs 8589934592 bytes, over the adapter's maxStorageBufferBindingSize/,
    );
    q.dispose();
  });

  it('f16 and f32 inputs cannot be mixed', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 dtype mismatch: this adapter has no shader-f16');
      ctx.skip();
    }
    const q = engine.zeros([1, 4, 8], 'f16');
    const k = engine.zeros([1, 4, 8]);
    await expect(runProgram(engine, 'mixed', (rec) => attention(rec, q, k, k, { heads: 1 }))).rejects.toThrow(/attention: dtypes differ \(q f16, k f32, v f32\)/);
    q.dispose();
    k.dispose();
  });
});
