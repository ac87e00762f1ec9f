// Measured kernel choices (src/engine/tuning.ts, tune.ts, `silo tune`): the table round-trips and is
// ignored (loudly) when damaged or measured elsewhere; a convolution runs the variant the table names,
// with the same numbers as the CPU reference; the tuner keeps the fastest variant it measured.
import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../src/engine/device.js';
import { runProgram } from '../src/engine/recorder.js';
import { Tuning, TUNING_VERSION, loadTuning, type TuningStore } from '../src/engine/tuning.js';
import { conv3x3Candidates, tuneConv3x3, tuneMatmul } from '../src/engine/tune.js';
import { matmul, matmulKey } from '../src/engine/ops/matmul.js';
import { SD15_TRANSFORMER_WIDTHS, unetMatmulShapes } from '../src/models/unet/matmul-shapes.js';
import { matmulRef } from './ref/matmul.js';
import { conv2d, conv3x3Key, convCaps, convTranspose2d } from '../src/engine/ops/conv2d.js';
import { SD15_UNET_WIDTHS, unetConv3x3Shapes } from '../src/models/unet/conv-shapes.js';
import { fileTuningStore, defaultTuningPath } from '../src/cli/tuning-file.js';
import { parseTuneArgs } from '../src/cli/tune.js';
import { main } from '../src/cli/silo.js';
import { getEngine, randomData, expectClose } from './helpers/engine.js';
import { conv2dRef, convTranspose2dRef } from './ref/conv2d.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});
afterEach(() => {
  // Each test leaves the shared engine untuned.
  for (const [op, m] of Object.entries(engine.tuning.toJSON().choices)) for (const k of Object.keys(m)) engine.tuning.delete(op, k);
});

const memoryStore = (text?: string): TuningStore & { text?: string } => {
  const s: TuningStore & { text?: string } = { where: 'memory', text, read: async () => s.text, write: async (t) => void (s.text = t) };
  return s;
};

describe('tuning table', () => {
  it('round-trips, and skips a table from another adapter or version, naming why', async () => {
    const a = new Tuning('gpu A');
    a.set('conv3x3', 'F1x8x8x16>8', 'px8');
    a.set('conv3x3', 'T1x8x8x16>8', 'general');
    const text = JSON.stringify(a.toJSON());
    const b = new Tuning('gpu A');
    expect(b.load(text, 'x.json')).toBeUndefined();
    expect(b.get('conv3x3', 'F1x8x8x16>8')).toBe('px8');
    expect(b.size).toBe(2);
    const other = new Tuning('gpu B');
    expect(other.load(text, 'x.json')).toMatch(/measured on another adapter \(gpu A\)/);
    expect(other.size).toBe(0);
    expect(new Tuning('gpu A').load(JSON.stringify({ ...a.toJSON(), version: TUNING_VERSION + 1 }), 'x.json')).toMatch(/version/);
    expect(() => new Tuning('gpu A').load('{ nope', 'x.json')).toThrow(/tuning table x\.json: not JSON/);
    expect(() => new Tuning('gpu A').load('{"version":1,"adapter":"gpu A","choices":{"conv3x3":{"k":3}}}', 'x.json')).toThrow(/x\.json: not a tuning table/);
  });

  it('loadTuning: nothing stored is quiet; a damaged or foreign table is reported and skipped', async () => {
    const lines: string[] = [];
    const log = (l: string) => lines.push(l);
    const t = new Tuning(engine.tuning.adapter);
    expect(await loadTuning(t, memoryStore(), log)).toBe(false);
    expect(lines).toEqual([]);
    expect(await loadTuning(t, memoryStore('garbage'), log)).toBe(false);
    expect(lines.pop()).toMatch(/tuning: tuning table memory: not JSON.*using the default kernel choices/);
    const foreign = new Tuning('some other gpu');
    foreign.set('conv3x3', 'k', 'px8');
    expect(await loadTuning(t, memoryStore(JSON.stringify(foreign.toJSON())), log)).toBe(false);
    expect(lines.pop()).toMatch(/memory not used: it was measured on another adapter.*silo tune/);
    const mine = new Tuning(engine.tuning.adapter);
    mine.set('conv3x3', 'k', 'px8');
    expect(await loadTuning(t, memoryStore(JSON.stringify(mine.toJSON())), log)).toBe(true);
    expect(lines.pop()).toMatch(/1 kernel choice\(s\) from memory/);
    const failing: TuningStore = { where: '/nowhere', read: async () => Promise.reject(new Error('EACCES')), write: async () => {} };
    expect(await loadTuning(t, failing, log)).toBe(false);
    expect(lines.pop()).toMatch(/cannot read \/nowhere \(EACCES\)/);
  });

  it('file store: missing file, atomic write into a new folder, default path from the environment', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'silo-tuning-'));
    try {
      const store = fileTuningStore(join(dir, 'sub', 'tuning.json'));
      expect(await store.read()).toBeUndefined();
      await store.write('{"a":1}\n');
      expect(readFileSync(join(dir, 'sub', 'tuning.json'), 'utf8')).toBe('{"a":1}\n');
      expect(await store.read()).toBe('{"a":1}\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(defaultTuningPath({ SILO_TUNING: '/t.json' }, '/home/u')).toBe('/t.json');
    expect(defaultTuningPath({ SILO_CACHE: '/c' }, '/home/u')).toBe('/c/tuning.json');
    expect(defaultTuningPath({ XDG_CACHE_HOME: '/x' }, '/home/u')).toBe('/x/silo-webgpu/tuning.json');
    expect(defaultTuningPath({}, '/home/u')).toBe('/home/u/.cache/silo-webgpu/tuning.json');
  });
});

