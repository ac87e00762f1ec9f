// Kernel checks that run inside headless Chromium (the esbuild bundle of this file and the engine),
// each compared with the same CPU references the Node suite uses.

import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import * as ew from '../../src/engine/ops/elementwise.js';
import { conv2d, conv3x3Key } from '../../src/engine/ops/conv2d.js';
import { captureProgram } from '../../src/engine/replay.js';
import { mapScalar, stepParam, type Scalar } from '../../src/engine/step-value.js';
import { randomNormal } from '../../src/engine/ops/random.js';
import { Timesteps } from '../../src/models/unet/embeddings.js';
import { Tuning, loadTuning, opfsTuningStore } from '../../src/engine/tuning.js';
import { groupNorm, layerNorm } from '../../src/engine/ops/norm.js';
import { softmax } from '../../src/engine/ops/softmax.js';
import { softmaxBackward } from '../../src/engine/ops/softmax-backward.js';
import { l2Norm, maxAbs, nonFiniteCount, sum } from '../../src/engine/ops/reduce.js';
import { attention } from '../../src/engine/ops/attention.js';
import { matmul, linear } from '../../src/engine/ops/matmul.js';
import { matmulRef } from '../ref/matmul.js';
import { fetchSafetensors } from '../../src/formats/safetensors.js';
import { compare, type CheckItem } from '../../src/check/compare.js';
import { urlCaseFiles } from '../../src/check/files.js';
import { urlFolder } from '../../src/formats/folder.js';
import { loadModels } from '../../src/restore/models.js';
import { RestorationSession } from '../../src/restore/session.js';
import { runUNetCase } from '../../src/check/unet.js';
import { runClipTextMini } from '../../src/check/clip.js';
import { runDpsStep } from '../../src/check/steps.js';
import { resizeBilinear, upsampleNearest2x } from '../../src/engine/ops/resample.js';
import { concatChannels } from '../../src/engine/ops/layout.js';
import { timestepEmbedding } from '../../src/engine/ops/embedding.js';
import { unaryRef, broadcastRef, gegluRef } from '../ref/elementwise.js';
import { attentionRef } from '../ref/attention.js';
import { bilinearRef, nearest2xRef } from '../ref/resample.js';
import { concatRef } from '../ref/layout.js';
import { timestepEmbeddingRef } from '../ref/embedding.js';
import { conv2dRef } from '../ref/conv2d.js';
import { groupNormRef, layerNormRef } from '../ref/norm.js';
import { softmaxRef } from '../ref/softmax.js';
import { softmaxBackwardRef, softmaxForward64 } from '../ref/softmax-backward.js';
import { l2NormRef, sumRef } from '../ref/reduce.js';
import { Adam } from '../../src/solvers/training/adam.js';
import { adamRefStep, clipFactorRef } from '../ref/adam.js';

export interface CaseResult {
  name: string;
  ok: boolean;
  maxAbsDiff: number;
  worst: string;
  ms: number;
}

interface Case {
  name: string;
  atol: number;
  rtol: number;
  run: (engine: Engine) => Promise<{ actual: Float32Array; expected: ArrayLike<number> } | { items: CheckItem[] }>;
}

function data(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = lo + ((hi - lo) * s) / 4294967296;
  }
  return out;
}

/** Runs `fn` with the engine's workgroup reductions in their subgroup form (refused loudly where the browser cannot). */
async function withSubgroups<T>(engine: Engine, fn: () => Promise<T>): Promise<T> {
  const before = engine.subgroupReductions;
  engine.subgroupReductions = true;
  try {
    return await fn();
  } finally {
    engine.subgroupReductions = before;
  }
}

export const CASES: Case[] = [
  {
    name: 'silu 1031',
    atol: 1e-6,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(1031, 1, -6, 6);
      const t = engine.tensor(x, [1031]);
      const { result } = await runProgram(engine, 'silu', (rec) => ew.silu(rec, t));
      return { actual: await result.read(), expected: unaryRef(x, 'silu') };
    },
  },
  {
    name: 'gelu (erf) 777',
    atol: 1e-6,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(777, 2, -6, 6);
      const t = engine.tensor(x, [777]);
      const { result } = await runProgram(engine, 'gelu', (rec) => ew.gelu(rec, t));
      return { actual: await result.read(), expected: unaryRef(x, 'gelu') };
    },
  },
  {
    name: 'broadcast add [2,320,3,5] + [1,320,1,1]',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const a = data(2 * 320 * 15, 3);
      const b = data(320, 4);
      const ta = engine.tensor(a, [2, 320, 3, 5]);
      const tb = engine.tensor(b, [1, 320, 1, 1]);
      const { result } = await runProgram(engine, 'add', (rec) => ew.add(rec, ta, tb));
      return { actual: await result.read(), expected: broadcastRef(a, [2, 320, 3, 5], b, [1, 320, 1, 1], (p, q) => p + q).out };
    },
  },
  {
    name: 'geglu 77x(2*40)',
    atol: 1e-6,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(77 * 80, 5, -4, 4);
      const t = engine.tensor(x, [77, 80]);
      const { result } = await runProgram(engine, 'geglu', (rec) => ew.geglu(rec, t));
      return { actual: await result.read(), expected: gegluRef(x, 77, 40) };
    },
  },
];

