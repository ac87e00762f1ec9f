// Seeded GPU-generated weights: a module built from them has the declared shapes, the draws follow
// the stated scheme and are reproducible, and strict loading passes (every declared name is used).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { WeightLoader } from '../../src/models/weights.js';
import { RandomWeightSource } from '../../src/models/random-weights.js';
import { ResnetBlock2D } from '../../src/models/resnet.js';
import { getEngine } from '../helpers/engine.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

describe('RandomWeightSource', () => {
  it('builds a module with reproducible, well-scaled weights', async () => {
    const build = async (seed: number) => {
      const src = new RandomWeightSource(seed);
      const block = WeightLoader.build(engine, src, {}, (w) => new ResnetBlock2D(w.scope('block.'), 64, 96, { tembChannels: 32 }));
      await src.generated();
      return { src, block };
    };
    const a = await build(7);
    const b = await build(7);
    const c = await build(8);
    expect(a.src.names().length).toBe(12); // norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut: weight + bias each
    expect(a.block.conv1.weight.shape).toEqual([96, 64, 3, 3]);
    const wa = await a.block.conv1.weight.read();
    expect(Array.from(await b.block.conv1.weight.read())).toEqual(Array.from(wa));
    expect(Array.from(await c.block.conv1.weight.read())).not.toEqual(Array.from(wa));
    // N(0, 1/fan_in) with fan_in = 64 * 9
    const std = Math.sqrt(wa.reduce((s, v) => s + v * v, 0) / wa.length);
    expect(Math.abs(std - 1 / 24)).toBeLessThan(0.002);
    const g = await a.block.norm1.weight.read();
    expect(Math.abs(g.reduce((s, v) => s + v, 0) / g.length - 1)).toBeLessThan(0.05);
    const x = engine.tensor(new Float32Array(2 * 64 * 4 * 4).fill(0.5), [2, 64, 4, 4]);
    const t = engine.tensor(new Float32Array(2 * 32).fill(0.1), [2, 32]);
    const { result } = await runProgram(engine, 'rand-resnet', (rec) => a.block.forward(rec, x, t));
    const out = await result.out.read();
    expect(out.every(Number.isFinite)).toBe(true);
  });

  it('transposed uploads hold the same draws: a matrix and a 1x1 convolution weight, refusing a 3x3 one', async () => {
    const src = new RandomWeightSource(3);
    const shapes: Record<string, number[]> = { lin: [5, 7], conv1: [6, 4, 1, 1], conv3: [2, 2, 3, 3] };
    for (const [n, s] of Object.entries(shapes)) src.declare(n, s);
    const plain = [src.toTensor(engine, 'lin'), src.toTensor(engine, 'conv1')];
    const held = [src.toTensorTransposed(engine, 'lin'), src.toTensorTransposed(engine, 'conv1')];
    expect(() => src.toTensorTransposed(engine, 'conv3')).toThrow(/"conv3" is \[2, 2, 3, 3\]; only a matrix/);
    await src.generated();
    expect(held.map((t) => t.shape)).toEqual([[7, 5], [4, 6, 1, 1]]);
    for (const [i, [rows, cols]] of [[5, 7], [6, 4]].entries()) {
      const p = await plain[i]!.read();
      const h = await held[i]!.read();
      const want = Array.from({ length: rows! * cols! }, (_, k) => p[(k % rows!) * cols! + Math.floor(k / rows!)]!);
      expect(Array.from(h)).toEqual(want);
    }
    for (const t of [...plain, ...held]) t.dispose();
  });
});