/** Runs a 3x3 conv (or its transposed form) and returns the output with the kernels it used. */
async function runConv(x: Float32Array, xs: number[], w: Float32Array, ws: number[], transposed: boolean): Promise<{ out: Float32Array; kernels: string[] }> {
  const { result } = await runProgram(engine, 'tuned conv', (rec) => {
    const xt = engine.tensor(x, xs, 'f32', 'x');
    const wt = engine.tensor(w, ws, 'f32', 'w');
    return engine.tidy(() => (transposed ? convTranspose2d(rec, xt, wt, undefined, { stride: 1, padding: 1 }) : conv2d(rec, xt, wt, undefined, { stride: 1, padding: 1 })));
  });
  const kernels = engine.lastSubmitted!.kernels;
  const out = await result.read();
  result.dispose();
  return { out, kernels };
}

describe('tuned convolutions', () => {
  it('run the variant the table names (Winograd, px8, general), forward and transposed, matching the CPU reference', async () => {
    // 256 channels allow Winograd; 8x16 has only 32 2x2 tiles, so untuned it is px8.
    const [n, c, h, wd] = [1, 256, 8, 16];
    const x = randomData(n * c * h * wd, 1);
    const w = randomData(c * c * 9, 2, -0.05, 0.05);
    for (const transposed of [false, true]) {
      const s = { n, cin: c, h, w: wd, cout: c, transposed };
      const cand = conv3x3Candidates(engine, s);
      const igemm = convCaps(engine).igemm;
      expect(cand).toEqual({ variants: igemm ? ['winograd', 'px8', 'igemm', 'general'] : ['winograd', 'px8', 'general'], fallback: engine.info.software || !igemm ? 'px8' : 'igemm' });
      const ref = transposed ? convTranspose2dRef(x, [n, c, h, wd], w, [c, c, 3, 3], null, { padding: [1, 1] }) : conv2dRef(x, [n, c, h, wd], w, [c, c, 3, 3], null, { padding: [1, 1] });
      const key = conv3x3Key(n, c, h, wd, c, transposed);
      const seen: Record<string, string[]> = {};
      for (const v of ['winograd', 'px8', ...(igemm ? ['igemm'] : []), 'general', 'not-a-variant']) {
        engine.tuning.set('conv3x3', key, v);
        const r = await runConv(x, [n, c, h, wd], w, [c, c, 3, 3], transposed);
        expectClose(r.out, ref.out, { atol: 1e-4, rtol: 1e-4 }, `${v} ${transposed ? 'transposed' : 'forward'}`);
        seen[v] = r.kernels;
      }
      expect(seen.winograd!.some((k) => k.includes('winograd'))).toBe(true);
      expect(seen.px8!.some((k) => k.includes('conv3x3_px8'))).toBe(true);
      if (igemm) expect(seen.igemm!.some((k) => k.includes('conv3x3_igemm'))).toBe(true);
      expect(seen.general!.some((k) => k.includes('winograd') || k.includes('conv3x3'))).toBe(false);
      // A choice that is not a variant of this shape falls back to the default.
      expect(seen['not-a-variant']).toEqual(seen.px8);
    }
  });

  it('the tuner keeps the fastest measured variant and the convolution then uses it', async () => {
    const shapes = [
      { n: 1, cin: 8, h: 5, w: 16, cout: 12, transposed: false },
      { n: 1, cin: 12, h: 5, w: 16, cout: 8, transposed: true },
      { n: 1, cin: 3, h: 7, w: 9, cout: 5, transposed: false }, // one variant only: w is not a multiple of 8
    ];
    const lines: string[] = [];
    const results = await tuneConv3x3(engine, shapes, { reps: 2, log: (l) => lines.push(l) });
    const ig = convCaps(engine).igemm ? ['igemm'] : [];
    expect(results.map((r) => r.timings.map((t) => t.variant))).toEqual([['px8', ...ig, 'general'], ['px8', ...ig, 'general'], [...ig, 'general']]);
    for (const r of results) {
      const best = r.timings.reduce((a, b) => (b.ms < a.ms ? b : a));
      expect(r.chosen).toBe(best.variant);
      expect(engine.tuning.get('conv3x3', r.shape)).toBe(r.chosen);
      expect(r.timings.every((t) => t.ms > 0)).toBe(true);
    }
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^conv3x3 F1x8x5x16>12: px8 [\d.]+ ms, (igemm [\d.]+ ms, )?general [\d.]+ ms -> (px8|igemm|general)/);
    await expect(tuneConv3x3(engine, shapes, { reps: 0 })).rejects.toThrow(/reps must be a positive integer/);
    await expect(tuneConv3x3(engine, [{ ...shapes[0]!, cin: 0 }])).rejects.toThrow(/invalid conv 3x3 shape/);
  });
});