CASES.push(
  {
    name: 'conv2d 3x3 pad 1, 2x5x9x7 -> 6 channels',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(2 * 5 * 9 * 7, 6);
      const w = data(6 * 5 * 9, 7, -0.3, 0.3);
      const b = data(6, 8);
      const tx = engine.tensor(x, [2, 5, 9, 7]);
      const tw = engine.tensor(w, [6, 5, 3, 3]);
      const tb = engine.tensor(b, [6]);
      const { result } = await runProgram(engine, 'conv', (rec) => conv2d(rec, tx, tw, tb, { padding: 1 }));
      return { actual: await result.read(), expected: conv2dRef(x, [2, 5, 9, 7], w, [6, 5, 3, 3], b, { padding: [1, 1] }).out };
    },
  },
  {
    name: 'conv2d 3x3 pad 1 as an implicit GEMM (conv3x3_igemm, chosen by the tuning table), 2x20x7x9 -> 70 + SiLU',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(2 * 20 * 7 * 9, 9);
      const w = data(70 * 20 * 9, 10, -0.1, 0.1);
      const b = data(70, 11);
      const tx = engine.tensor(x, [2, 20, 7, 9]);
      const tw = engine.tensor(w, [70, 20, 3, 3]);
      const tb = engine.tensor(b, [70]);
      const key = conv3x3Key(2, 20, 7, 9, 70, false);
      engine.tuning.set('conv3x3', key, 'igemm');
      try {
        const { result } = await runProgram(engine, 'conv igemm', (rec) => conv2d(rec, tx, tw, tb, { padding: 1, act: 'silu' }));
        if (!engine.lastSubmitted!.kernels.some((k) => k.includes('conv3x3_igemm'))) throw new Error('conv3x3_igemm did not run');
        return { actual: await result.read(), expected: conv2dRef(x, [2, 20, 7, 9], w, [70, 20, 3, 3], b, { padding: [1, 1], act: 'silu' }).out };
      } finally {
        engine.tuning.delete('conv3x3', key);
      }
    },
  },
  {
    name: 'conv2d 3x3 stride 2, 320 -> 320 at 5x5',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(320 * 25, 9);
      const w = data(320 * 320 * 9, 10, -0.02, 0.02);
      const tx = engine.tensor(x, [1, 320, 5, 5]);
      const tw = engine.tensor(w, [320, 320, 3, 3]);
      const { result } = await runProgram(engine, 'conv-s2', (rec) => conv2d(rec, tx, tw, undefined, { padding: 1, stride: 2 }));
      return { actual: await result.read(), expected: conv2dRef(x, [1, 320, 5, 5], w, [320, 320, 3, 3], null, { padding: [1, 1], stride: [2, 2] }).out };
    },
  },
  {
    name: 'group norm 32 groups + SiLU, 2x320x3x5',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(2 * 320 * 15, 11, -2, 3);
      const w = data(320, 12, 0.5, 1.5);
      const b = data(320, 13);
      const t = [engine.tensor(x, [2, 320, 3, 5]), engine.tensor(w, [320]), engine.tensor(b, [320])] as const;
      const { result } = await runProgram(engine, 'gn', (rec) => groupNorm(rec, t[0], 32, t[1], t[2], { act: 'silu' }));
      return { actual: await result.read(), expected: groupNormRef(x, [2, 320, 3, 5], 32, w, b, 1e-5, 'silu') };
    },
  },
  {
    name: 'layer norm over last dim, 77x48',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(77 * 48, 14, -3, 3);
      const w = data(48, 15, 0.5, 1.5);
      const b = data(48, 16);
      const t = [engine.tensor(x, [1, 77, 48]), engine.tensor(w, [48]), engine.tensor(b, [48])] as const;
      const { result } = await runProgram(engine, 'ln', (rec) => layerNorm(rec, t[0], [48], t[1], t[2]));
      return { actual: await result.read(), expected: layerNormRef(x, 48, w, b) };
    },
  },
  {
    name: 'softmax rows of 77 and large logits',
    atol: 1e-7,
    rtol: 2e-6,
    run: async (engine) => {
      const x = data(13 * 77, 17, -1e4, 1e4);
      const t = engine.tensor(x, [13, 77]);
      const { result } = await runProgram(engine, 'softmax', (rec) => softmax(rec, t));
      return { actual: await result.read(), expected: softmaxRef(x, 77) };
    },
  },
  {
    name: 'subgroup reductions: group norm, a workgroup per row, 2x64x9x7 / 4 groups + SiLU',
    atol: 1e-5,
    rtol: 1e-5,
    run: (engine) =>
      withSubgroups(engine, async () => {
        const x = data(2 * 64 * 63, 31, -2, 3);
        const w = data(64, 32, 0.5, 1.5);
        const b = data(64, 33);
        const t = [engine.tensor(x, [2, 64, 9, 7]), engine.tensor(w, [64]), engine.tensor(b, [64])] as const;
        const { result } = await runProgram(engine, 'gn-sg', (rec) => groupNorm(rec, t[0], 4, t[1], t[2], { act: 'silu', layout: 'group' }));
        return { actual: await result.read(), expected: groupNormRef(x, [2, 64, 9, 7], 4, w, b, 1e-5, 'silu') };
      }),
  },
  {
    name: 'subgroup reductions: layer norm, a workgroup per row, 5x1031',
    atol: 1e-5,
    rtol: 1e-5,
    run: (engine) =>
      withSubgroups(engine, async () => {
        const x = data(5 * 1031, 34, -3, 3);
        const w = data(1031, 35, 0.5, 1.5);
        const b = data(1031, 36);
        const t = [engine.tensor(x, [5, 1031]), engine.tensor(w, [1031]), engine.tensor(b, [1031])] as const;
        const { result } = await runProgram(engine, 'ln-sg', (rec) => layerNorm(rec, t[0], [1031], t[1], t[2], { layout: 'group' }));
        return { actual: await result.read(), expected: layerNormRef(x, 1031, w, b) };
      }),
  },
  {
    name: 'subgroup reductions: softmax, a workgroup per row, 7x1500 scaled',
    atol: 1e-7,
    rtol: 2e-6,
    run: (engine) =>
      withSubgroups(engine, async () => {
        const x = data(7 * 1500, 37, -20, 20);
        const t = engine.tensor(x, [7, 1500]);
        const { result } = await runProgram(engine, 'softmax-sg', (rec) => softmax(rec, t, { scale: 0.5, layout: 'group' }));
        return { actual: await result.read(), expected: softmaxRef(x, 1500, 0.5) };
      }),
  },
  {
    name: 'subgroup reductions: softmax backward, a workgroup per row, 6x333',
    atol: 2e-6,
    rtol: 1e-5,
    run: (engine) =>
      withSubgroups(engine, async () => {
        const y = Float32Array.from(softmaxForward64(data(6 * 333, 38, -3, 3), 333, 1.5));
        const g = data(6 * 333, 39);
        const [ty, tg] = [engine.tensor(y, [6, 333]), engine.tensor(g, [6, 333])];
        const { result } = await runProgram(engine, 'softmax-bw-sg', (rec) => softmaxBackward(rec, ty, tg, { scale: 1.5, layout: 'group' }));
        return { actual: await result.read(), expected: softmaxBackwardRef(y, g, 333, 1.5) };
      }),
  },
  {
    name: 'sum and L2 norm of 100003 values',
    atol: 0,
    rtol: 2e-6,
    run: async (engine) => {
      const x = data(100003, 18, 0, 1);
      const t = engine.tensor(x, [100003]);
      const { result } = await runProgram(engine, 'reduce', (rec) => [sum(rec, t), l2Norm(rec, t)]);
      const got = new Float32Array([(await result[0]!.read())[0]!, (await result[1]!.read())[0]!]);
      return { actual: got, expected: new Float32Array([sumRef(x), l2NormRef(x)]) };
    },
  },
  {
    // NaN/Inf propagation (PyTorch semantics, written out by hand): the comparison below cannot hold
    // NaN, so each value is mapped to a code (NaN -> 1000, +Inf -> 2000, -Inf -> 3000). The bad values
    // sit in the last element of a two-stage reduction, plus [3, NaN, 4] and [+Inf, -Inf].
    name: 'NaN and Inf propagate through sum, L2 norm, max |x|, clamp (SwiftShader)',
    atol: 0,
    rtol: 0,
    run: async (engine) => {
      const code = (v: number) => (Number.isNaN(v) ? 1000 : v === Infinity ? 2000 : v === -Infinity ? 3000 : v);
      const big = data(300_001, 28);
      big[big.length - 1] = NaN;
      const inputs = [new Float32Array([3, NaN, 4]), new Float32Array([Infinity, -Infinity]), big];
      const ts = inputs.map((x) => engine.tensor(x, [x.length]));
      const { result } = await runProgram(engine, 'reduce-nan', (rec) => [
        ...ts.flatMap((t) => [sum(rec, t), l2Norm(rec, t), maxAbs(rec, t), nonFiniteCount(rec, t)]),
        ew.clamp(rec, ts[0]!, -1, 1),
      ]);
      const actual: number[] = [];
      for (const r of result) actual.push(...Array.from(await r.read(), code));
      ts.forEach((t) => t.dispose());
      // per input: sum, l2, max|x|, count; then clamp([3, NaN, 4], -1, 1) = [1, NaN, 1]
      const expected = [1000, 1000, 1000, 1, 1000, 2000, 2000, 2, 1000, 1000, 1000, 1, 1, 1000, 1];
      return { actual: new Float32Array(actual), expected };
    },
  },
  {
    // A small graph recorded as one program: GroupNorm+SiLU -> conv3x3 -> GroupNorm+SiLU -> conv3x3,
    // plus the skip connection (the shape of a diffusers ResnetBlock2D without the time embedding).
    name: 'composite: ResNet block (2x32x6x5) as one program',
    atol: 1e-5,
    rtol: 1e-4,
    run: async (engine) => {
      const shape = [2, 32, 6, 5];
      const n = 2 * 32 * 30;
      const x = data(n, 19, -2, 2);
      const g1 = data(32, 20, 0.8, 1.2), b1 = data(32, 21, -0.1, 0.1);
      const w1 = data(32 * 32 * 9, 22, -0.06, 0.06), c1 = data(32, 23, -0.05, 0.05);
      const g2 = data(32, 24, 0.8, 1.2), b2 = data(32, 25, -0.1, 0.1);
      const w2 = data(32 * 32 * 9, 26, -0.06, 0.06), c2 = data(32, 27, -0.05, 0.05);
      const T = (v: Float32Array, s: number[]) => engine.tensor(v, s);
      const tx = T(x, shape);
      const [tg1, tb1, tw1, tc1, tg2, tb2, tw2, tc2] = [T(g1, [32]), T(b1, [32]), T(w1, [32, 32, 3, 3]), T(c1, [32]), T(g2, [32]), T(b2, [32]), T(w2, [32, 32, 3, 3]), T(c2, [32])];
      const { result, report } = await runProgram(engine, 'resnet-block', (rec) =>
        engine.tidy(() => {
          const h1 = conv2d(rec, groupNorm(rec, tx, 8, tg1, tb1, { act: 'silu' }), tw1!, tc1, { padding: 1 });
          const h2 = conv2d(rec, groupNorm(rec, h1, 8, tg2, tb2, { act: 'silu' }), tw2!, tc2, { padding: 1 });
          return ew.add(rec, tx, h2);
        }),
      );
      if (report.dispatches < 5) throw new Error(`expected one program of >= 5 dispatches, got ${report.dispatches}`);
      const r1 = conv2dRef(groupNormRef(x, shape, 8, g1, b1, 1e-5, 'silu'), shape, w1, [32, 32, 3, 3], c1, { padding: [1, 1] }).out;
      const r2 = conv2dRef(groupNormRef(r1, shape, 8, g2, b2, 1e-5, 'silu'), shape, w2, [32, 32, 3, 3], c2, { padding: [1, 1] }).out;
      return { actual: await result.read(), expected: x.map((v, i) => v + r2[i]!) };
    },
  },
);

