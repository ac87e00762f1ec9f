// Adam / AdamW (kernels/optim.wgsl, src/engine/ops/adam.ts, src/solvers/training/adam.ts) against a CPU
// reference of torch.optim's update in f64: several steps on sizes that are not multiples of the
// workgroup, Adam's L2 weight decay and AdamW's decoupled decay, a learning-rate schedule, a gradient
// scale, clipping by the global norm (triggered and not), and the refusals.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import type { Tensor } from '../src/engine/tensor.js';
import { adamStep } from '../src/engine/ops/adam.js';
import { Adam } from '../src/solvers/training/adam.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';
import { adamRefStep, clipFactorRef, type AdamRefOptions, type AdamRefState } from './ref/adam.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const TOL = { atol: 1e-7, rtol: 2e-6 };

function refState(p0: Float32Array): AdamRefState {
  return { p: Float64Array.from(p0), m: new Float64Array(p0.length), v: new Float64Array(p0.length) };
}

/** Gradients for step t: random, with exact zeros and a few large values mixed in. */
function grad(n: number, t: number, seed: number): Float32Array {
  const g = randomData(n, seed * 10 + t, -2, 2);
  for (let i = t; i < n; i += 97) g[i] = 0;
  for (let i = 3 * t; i < n; i += 211) g[i] = 50 * (i % 2 ? 1 : -1);
  return g;
}

describe('adamStep (one fused dispatch per parameter)', () => {
  const cases: [string, AdamRefOptions][] = [
    ['Adam, lr 1e-4 (SILO CNN training)', { lr: 1e-4 }],
    ['Adam with L2 weight decay 0.1, lr 1e-2, betas (0.8, 0.99), eps 1e-6', { lr: 1e-2, weightDecay: 0.1, beta1: 0.8, beta2: 0.99, eps: 1e-6 }],
    ['AdamW, weight decay 0.05, lr 2e-4', { lr: 2e-4, weightDecay: 0.05, decoupled: true }],
  ];
  for (const [what, o] of cases) {
    it(`${what}: p, m and v after 3 steps on 4099 elements`, async () => {
      const n = 4099;
      const p0 = randomData(n, 5, -1, 1);
      const ref = refState(p0);
      const ts = { p: engine.tensor(p0, [n], 'f32', 'p'), m: engine.zeros([n], 'f32', 'm'), v: engine.zeros([n], 'f32', 'v') };
      try {
        for (let t = 1; t <= 3; t++) {
          const g = grad(n, t, 1);
          const gt = engine.tensor(g, [n], 'f32', 'g');
          await runProgram(engine, `adam ${t}`, (rec) =>
            adamStep(rec, ts.p, gt, ts.m, ts.v, { lr: o.lr, beta1: o.beta1 ?? 0.9, beta2: o.beta2 ?? 0.999, eps: o.eps ?? 1e-8, weightDecay: o.weightDecay ?? 0, decoupled: !!o.decoupled, step: t }),
          );
          gt.dispose();
          adamRefStep(ref, g, t, o);
          expectClose(await ts.m.read(), ref.m, TOL, `m after step ${t}`);
          expectClose(await ts.v.read(), ref.v, TOL, `v after step ${t}`);
          expectClose(await ts.p.read(), ref.p, TOL, `p after step ${t}`);
        }
        // The update moved every parameter with a nonzero gradient history by about lr per step (Adam's
        // first step is lr g / (|g| + eps)).
        const moved = (await ts.p.read()).map((v, i) => Math.abs(v - p0[i]!));
        expect(Math.max(...moved)).toBeGreaterThan(o.lr);
      } finally {
        for (const t of Object.values(ts)) t.dispose();
      }
    });
  }

  it('refuses mismatched tensors and hyperparameters torch refuses, naming them', () => {
    const p = engine.zeros([3, 5], 'f32', 'w');
    const ok = engine.zeros([3, 5], 'f32', 'g');
    const bad = engine.zeros([5, 3], 'f32', 'g_t');
    const base = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupled: false, step: 1 };
    const rec = { engine } as never; // every refusal comes before anything is recorded
    try {
      expect(() => adamStep(rec, p, bad, ok, ok, base)).toThrow(/adam: the gradient g_t is \[5, 3\], the parameter w \[3, 5\]/);
      expect(() => adamStep(rec, p, ok, ok, ok, { ...base, beta1: 1 })).toThrow(/beta1 1 must be in \[0, 1\)/);
      expect(() => adamStep(rec, p, ok, ok, ok, { ...base, beta2: -0.1 })).toThrow(/beta2 -0.1 must be in \[0, 1\)/);
      expect(() => adamStep(rec, p, ok, ok, ok, { ...base, lr: Number.NaN })).toThrow(/learning rate NaN must be finite/);
      expect(() => adamStep(rec, p, ok, ok, ok, { ...base, step: 0 })).toThrow(/step 0 must be an integer >= 1/);
      expect(() => adamStep(rec, p, ok, ok, ok, { ...base, decoupled: true, weightDecay: -1 })).toThrow(/adamw: weight decay -1 must be finite and >= 0/);
      expect(() => adamStep(rec, p, ok, ok, ok, { ...base, clip: { norms: ok, maxNorm: 1 } })).toThrow(/clipping norms g must be an f32 vector/);
    } finally {
      for (const t of [p, ok, bad]) t.dispose();
    }
  });
});