describe('matmul variants and their tuner', () => {
  it('the tuner times matmul_nn4 and matmul_tiled, keeps the faster, and the product then uses it', async () => {
    const shapes = [
      { batches: 1, m: 70, k: 33, n: 68 },
      { batches: 3, m: 9, k: 20, n: 12 },
      { batches: 1, m: 20, k: 24, n: 36, transB: true },
    ];
    const lines: string[] = [];
    const results = await tuneMatmul(engine, shapes, { reps: 2, log: (l) => lines.push(l) });
    expect(results.map((r) => r.shape)).toEqual(['1x70x33x68', '3x9x20x12', '1x20x24x36T']);
    for (const r of results) {
      expect(r.timings.map((t) => t.variant)).toEqual(['matmul_nn4', 'matmul_tiled']);
      expect(r.chosen).toBe(r.timings.reduce((a, b) => (b.ms < a.ms ? b : a)).variant);
      expect(engine.tuning.get('matmul', r.shape)).toBe(r.chosen);
      expect(r.fallback).toBe(engine.info.software ? 'matmul_nn4' : 'matmul_tiled');
    }
    expect(lines[0]).toMatch(/^matmul 1x70x33x68: matmul_nn4 [\d.]+ ms, matmul_tiled [\d.]+ ms -> matmul_(nn4|tiled)/);
    // Whichever the table names, the product matches the CPU reference.
    const ad = randomData(70 * 33, 5);
    const bd = randomData(33 * 68, 6);
    const a = engine.tensor(ad, [70, 33]);
    const b = engine.tensor(bd, [33, 68]);
    for (const v of ['matmul_tiled', 'matmul_nn4']) {
      engine.tuning.set('matmul', matmulKey(1, 70, 33, 68), v);
      const { result } = await runProgram(engine, 'tuned matmul', (rec) => matmul(rec, a, b));
      expectClose(await result.read(), matmulRef(ad, [70, 33], bd, [33, 68]).out, { atol: 1e-5, rtol: 1e-5 }, `matmul via ${v}`);
      result.dispose();
    }
    a.dispose();
    b.dispose();
    await expect(tuneMatmul(engine, [{ batches: 1, m: 4, k: 4, n: 6 }])).rejects.toThrow(/invalid matmul shape .* multiple of 4/);
  });

  it("lists SD-1.5's linear layers and Winograd products", () => {
    const s = unetMatmulShapes(SD15_TRANSFORMER_WIDTHS, 64, 1, [{ n: 1, cin: 640, h: 32, w: 32, cout: 640, transposed: false }]);
    const keys = s.map((x) => matmulKey(x.batches, x.m, x.k, x.n, x.transB));
    for (const k of ['1x4096x320x320T', '1x4096x320x320', '1x4096x320x2560T', '1x4096x1280x320T', '1x4096x2560x320', '1x4096x320x1280', '1x1024x640x640T', '1x256x1280x10240T',
      '1x64x1280x1280T', '1x77x768x320T', '16x640x640x256']) {
      expect(keys, k).toContain(k);
    }
    expect(new Set(keys).size).toBe(keys.length);
  });
});