CASES.push(
  {
    name: 'AdamW, 2 steps over 2 parameters (1031 and 5x7) with a schedule and global-norm clipping',
    atol: 1e-7,
    rtol: 2e-6,
    run: async (engine) => {
      const shapes = [[1031], [5, 7]];
      const p0 = [data(1031, 60), data(35, 61)];
      const params = p0.map((p, i) => ({ name: `w${i}`, tensor: engine.tensor(p, shapes[i]!) }));
      const lr = (t: number) => 1e-2 / t;
      const opt = new Adam(engine, params, { lr, decoupled: true, weightDecay: 0.1, maxGradNorm: 1 });
      const refs = p0.map((p) => ({ p: Float64Array.from(p), m: new Float64Array(p.length), v: new Float64Array(p.length) }));
      for (let t = 1; t <= 2; t++) {
        const gs = [data(1031, 70 + t, -3, 3), data(35, 80 + t, -3, 3)];
        const gts = gs.map((g, i) => engine.tensor(g, shapes[i]!));
        await runProgram(engine, 'adamw', (rec) => opt.update(rec, gts));
        for (const g of gts) g.dispose();
        const f = clipFactorRef(gs, 1);
        refs.forEach((r, i) => adamRefStep(r, Array.from(gs[i]!, (x) => x * f), t, { lr: lr(t), decoupled: true, weightDecay: 0.1 }));
      }
      const got = [...(await params[0]!.tensor.read()), ...(await params[1]!.tensor.read())];
      opt.dispose();
      for (const p of params) p.tensor.dispose();
      return { actual: new Float32Array(got), expected: [...refs[0]!.p, ...refs[1]!.p] };
    },
  },
  {
    name: 'matmul 77x130 @ 130x45 with bias + GELU',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const a = data(77 * 130, 50), b = data(130 * 45, 51, -0.1, 0.1), bias = data(45, 52);
      const ta = engine.tensor(a, [77, 130]), tb = engine.tensor(b, [130, 45]), tbias = engine.tensor(bias, [45]);
      const { result } = await runProgram(engine, 'mm', (rec) => matmul(rec, ta, tb, { bias: tbias, act: 'gelu' }));
      return { actual: await result.read(), expected: matmulRef(a, [77, 130], b, [130, 45], { bias, act: 'gelu' }).out };
    },
  },
  {
    name: 'matmul_tiled (workgroup memory) 130x40 @ 40x132 with bias + SiLU, and a transposed A',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const a = data(130 * 40, 56), b = data(40 * 132, 57, -0.2, 0.2), bias = data(132, 58);
      const ta = engine.tensor(a, [130, 40]), tb = engine.tensor(b, [40, 132]), tbias = engine.tensor(bias, [132]);
      const taT = engine.tensor(a, [40, 130]);
      const { result } = await runProgram(engine, 'mm tiled', (rec) => [
        matmul(rec, ta, tb, { bias: tbias, act: 'silu', variant: 'matmul_tiled' }),
        matmul(rec, taT, tb, { transA: true, variant: 'matmul_tiled' }),
      ]);
      const r1 = await result[0]!.read();
      const r2 = await result[1]!.read();
      const e1 = matmulRef(a, [130, 40], b, [40, 132], { bias, act: 'silu' }).out;
      const e2 = matmulRef(a, [40, 130], b, [40, 132], { transA: true }).out;
      const actual = new Float32Array(r1.length + r2.length);
      actual.set(r1);
      actual.set(r2, r1.length);
      const expected = new Float32Array(e1.length + e2.length);
      expected.set(e1);
      expected.set(e2, e1.length);
      return { actual, expected };
    },
  },
  {
    name: 'linear (nn.Linear layout) batch 2 x 33 x 320 -> 64',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const x = data(2 * 33 * 320, 53), w = data(64 * 320, 54, -0.06, 0.06), bias = data(64, 55);
      const tx = engine.tensor(x, [2, 33, 320]), tw = engine.tensor(w, [64, 320]), tbias = engine.tensor(bias, [64]);
      const { result } = await runProgram(engine, 'linear', (rec) => linear(rec, tx, tw, tbias));
      return { actual: await result.read(), expected: matmulRef(x, [2, 33, 320], w, [64, 320], { transB: true, bias }).out };
    },
  },
  {
    name: 'attention self 100 tokens, 8 heads x 40',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const [L, H, D] = [100, 8, 40];
      const q = data(L * H * D, 30), k = data(L * H * D, 31), v = data(L * H * D, 32);
      const T = (x: Float32Array) => engine.tensor(x, [1, L, H * D]);
      const [tq, tk, tv] = [T(q), T(k), T(v)];
      const { result } = await runProgram(engine, 'attn', (rec) => attention(rec, tq, tk, tv, { heads: H }));
      return { actual: await result.read(), expected: attentionRef(q, k, v, { B: 1, lq: L, lk: L, heads: H, D }) };
    },
  },
  {
    name: 'attention cross 2x33 queries x 77 keys, 3 heads x 5, and causal 77',
    atol: 1e-5,
    rtol: 1e-5,
    run: async (engine) => {
      const [B, LQ, LK, H, D] = [2, 33, 77, 3, 5];
      const q = data(B * LQ * H * D, 33), k = data(B * LK * H * D, 34), v = data(B * LK * H * D, 35);
      const tq = engine.tensor(q, [B, LQ, H * D]);
      const tk = engine.tensor(k, [B, LK, H * D]);
      const tv = engine.tensor(v, [B, LK, H * D]);
      const { result } = await runProgram(engine, 'attn-x', (rec) => [
        attention(rec, tq, tk, tv, { heads: H }),
        attention(rec, tk, tk, tv, { heads: H, causal: true }),
      ]);
      const a = await result[0]!.read();
      const c = await result[1]!.read();
      const ra = attentionRef(q, k, v, { B, lq: LQ, lk: LK, heads: H, D });
      const rc = attentionRef(k, k, v, { B, lq: LK, lk: LK, heads: H, D, causal: true });
      const join = (x: Float32Array, y: Float32Array) => { const o = new Float32Array(x.length + y.length); o.set(x); o.set(y, x.length); return o; };
      return { actual: join(a, c), expected: join(ra, rc) };
    },
  },
  {
    name: 'bilinear 5x7 -> 8x3 and nearest x2, 2x3 planes',
    atol: 1e-6,
    rtol: 1e-6,
    run: async (engine) => {
      const x = data(2 * 3 * 35, 36);
      const t = engine.tensor(x, [2, 3, 5, 7]);
      const { result } = await runProgram(engine, 'resize', (rec) => [resizeBilinear(rec, t, 8, 3), upsampleNearest2x(rec, t)]);
      const a = await result[0]!.read();
      const b = await result[1]!.read();
      const ra = bilinearRef(x, 6, 5, 7, 8, 3);
      const rb = nearest2xRef(x, 6, 5, 7);
      const o = new Float32Array(a.length + b.length); o.set(a); o.set(b, a.length);
      const r = new Float32Array(ra.length + rb.length); r.set(ra); r.set(rb, ra.length);
      return { actual: o, expected: r };
    },
  },
  {
    name: 'concat channels 3 + 5 + 1 at 2x(4x3)',
    atol: 0,
    rtol: 0,
    run: async (engine) => {
      const parts = [3, 5, 1].map((c, i) => ({ c, data: data(2 * c * 12, 40 + i) }));
      const ts = parts.map((p) => engine.tensor(p.data, [2, p.c, 4, 3]));
      const { result } = await runProgram(engine, 'concat', (rec) => concatChannels(rec, ts));
      return { actual: await result.read(), expected: concatRef(parts, 2, 12) };
    },
  },
  {
    name: 'timestep embedding 320 (SD-1.5 flip_sin_to_cos, shift 0)',
    atol: 1e-4,
    rtol: 0,
    run: async (engine) => {
      const ts = Float32Array.from([0, 1, 10, 199.8, 261, 500, 999]);
      const t = engine.tensor(ts, [7]);
      const opts = { flipSinToCos: true, downscaleFreqShift: 0 };
      const { result } = await runProgram(engine, 'temb', (rec) => timestepEmbedding(rec, t, 320, opts));
      return { actual: await result.read(), expected: Float32Array.from(timestepEmbeddingRef(ts, 320, opts)) };
    },
  },
);