describe('Adam optimizer', () => {
  const shapes = [[7, 13], [5], [2, 3, 3, 3]];
  const sizes = shapes.map((s) => s.reduce((a, b) => a * b, 1));

  async function run(opts: { maxGradNorm?: number; gradScale: number; decoupled?: boolean; weightDecay?: number }) {
    const schedule = (t: number) => 1e-2 * 0.5 ** (t - 1);
    const p0 = sizes.map((n, i) => randomData(n, 40 + i, -1, 1));
    const params = shapes.map((s, i) => ({ name: `layer${i}.weight`, tensor: engine.tensor(p0[i]!, s, 'f32', `layer${i}.weight`) }));
    const opt = new Adam(engine, params, { lr: schedule, maxGradNorm: opts.maxGradNorm, decoupled: opts.decoupled, weightDecay: opts.weightDecay });
    const refs = p0.map(refState);
    const factors: number[] = [];
    try {
      for (let t = 1; t <= 3; t++) {
        const gs = sizes.map((n, i) => grad(n, t, 7 + i));
        const gts = gs.map((g, i) => engine.tensor(g, shapes[i]!, 'f32', `grad${i}`));
        await runProgram(engine, `opt ${t}`, (rec) => opt.update(rec, gts, { gradScale: opts.gradScale }));
        for (const g of gts) g.dispose();
        const scaled = gs.map((g) => Array.from(g, (x) => x * opts.gradScale));
        const f = opts.maxGradNorm ? clipFactorRef(scaled, opts.maxGradNorm) : 1;
        factors.push(f);
        refs.forEach((r, i) => adamRefStep(r, scaled[i]!.map((x) => x * f), t, { lr: schedule(t), decoupled: opts.decoupled, weightDecay: opts.weightDecay }));
      }
      expect(opt.step).toBe(3);
      for (const [i, p] of params.entries()) {
        expectClose(await p.tensor.read(), refs[i]!.p, TOL, `${p.name} after 3 steps`);
        expectClose(await opt.v[i]!.read(), refs[i]!.v, TOL, `${p.name} second moment`);
      }
      return factors;
    } finally {
      opt.dispose();
      for (const p of params) p.tensor.dispose();
    }
  }

  it('three steps with a halving learning-rate schedule and a gradient scale of 0.25, no clipping', async () => {
    await run({ gradScale: 0.25 });
  });

  it('clipping by the global norm of all gradients: triggered (max norm 0.5) and not (1e6)', async () => {
    const clipped = await run({ gradScale: 0.25, maxGradNorm: 0.5 });
    expect(Math.max(...clipped)).toBeLessThan(0.2); // the clip really acted
    const free = await run({ gradScale: 0.25, maxGradNorm: 1e6 });
    expect(free).toEqual([1, 1, 1]);
  });

  it('AdamW with weight decay 0.1 and clipping', async () => {
    await run({ gradScale: 1, maxGradNorm: 2, decoupled: true, weightDecay: 0.1 });
  });

  it('refuses what it cannot train, naming the parameter', async () => {
    const w = engine.zeros([4], 'f32', 'w');
    try {
      expect(() => new Adam(engine, [])).toThrow(/Adam: no parameters/);
      expect(() => new Adam(engine, [{ name: 'w', tensor: w }, { name: 'w', tensor: w }])).toThrow(/"w" is listed twice/);
      expect(() => new Adam(engine, [{ name: 'w', tensor: w }], { maxGradNorm: 0 })).toThrow(/max gradient norm 0/);
      const opt = new Adam(engine, [{ name: 'w', tensor: w }], { lr: (t) => (t > 1 ? -1 : 1e-3) });
      const g = engine.zeros([5], 'f32', 'gw');
      const g4 = engine.zeros([4], 'f32', 'gw4');
      try {
        await expect(runProgram(engine, 'bad', (rec) => opt.update(rec, [g]))).rejects.toThrow(/the gradient of "w" is f32 \[5\], the parameter f32 \[4\]/);
        await expect(runProgram(engine, 'bad', (rec) => opt.update(rec, [g4, g4]))).rejects.toThrow(/2 gradients for 1 parameters/);
        await runProgram(engine, 'ok', (rec) => opt.update(rec, [g4]));
        await expect(runProgram(engine, 'bad lr', (rec) => opt.update(rec, [g4]))).rejects.toThrow(/Adam step 2: learning rate -1/);
        expect(opt.step).toBe(1); // a refused step is not counted
      } finally {
        opt.dispose();
        g.dispose();
        g4.dispose();
      }
    } finally {
      w.dispose();
    }
  });
});
