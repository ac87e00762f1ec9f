// Captured programs (src/engine/replay.ts): a replay with new parameters gives bit for bit what a fresh
// recording with those values gives, its scratch survives other programs, it holds the tensors it
// reads, and bad captures or replays fail loudly without stranding pool buffers.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import type { Recorder } from '../src/engine/recorder.js';
import { runProgram } from '../src/engine/recorder.js';
import { captureProgram } from '../src/engine/replay.js';
import { mapScalar, stepParam, type Scalar } from '../src/engine/step-value.js';
import { scale, scaleAdd, silu, unary } from '../src/engine/ops/elementwise.js';
import { randomNormal } from '../src/engine/ops/random.js';
import { timestepEmbeddingCPU } from '../src/engine/ops/embedding.js';
import { Timesteps } from '../src/models/unet/embeddings.js';
import { getEngine, randomData } from './helpers/engine.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const SHAPE = [1, 3, 7, 9]; // 189 elements: not a multiple of any workgroup
const DIM = 10;

/** A small "step": k-dependent coefficients, noise stream and timestep embedding, with scratch freed inside. */
function step(rec: Recorder, x: Tensorish, k: Scalar): { y: ReturnType<typeof scale>; emb: ReturnType<typeof scale> } {
  return rec.engine.tidy(() => {
    const a = mapScalar(k, (v) => 1 / Math.sqrt(v + 1));
    const b = mapScalar(k, (v) => -0.25 * v);
    const noise = randomNormal(rec, SHAPE, 1234, { offset: mapScalar(k, (v) => v + 1), name: 'noise' });
    const h = silu(rec, scaleAdd(rec, x, a, noise, b)); // scratch freed within the program
    const y = unary(rec, h, { scale: b, shift: a, op: 'affine' });
    const emb = scale(rec, new Timesteps(DIM, true, 0).forward(rec, mapScalar(k, (v) => 100 * v + 1), 'f32'), 2);
    return { y, emb };
  });
}
type Tensorish = Parameters<typeof scale>[1];

async function fresh(x: Tensorish, k: number): Promise<{ y: Float32Array; emb: Float32Array }> {
  const { result } = await runProgram(engine, 'fresh', (rec) => step(rec, x, k));
  const out = { y: await result.y.read(), emb: await result.emb.read() };
  result.y.dispose();
  result.emb.dispose();
  return out;
}