CASES.push(
  {
    // A torch-written file fetched over HTTP in the page (Response -> ArrayBuffer -> parser -> GPU):
    // SD-1.5's time projection computed on the GPU must match diffusers' stored output.
    name: 'safetensors fetched in the page: golden timestep embedding',
    atol: 1e-4,
    rtol: 0,
    run: async (engine) => {
      const file = await fetchSafetensors('/golden/unet_mini/golden.safetensors');
      const ts = file.getF32('temb.timesteps');
      const expected = file.getF32('temb.sd15_time_proj_320');
      const t = file.toTensor(engine, 'temb.timesteps');
      const { result } = await runProgram(engine, 'temb-golden', (rec) => timestepEmbedding(rec, t, 320, { flipSinToCos: true, downscaleFreqShift: 0 }));
      if (ts.length !== 7) throw new Error(`expected 7 golden timesteps, got ${ts.length}`);
      return { actual: await result.read(), expected };
    },
  },
  {
    name: 'safetensors fetch of a missing URL fails naming it',
    atol: 0,
    rtol: 0,
    run: async () => {
      const err = await fetchSafetensors('/golden/no-such-file.safetensors').then(() => null, (e: Error) => e.message);
      const ok = err !== null && err.includes('/golden/no-such-file.safetensors') && err.includes('404');
      if (!ok) throw new Error(`unexpected result: ${err}`);
      return { actual: new Float32Array([1]), expected: new Float32Array([1]) };
    },
  },
);