describe('SD-1.5 conv shapes and silo tune', () => {
  it("lists the UNet's 3x3 convolutions, forward and input gradients", () => {
    const s = unetConv3x3Shapes(SD15_UNET_WIDTHS, 64);
    const keys = s.map((x) => conv3x3Key(x.n, x.cin, x.h, x.w, x.cout, x.transposed));
    // conv_in, down/mid/up ResNets with the skip concatenations (2560, 1920, 1280, 960, 640 inputs), upsamplers, conv_out.
    for (const k of ['F1x4x64x64>320', 'F1x320x64x64>320', 'F1x320x32x32>640', 'F1x1280x8x8>1280', 'F1x2560x8x8>1280', 'F1x1920x16x16>1280',
      'F1x1920x32x32>640', 'F1x960x32x32>640', 'F1x960x64x64>320', 'F1x640x64x64>320', 'F1x1280x16x16>1280', 'F1x320x64x64>4', 'T1x320x64x64>4', 'T1x1280x8x8>2560']) {
      expect(keys, k).toContain(k);
    }
    expect(new Set(keys).size).toBe(keys.length);
    expect(s.filter((x) => x.transposed).length).toBe(s.filter((x) => !x.transposed).length);
    expect(unetConv3x3Shapes(SD15_UNET_WIDTHS, 32, 2)[0]).toEqual({ n: 2, cin: 4, h: 32, w: 32, cout: 320, transposed: false });
  });

  it('parses its arguments and refuses bad ones', async () => {
    expect(parseTuneArgs({}, { SILO_TUNING: '/t.json' })).toEqual({ latent: 64, batch: 1, reps: 3, out: '/t.json' });
    expect(parseTuneArgs({ latent: '32', batch: '2', reps: '1', out: 'x.json' }, {})).toEqual({ latent: 32, batch: 2, reps: 1, out: 'x.json' });
    expect(() => parseTuneArgs({ latent: '20' }, {})).toThrow(/multiple of 8/);
    expect(() => parseTuneArgs({ reps: '0' }, {})).toThrow(/--reps must be an integer in \[1, 100\], got "0"/);
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l) };
    expect(await main(['tune', 'extra'], io)).toBe(2);
    expect(err.join('\n')).toMatch(/unexpected argument\(s\) extra/);
    expect(await main(['tune', '--help'], io)).toBe(0);
    expect(out.join('\n')).toMatch(/silo tune \[--latent N\]/);
  });

  it('a damaged table file is reported and replaced by a fresh one after tuning', async () => {
    // The whole command at the smallest latent (SD-1.5's widths: 8x8 down to 1x1).
    const dir = mkdtempSync(join(tmpdir(), 'silo-tune-'));
    const path = join(dir, 'tuning.json');
    writeFileSync(path, 'not json');
    const out: string[] = [];
    const err: string[] = [];
    try {
      const code = await main(['tune', '--latent', '8', '--reps', '1', '--out', path], { out: (l) => out.push(l), err: (l) => err.push(l) });
      expect(code, err.join('\n')).toBe(0);
      expect(err.join('\n')).toMatch(/not JSON.*using the default kernel choices/);
      const table = JSON.parse(readFileSync(path, 'utf8'));
      expect(table.version).toBe(TUNING_VERSION);
      expect(table.adapter).toBe(engine.tuning.adapter);
      const n = unetConv3x3Shapes(SD15_UNET_WIDTHS, 8).length;
      expect(Object.keys(table.choices.conv3x3)).toHaveLength(n);
      const winograd = unetConv3x3Shapes(SD15_UNET_WIDTHS, 8).filter((s) => table.choices.conv3x3[conv3x3Key(s.n, s.cin, s.h, s.w, s.cout, s.transposed)] === 'winograd');
      const m = unetMatmulShapes(SD15_TRANSFORMER_WIDTHS, 8, 1, winograd).length;
      expect(Object.keys(table.choices.matmul)).toHaveLength(m);
      expect(out.join('\n')).toMatch(new RegExp(`${n + m} shapes in [\\d.]+ s; \\d+ differ from the defaults; table written to`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 900_000);
});
