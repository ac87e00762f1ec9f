import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { attentionBackward } from '../src/engine/ops/attention-backward.js';
import { getEngine, randomData, expectClose, type Tolerance } from './helpers/engine.js';
import { attentionBackwardRef, attentionForward64 } from './ref/attention-backward.js';
import type { AttentionRefArgs } from './ref/attention.js';
import { dot } from './ref/elementwise-backward.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

// GPU vs the f64 VJP on data uniform in [-1, 1] (scores |s| <= sqrt(D)): each gradient element sums up
// to 77 terms of magnitude <= ~sqrt(D) * scale; f32 dots, exps and the logsumexp (relative ~1e-6)
// give absolute errors ~1e-6 on gradients of O(1): 2e-5 absolute plus 1e-4 relative.
const TOL: Tolerance = { atol: 2e-5, rtol: 1e-4 };

interface Case {
  lq: number;
  lk: number;
  heads: number;
  D: number;
  causal: boolean;
  scale?: number;
}

const CASES: Case[] = [
  { lq: 1, lk: 1, heads: 1, D: 5, causal: false },
  { lq: 7, lk: 77, heads: 3, D: 8, causal: false },
  { lq: 77, lk: 7, heads: 1, D: 40, causal: true },
  { lq: 77, lk: 77, heads: 3, D: 40, causal: true },
  { lq: 7, lk: 7, heads: 3, D: 5, causal: true, scale: 0.7 },
  { lq: 1, lk: 77, heads: 1, D: 8, causal: true },
  { lq: 77, lk: 1, heads: 3, D: 5, causal: false },
  { lq: 7, lk: 77, heads: 1, D: 40, causal: false, scale: 0.05 },
  // D % 4 == 0 takes the tiled kernels (8 threads x 4 rows per workgroup): SD's head dims, row counts
  // off the 32-row tiles, causal with more queries than keys and the reverse, a 3-chunk head.
  { lq: 33, lk: 45, heads: 2, D: 80, causal: false },
  { lq: 45, lk: 33, heads: 1, D: 160, causal: true },
  { lq: 33, lk: 70, heads: 2, D: 12, causal: true },
  { lq: 3, lk: 2, heads: 2, D: 4, causal: true, scale: 1.3 },
];

const label = (c: Case) => `Lq=${c.lq} Lk=${c.lk} H=${c.heads} D=${c.D}${c.causal ? ' causal' : ''}${c.scale ? ` scale ${c.scale}` : ''}`;

describe('attention backward', () => {
  for (const [n, c] of CASES.entries()) {
    it(`batch 2, ${label(c)}`, async () => {
      const B = 2;
      const hd = c.heads * c.D;
      const qd = randomData(B * c.lq * hd, 10 * n + 1);
      const kd = randomData(B * c.lk * hd, 10 * n + 2);
      const vd = randomData(B * c.lk * hd, 10 * n + 3);
      const gd = randomData(B * c.lq * hd, 10 * n + 4);
      const q = engine.tensor(qd, [B, c.lq, hd]);
      const k = engine.tensor(kd, [B, c.lk, hd]);
      const v = engine.tensor(vd, [B, c.lk, hd]);
      const g = engine.tensor(gd, [B, c.lq, hd]);
      const { result } = await runProgram(engine, 'attnb', (rec) =>
        attentionBackward(rec, q, k, v, g, { heads: c.heads, causal: c.causal, scale: c.scale }),
      );
      const ref = attentionBackwardRef(qd, kd, vd, gd, { B, ...c });
      expectClose(await result.dq.read(), ref.dq, TOL, `${label(c)} dq`);
      expectClose(await result.dk.read(), ref.dk, TOL, `${label(c)} dk`);
      expectClose(await result.dv.read(), ref.dv, TOL, `${label(c)} dv`);
      for (const t of [q, k, v, g, result.dq, result.dk, result.dv]) t.dispose();
    });
  }

  it('rejects f16 and a gradOut of the wrong shape', async () => {
    const q = engine.tensor(randomData(12, 1), [1, 2, 6]);
    const g = engine.tensor(randomData(6, 1), [1, 1, 6]);
    await expect(runProgram(engine, 'bad', (rec) => attentionBackward(rec, q, q, q, g, { heads: 2 }))).rejects.toThrow(/gradOut f32 \[1, 1, 6\]/);
    q.dispose();
    g.dispose();
  });
});

describe('attention reference VJP', () => {
  it('is the adjoint of the f64 forward (central differences along q, k, v together)', () => {
    // f64 central differences, h = 1e-5: truncation ~h^2 * |f'''|, cancellation ~1e-16 / h.
    const h = 1e-5;
    for (const c of [CASES[1]!, CASES[2]!, CASES[4]!]) {
      const a: AttentionRefArgs = { B: 2, ...c };
      const hd = c.heads * c.D;
      const nq = 2 * c.lq * hd;
      const nk = 2 * c.lk * hd;
      const [q, k, v, g, uq, uk, uv] = [nq, nk, nk, nq, nq, nk, nk].map((n, s) => randomData(n, 50 + s));
      const ref = attentionBackwardRef(q!, k!, v!, g!, a);
      const shift = (x: Float32Array, u: Float32Array, e: number) => Float64Array.from(x, (t, i) => t + e * u[i]!);
      const fd =
        (dot(g!, attentionForward64(shift(q!, uq!, h), shift(k!, uk!, h), shift(v!, uv!, h), a)) -
          dot(g!, attentionForward64(shift(q!, uq!, -h), shift(k!, uk!, -h), shift(v!, uv!, -h), a))) /
        (2 * h);
      const adj = dot(ref.dq, uq!) + dot(ref.dk, uk!) + dot(ref.dv, uv!);
      expect(Math.abs(fd - adj), `${label(c)}: fd ${fd} vs ${adj}`).toBeLessThan(1e-7 * (1 + Math.abs(fd)));
    }
  });
});