async function goldenCase(engine: Engine, name: string, runner: typeof runUNetCase): Promise<{ items: CheckItem[] }> {
  const files = urlCaseFiles(`/golden/${name}`);
  const manifest = JSON.parse(await files.text('manifest.json')) as Record<string, unknown>;
  return { items: await runner(engine, files, manifest, {}) };
}

CASES.push(
  {
    name: 'golden unet_mini through the same runner as silo check (weights fetched over HTTP)',
    atol: 0,
    rtol: 0,
    run: (engine) => goldenCase(engine, 'unet_mini', runUNetCase),
  },
  {
    name: 'golden clip_text_mini: tokenizer ids and text encoder',
    atol: 0,
    rtol: 0,
    run: (engine) => goldenCase(engine, 'clip_text_mini', runClipTextMini),
  },
  {
    name: 'golden dps_step: one Latent-DPS step (UNet, DDPM, VAE decoder and their VJPs) as one program',
    atol: 0,
    rtol: 0,
    run: (engine) => goldenCase(engine, 'dps_step', runDpsStep),
  },
);

// The restoration layer in the page: RestorationSession with the golden models fetched over HTTP (the
// browser's FolderAccess), one Latent-DPS step on a 64x64 gradient image degraded by avgpool4 without
// noise, so the measurement it reports is the CPU's 4x4 block mean of the image (8-bit rounding apart).
CASES.push({
  name: 'restoration session in the page: golden models over HTTP, latent-dps avgpool4, 1 step',
  atol: 1,
  rtol: 0,
  run: async (engine) => {
    const models = await loadModels(engine, { golden: urlFolder('/golden') });
    const session = new RestorationSession(engine, models);
    try {
      const n = 64;
      const gt = new Uint8Array(n * n * 3);
      for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) gt.set([x * 4, y * 4, (x + y) * 2], (y * n + x) * 3);
      const r = await session.run({ task: 'avgpool4', method: 'latent-dps', groundTruth: { width: n, height: n, channels: 3, data: gt }, sigma: 0, steps: 1, seed: 3 });
      if (r.image.width !== n || r.image.height !== n) throw new Error(`restored image is ${r.image.width}x${r.image.height}`);
      for (const k of ['psnr', 'ssim', 'consistency_psnr']) if (!Number.isFinite(r.metrics[k])) throw new Error(`metric ${k} = ${r.metrics[k]}`);
      const dispatches = (r.report as { dispatches: { autoencoder_in_loop: number } }).dispatches;
      if (!(dispatches.autoencoder_in_loop > 0)) throw new Error('latent-dps ran no decoder in the loop');
      const m = n / 4;
      const expected = new Float32Array(m * m * 3);
      for (let by = 0; by < m; by++)
        for (let bx = 0; bx < m; bx++)
          for (let c = 0; c < 3; c++) {
            let sum = 0;
            for (let dy = 0; dy < 4; dy++) for (let dx = 0; dx < 4; dx++) sum += gt[((by * 4 + dy) * n + bx * 4 + dx) * 3 + c]!;
            expected[(by * m + bx) * 3 + c] = sum / 16;
          }
      return { actual: Float32Array.from(r.measurement.data), expected };
    } finally {
      session.dispose();
    }
  },
});

