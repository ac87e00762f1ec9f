// Row gather (embedding lookup) against the CPU reference: awkward widths, ids as [B, L], out-of-range
// ids (zero rows), tables bound in aligned row chunks (as a table over maxStorageBufferBindingSize is),
// and f16 storage.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { gatherRows } from '../src/engine/ops/gather.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';
import { gatherRowsRef } from './ref/gather.js';

const EXACT = { atol: 0, rtol: 0 };

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

function ids(n: number, v: number, seed: number): Float32Array {
  return Float32Array.from(randomData(n, seed, 0, v), Math.floor);
}

describe('gatherRows', () => {
  for (const [v, d, n] of [[1, 1, 1], [37, 5, 13], [500, 48, 154], [3, 771, 9]] as const) {
    it(`table [${v}, ${d}], ${n} ids`, async () => {
      const table = randomData(v * d, v + d, -3, 3);
      const idv = ids(n, v, n);
      const t = engine.tensor(table, [v, d]);
      const it = engine.tensor(idv, [n]);
      const { result } = await runProgram(engine, 'gather', (rec) => gatherRows(rec, t, it));
      expect(result.shape).toEqual([n, d]);
      expectClose(await result.read(), gatherRowsRef(table, v, d, idv), EXACT, 'gather');
    });
  }

  it('ids of any shape, out-of-range ids give zero rows, empty ids', async () => {
    const [v, d] = [10, 7];
    const table = randomData(v * d, 3, 1, 2);
    const idv = Float32Array.from([0, 9, -1, 10, 1e9, NaN, 5, 3]);
    const t = engine.tensor(table, [v, d]);
    const { result } = await runProgram(engine, 'gather', (rec) => [
      gatherRows(rec, t, engine.tensor(idv, [2, 4])),
      gatherRows(rec, t, engine.zeros([0, 3])),
    ]);
    expect(result[0]!.shape).toEqual([2, 4, d]);
    expect(result[1]!.shape).toEqual([0, 3, d]);
    expectClose(await result[0]!.read(), gatherRowsRef(table, v, d, idv), EXACT, 'gather with bad ids');
    await expect(runProgram(engine, 'bad', (rec) => gatherRows(rec, t.reshape([70]), engine.zeros([2])))).rejects.toThrow(/table must be \[rows, dim\]/);
  });

  it('a table bound in row chunks (binding limit lowered to 1 KiB)', async () => {
    // Rows of 3 floats (12 B): aligned chunks of 64 rows (768 B), the last one partial (300 = 4*64 + 44).
    const [v, d, n] = [300, 3, 200];
    const table = randomData(v * d, 11);
    const idv = ids(n, v, 12);
    idv[0] = -5;
    idv[1] = v;
    const t = engine.tensor(table, [v, d]);
    const { result, report } = await runProgram(engine, 'gather chunks', (rec) => gatherRows(rec, t, engine.tensor(idv, [n]), { maxBindingBytes: 1024 }));
    expect(report.ops['gather_rows']?.dispatches).toBe(5);
    expectClose(await result.read(), gatherRowsRef(table, v, d, idv), EXACT, 'chunked gather');
  });

  it('f16 tables (needs shader-f16), odd width, chunked', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 gather: this adapter has no shader-f16');
      ctx.skip();
    }
    const [v, d, n] = [257, 5, 40];
    const t = engine.tensor(randomData(v * d, 21), [v, d], 'f16');
    const stored = await t.read();
    const idv = ids(n, v, 22);
    const { result } = await runProgram(engine, 'gather f16', (rec) => [
      gatherRows(rec, t, engine.tensor(idv, [n])),
      gatherRows(rec, t, engine.tensor(idv, [n]), { maxBindingBytes: 2048 }),
    ]);
    expect(result[0]!.dtype).toBe('f16');
    expectClose(await result[0]!.read(), gatherRowsRef(stored, v, d, idv), EXACT, 'gather f16');
    expectClose(await result[1]!.read(), gatherRowsRef(stored, v, d, idv), EXACT, 'chunked gather f16');
  });
});