describe('captured programs', () => {
  it('replays with new parameters bit for bit like a fresh recording, scratch kept from the pool', async () => {
    const x = engine.tensor(randomData(189, 5, -2, 2), SHAPE, 'f32', 'x');
    const { program, report } = await captureProgram(engine, 'step', { k: 1 }, (rec) => step(rec, x, stepParam('k', 1)));
    expect(report.dispatches).toBe(program.dispatches);
    expect(program.bytes).toBeGreaterThan(0);
    const first = { y: await program.result.y.read(), emb: await program.result.emb.read() };
    expect(first).toEqual(await fresh(x, 1));
    // The embedding really was recomputed on the CPU at the new timestep (not a stale upload).
    for (const k of [3, 7, 2]) {
      // Other programs allocate and write in between: the replay's scratch must not be theirs.
      const other = await runProgram(engine, 'other', (rec) => [0, 1, 2].map(() => scale(rec, x, 9)));
      const r = await program.replay({ k }, { wait: true });
      expect(r.dispatches).toBe(program.dispatches);
      expect(r.encodeMs).toBeGreaterThanOrEqual(0);
      const got = { y: await program.result.y.read(), emb: await program.result.emb.read() };
      const want = await fresh(x, k);
      expect(got.y).toEqual(want.y);
      expect(got.emb).toEqual(want.emb);
      const cpu = timestepEmbeddingCPU([100 * k + 1], DIM, { flipSinToCos: true, downscaleFreqShift: 0 });
      expect(Array.from(got.emb)).toEqual(Array.from(cpu, (v) => Math.fround(2 * v)));
      for (const t of other.result) {
        expect(Array.from(await t.read())).toEqual(Array.from(await x.read(), (v) => Math.fround(9 * v)));
        t.dispose();
      }
    }
    program.dispose();
    x.dispose();
    await expect(program.replay({ k: 1 })).rejects.toThrow(/disposed/);
  });

  it('holds the tensors it reads, copies new inputs in and outputs out', async () => {
    const x = engine.tensor(randomData(189, 6, -1, 1), SHAPE, 'f32', 'x');
    const { program } = await captureProgram(engine, 'held', { k: 2 }, (rec) => step(rec, x, stepParam('k', 2)));
    const x0 = await x.read();
    x.dispose(); // the program still reads it
    const churn = await runProgram(engine, 'churn', (rec) => [0, 1, 2, 3].map(() => scale(rec, program.result.y, 0)));
    churn.result.forEach((t) => t.dispose());
    await program.replay({ k: 2 }, { wait: true });
    const x2 = engine.tensor(x0, SHAPE, 'f32', 'x2');
    expect(await program.result.y.read()).toEqual((await fresh(x2, 2)).y);

    // New input content through a copy, and the output copied out after the replay.
    const sink = engine.zeros(SHAPE, 'f32', 'sink');
    const wrong = engine.zeros([1, 3, 7, 8], 'f32', 'wrong');
    await expect(program.replay({ k: 2 }, { after: [[program.result.y, wrong]] })).rejects.toThrow(/wrong.*\[1, 3, 7, 8\]/);
    await program.replay({ k: 5 }, { after: [[program.result.y, sink]], wait: true });
    expect(await sink.read()).toEqual((await fresh(x2, 5)).y);
    program.dispose();
    for (const t of [x2, sink, wrong]) t.dispose();
  });

  it('prepares the next replay while the previous one is in flight, each with its own values', async () => {
    const x = engine.tensor(randomData(189, 10, -1, 1), SHAPE, 'f32', 'x');
    const { program } = await captureProgram(engine, 'ahead', { k: 1 }, (rec) => step(rec, x, stepParam('k', 1)));
    const sinks = [2, 5, 3].map((k) => ({ k, y: engine.zeros(SHAPE, 'f32', `y_${k}`) }));
    // Submit k, then write k + 1's values and encode it before k has run: the writes queue behind k.
    let inFlight = program.prepare({ k: sinks[0]!.k }, { after: [[program.result.y, sinks[0]!.y]] }).submit();
    for (const s of sinks.slice(1)) {
      const next = program.prepare({ k: s.k }, { after: [[program.result.y, s.y]] });
      expect(() => program.prepare({ k: 9 }), 'one prepared replay at a time').toThrow(/has not been submitted or discarded/);
      expect((await inFlight).encodeMs).toBeGreaterThanOrEqual(0);
      inFlight = next.submit();
    }
    await inFlight;
    for (const s of sinks) expect(await s.y.read(), `k = ${s.k}`).toEqual((await fresh(x, s.k)).y);
    // A discarded replay leaves no trace: the next one writes every value again.
    const dropped = program.prepare({ k: 8 });
    dropped.discard();
    await expect(dropped.submit()).rejects.toThrow(/already submitted or discarded/);
    await program.replay({ k: 4 }, { wait: true });
    expect(await program.result.y.read()).toEqual((await fresh(x, 4)).y);
    program.prepare({ k: 6 }); // dispose drops a prepared replay too
    program.dispose();
    for (const t of [x, ...sinks.map((s) => s.y)]) t.dispose();
  });

  it('refuses a dynamic value that disagrees with the capture, and a replay missing a parameter', async () => {
    const x = engine.tensor(randomData(189, 8, -1, 1), SHAPE, 'f32', 'x');
    const live = engine.pool.stats.liveBytes;
    const liar = { value: 0.5, at: () => 0.25 };
    await expect(captureProgram(engine, 'liar', {}, (rec) => scale(rec, x, liar))).rejects.toThrow(/scale.*differ from the values recorded/);
    expect(engine.pool.stats.liveBytes).toBe(live);
    expect(engine.activeRecorder).toBeNull();
    const { program } = await captureProgram(engine, 'named', { k: 1 }, (rec) => step(rec, x, stepParam('k', 1)));
    await expect(program.replay({ j: 1 })).rejects.toThrow(/parameter "k" was not given/);
    // A failed replay wrote nothing: the next one is still right.
    await program.replay({ k: 4 }, { wait: true });
    expect(await program.result.y.read()).toEqual((await fresh(x, 4)).y);
    // New content for an input the program reads, copied in before the replay.
    const xNew = engine.tensor(randomData(189, 9, -1, 1), SHAPE, 'f32', 'x_new');
    await program.replay({ k: 6 }, { inputs: [[x, xNew]], wait: true });
    expect(await program.result.y.read()).toEqual((await fresh(xNew, 6)).y);
    expect(await x.read()).toEqual(await xNew.read());
    program.dispose();
    x.dispose();
    xNew.dispose();
  });
});