CASES.push(
  {
    // A captured program replayed with new parameters: bit for bit what a fresh recording gives.
    name: 'replay: a captured step at new parameters (uniforms, time projection, noise stream)',
    atol: 0,
    rtol: 0,
    run: async (engine) => {
      const shape = [1, 3, 5, 11];
      const x = engine.tensor(data(165, 40), shape);
      const stepOf = (rec: Parameters<typeof ew.scale>[0], k: Scalar) =>
        engine.tidy(() => {
          const noise = randomNormal(rec, shape, 7, { offset: mapScalar(k, (v) => v + 1) });
          const h = ew.scaleAdd(rec, x, mapScalar(k, (v) => 1 / (v + 1)), noise, mapScalar(k, (v) => -0.5 * v));
          const emb = new Timesteps(12, true, 0).forward(rec, mapScalar(k, (v) => 37 * v), 'f32');
          return { h: ew.silu(rec, h), emb };
        });
      const { program } = await captureProgram(engine, 'replay case', { k: 1 }, (rec) => stepOf(rec, stepParam('k', 1)));
      try {
        const actual: number[] = [];
        const expected: number[] = [];
        for (const k of [4, 2]) {
          await program.replay({ k }, { wait: true });
          actual.push(...(await program.result.h.read()), ...(await program.result.emb.read()));
          const fresh = await runProgram(engine, 'fresh', (rec) => stepOf(rec, k));
          expected.push(...(await fresh.result.h.read()), ...(await fresh.result.emb.read()));
          fresh.result.h.dispose();
          fresh.result.emb.dispose();
        }
        return { actual: Float32Array.from(actual), expected };
      } finally {
        program.dispose();
        x.dispose();
      }
    },
  },
  {
    name: 'tuned conv 3x3: Winograd, px8 and the general kernel each as the table names it',
    atol: 1e-4,
    rtol: 1e-4,
    run: async (engine) => {
      const [c, h, w] = [256, 8, 16];
      const x = data(c * h * w, 41);
      const wt = data(c * c * 9, 42, -0.05, 0.05);
      const ref = conv2dRef(x, [1, c, h, w], wt, [c, c, 3, 3], null, { padding: [1, 1] }).out;
      const key = conv3x3Key(1, c, h, w, c, false);
      const xt = engine.tensor(x, [1, c, h, w]);
      const wtt = engine.tensor(wt, [c, c, 3, 3]);
      const actual: number[] = [];
      const expected: number[] = [];
      try {
        for (const v of ['winograd', 'px8', 'general']) {
          engine.tuning.set('conv3x3', key, v);
          const { result } = await runProgram(engine, `conv ${v}`, (rec) => conv2d(rec, xt, wtt, undefined, { padding: 1 }));
          const kernels = engine.lastSubmitted!.kernels.join(' ');
          const ran = kernels.includes('winograd') ? 'winograd' : kernels.includes('conv3x3') ? 'px8' : 'general';
          if (ran !== v) throw new Error(`the table named ${v} but ${ran} ran (${kernels})`);
          actual.push(...(await result.read()));
          expected.push(...ref);
          result.dispose();
        }
      } finally {
        engine.tuning.delete('conv3x3', key);
        xt.dispose();
        wtt.dispose();
      }
      return { actual: Float32Array.from(actual), expected };
    },
  },
  {
    name: 'tuning table kept in OPFS and loaded for this adapter',
    atol: 0,
    rtol: 0,
    run: async (engine) => {
      const store = opfsTuningStore('silo-test-tuning.json');
      if (!store) throw new Error('no OPFS in this browser');
      const t = new Tuning(engine.tuning.adapter);
      t.set('conv3x3', 'F1x8x8x16>8', 'general');
      await store.write(JSON.stringify(t.toJSON()));
      const back = new Tuning(engine.tuning.adapter);
      const lines: string[] = [];
      const loaded = await loadTuning(back, store, (l) => lines.push(l));
      const foreign = new Tuning('another adapter');
      const skipped = await loadTuning(foreign, store, (l) => lines.push(l));
      const ok = loaded && !skipped && back.get('conv3x3', 'F1x8x8x16>8') === 'general' && foreign.size === 0 && /another adapter/.test(lines[1] ?? '');
      return { actual: Float32Array.of(ok ? 1 : 0), expected: [1] };
    },
  },
);

