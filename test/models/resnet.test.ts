// ResnetBlock2D against a composition of the CPU references (GroupNorm+SiLU, conv, time projection).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { silu } from '../../src/engine/ops/elementwise.js';
import { parseSafetensors, f32Entry, serializeSafetensors } from '../../src/formats/safetensors.js';
import { WeightLoader, WeightError } from '../../src/models/weights.js';
import { ResnetBlock2D } from '../../src/models/resnet.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { conv2dRef } from '../ref/conv2d.js';
import { groupNormRef } from '../ref/norm.js';
import { matmulRef } from '../ref/matmul.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

function weights(cin: number, cout: number, temb: number, seed: number): Record<string, { data: Float32Array; shape: number[] }> {
  const r = (shape: number[], s: number, lo = -0.2, hi = 0.2) => ({ data: randomData(shape.reduce((a, b) => a * b, 1), seed * 100 + s, lo, hi), shape });
  const w: Record<string, { data: Float32Array; shape: number[] }> = {
    'norm1.weight': r([cin], 1, 0.8, 1.2), 'norm1.bias': r([cin], 2),
    'conv1.weight': r([cout, cin, 3, 3], 3), 'conv1.bias': r([cout], 4),
    'norm2.weight': r([cout], 5, 0.8, 1.2), 'norm2.bias': r([cout], 6),
    'conv2.weight': r([cout, cout, 3, 3], 7), 'conv2.bias': r([cout], 8),
  };
  if (temb) Object.assign(w, { 'time_emb_proj.weight': r([cout, temb], 9), 'time_emb_proj.bias': r([cout], 10) });
  if (cin !== cout) Object.assign(w, { 'conv_shortcut.weight': r([cout, cin, 1, 1], 11), 'conv_shortcut.bias': r([cout], 12) });
  return w;
}

function file(w: Record<string, { data: Float32Array; shape: number[] }>, name = 'resnet.safetensors') {
  const entries = Object.fromEntries(Object.entries(w).map(([k, v]) => [k, f32Entry(v.data, v.shape)]));
  return parseSafetensors(serializeSafetensors(entries), name);
}

function resnetRef(x: Float32Array, shape: number[], w: Record<string, { data: Float32Array }>, cout: number, temb?: Float32Array, tembC = 0) {
  const [n, cin, h, wd] = shape as [number, number, number, number];
  const g = (k: string) => w[k]!.data;
  let a = groupNormRef(x, shape, 4, g('norm1.weight'), g('norm1.bias'), 1e-5, 'silu');
  a = conv2dRef(a, shape, g('conv1.weight'), [cout, cin, 3, 3], g('conv1.bias'), { padding: [1, 1] }).out;
  if (temb) {
    const st = temb.map((v) => v / (1 + Math.exp(-v)));
    const p = matmulRef(st, [n, tembC], g('time_emb_proj.weight'), [cout, tembC], { transB: true, bias: g('time_emb_proj.bias') }).out;
    a = a.map((v, i) => v + p[Math.floor(i / (h * wd * cout)) * cout + (Math.floor(i / (h * wd)) % cout)]!);
  }
  const oshape = [n, cout, h, wd];
  const hidden = conv2dRef(groupNormRef(a, oshape, 4, g('norm2.weight'), g('norm2.bias'), 1e-5, 'silu'), oshape, g('conv2.weight'), [cout, cout, 3, 3], g('conv2.bias'), { padding: [1, 1] }).out;
  const skip = cin === cout ? x : conv2dRef(x, shape, g('conv_shortcut.weight'), [cout, cin, 1, 1], g('conv_shortcut.bias')).out;
  return { out: hidden.map((v, i) => v + skip[i]!), hidden };
}

describe('ResnetBlock2D', () => {
  for (const [cin, cout, tembC] of [[8, 8, 12], [8, 12, 12], [12, 8, 0]] as const) {
    it(`${cin} -> ${cout} channels${tembC ? ` with a ${tembC}-d time embedding` : ''}, batch 2, 5x7`, async () => {
      const w = weights(cin, cout, tembC, cin * 31 + cout);
      const shape = [2, cin, 5, 7];
      const x = randomData(2 * cin * 35, 77, -2, 2);
      const temb = tembC ? randomData(2 * tembC, 78, -2, 2) : undefined;
      const block = WeightLoader.build(engine, file(w), {}, (l) => new ResnetBlock2D(l, cin, cout, { tembChannels: tembC || undefined, groups: 4 }));
      const tx = engine.tensor(x, shape);
      const tt = temb ? engine.tensor(temb, [2, tembC]) : undefined;
      const { result } = await runProgram(engine, 'resnet', (rec) => block.forward(rec, tx, tt ? silu(rec, tt) : undefined, true));
      const ref = resnetRef(x, shape, w, cout, temb, tembC);
      expectClose(await result.out.read(), ref.out, { atol: 1e-5, rtol: 1e-4 }, 'out');
      expectClose(await result.hidden!.read(), ref.hidden, { atol: 1e-5, rtol: 1e-4 }, 'hidden');
    });
  }

  it('names the file and tensor for a missing, mis-shaped or unexpected tensor', () => {
    const w = weights(8, 8, 12, 1);
    const missing = { ...w };
    delete missing['conv2.weight'];
    expect(() => WeightLoader.build(engine, file(missing, 'm.safetensors'), {}, (l) => new ResnetBlock2D(l, 8, 8, { tembChannels: 12, groups: 4 }))).toThrow(
      /m\.safetensors: missing tensor "conv2\.weight" \(expected shape \[8, 8, 3, 3\]\)/,
    );
    const live = engine.pool.stats.liveBytes;
    expect(() => WeightLoader.build(engine, file(w, 's.safetensors'), {}, (l) => new ResnetBlock2D(l, 8, 8, { tembChannels: 16, groups: 4 }))).toThrow(
      /s\.safetensors: tensor "time_emb_proj\.weight" has shape \[8, 12\], expected \[8, 16\]/,
    );
    expect(engine.pool.stats.liveBytes).toBe(live); // parameters uploaded before the failure were freed
    const extra = { ...w, 'conv3.weight': { data: new Float32Array(4), shape: [4] } };
    const err = (() => {
      try {
        WeightLoader.build(engine, file(extra, 'x.safetensors'), {}, (l) => new ResnetBlock2D(l, 8, 8, { tembChannels: 12, groups: 4 }));
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(WeightError);
    expect(String(err)).toMatch(/x\.safetensors: 1 unexpected tensor\(s\) not used by the model: "conv3\.weight"/);
  });
});