export async function runCases(engine: Engine, only?: string[]): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  for (const c of CASES) {
    if (only && !only.includes(c.name)) continue;
    const t0 = performance.now();
    try {
      const out = await c.run(engine);
      if ('items' in out) {
        // a golden case runner: every tensor under the case's own tolerance rule
        const rs = out.items.map(compare);
        const bad = rs.filter((r) => !r.pass);
        const ok = rs.length > 0 && bad.length === 0;
        const worst = rs.length === 0 ? 'no outputs compared' : bad.map((r) => `${r.name}: ${r.detail}`).join('; ');
        results.push({ name: c.name, ok, maxAbsDiff: Math.max(...rs.map((r) => r.maxAbs)), worst, ms: performance.now() - t0 });
        continue;
      }
      const { actual, expected } = out;
      let ok = actual.length === expected.length;
      let maxAbsDiff = 0;
      let worst = ok ? '' : `length ${actual.length} vs ${expected.length}`;
      for (let i = 0; ok && i < expected.length; i++) {
        const d = Math.abs(actual[i]! - expected[i]!);
        if (!(d <= c.atol + c.rtol * Math.abs(expected[i]!))) {
          ok = false;
          worst = `element ${i}: ${actual[i]} vs ${expected[i]}`;
        }
        if (d > maxAbsDiff) maxAbsDiff = d;
      }
      results.push({ name: c.name, ok, maxAbsDiff, worst, ms: performance.now() - t0 });
    } catch (e) {
      results.push({ name: c.name, ok: false, maxAbsDiff: NaN, worst: String((e as Error).stack ?? e), ms: performance.now() - t0 });
    }
  }
  return results;
}
