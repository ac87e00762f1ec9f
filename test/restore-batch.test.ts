// Batches: the item list (folders, JSON lines), shards (explicit or JOB_COMPLETION_INDEX), the summary,
// and `silo restore --batch` end to end with the tiny golden models: outputs per item, resume after a
// rerun, a failing item that does not stop the batch, two shards covering one batch. restore() is a
// stand-in (the measurement "restored") so each item costs milliseconds; the real sampler runs through
// the same session in restore-session.test.ts.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import * as loop from '../src/restore/loop.js';
import type { Engine } from '../src/engine/device.js';
import type { Tensor } from '../src/engine/tensor.js';
import { decodePng, encodePng } from '../src/io/png.js';
import { resizeAndCenterCrop } from '../src/io/image.js';
import { batchSummary, folderItems, parseBatchList, parseShard, shardItems, summaryName } from '../src/restore/batch.js';
import { GOLDEN_ROOT } from './helpers/golden.js';

vi.mock('../src/restore/loop.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../src/restore/loop.js')>();
  return { ...m, restore: vi.fn(m.restore) };
});
const restoreSpy = vi.mocked(loop.restore);

const FACES = new URL('../../shared/assets/images/faces256/', import.meta.url).pathname;

describe('batch lists and shards', () => {
  it('a folder gives its images sorted, named by stem; ids clash case-insensitively', () => {
    expect(folderItems(['b.png', 'notes.txt', 'a.JPG', 'c.jpeg'], 'input', 'd')).toEqual([
      { id: 'a', path: 'a.JPG', as: 'input' },
      { id: 'b', path: 'b.png', as: 'input' },
      { id: 'c', path: 'c.jpeg', as: 'input' },
    ]);
    expect(() => folderItems(['x.png', 'X.jpg'], 'input', 'd')).toThrow('d: "X.jpg" and "x.png" would both write x.png; give one of them an "id"');
    expect(() => folderItems(['notes.txt'], 'input', 'd')).toThrow('d: no images (.png, .jpg, .jpeg) in the folder');
  });

  it('a JSON-lines list: input or ground_truth, optional id/seed/prompt; every error names its line', () => {
    const items = parseBatchList('# comment\n{"input": "y/a.png"}\n\n{"ground_truth": "/abs/b.jpg", "id": "bee", "seed": 3, "prompt": "a dog"}\n', 'l.jsonl');
    expect(items).toEqual([
      { id: 'a', path: 'y/a.png', as: 'input' },
      { id: 'bee', path: '/abs/b.jpg', as: 'ground-truth', seed: 3, prompt: 'a dog' },
    ]);
    const bad: [string, string][] = [
      ['{"input": "a.png"}\n{"input": ', 'l.jsonl:2: not valid JSON'],
      ['[1]', 'l.jsonl:1: expected an object'],
      ['{"input": "a.png", "ground_truth": "b.png"}', 'l.jsonl:1: give exactly one of "input"'],
      ['{"seed": 1}', 'l.jsonl:1: give exactly one of "input"'],
      ['{"input": "a.png", "sede": 1}', 'l.jsonl:1: unknown key "sede"'],
      ['{"input": "a.png", "seed": -1}', 'l.jsonl:1: "seed" must be a non-negative integer, got -1'],
      ['{"input": "a.png", "id": "../x"}', 'l.jsonl: item "a.png": its output name "../x" must be'],
      ['{"input": "a.png"}\n{"input": "b/a.png"}', 'l.jsonl: "a.png" and "b/a.png" would both write a.png'],
      ['\n# nothing\n', 'l.jsonl: the list has no items'],
    ];
    for (const [text, message] of bad) expect(() => parseBatchList(text, 'l.jsonl'), text).toThrow(message);
  });

  it('shards: i/N, or N with JOB_COMPLETION_INDEX; the shards of a list are disjoint and cover it', () => {
    expect(parseShard('1/4', {})).toEqual({ index: 1, count: 4, from: '--shard' });
    expect(parseShard('4', { JOB_COMPLETION_INDEX: '3' })).toEqual({ index: 3, count: 4, from: 'JOB_COMPLETION_INDEX' });
    expect(() => parseShard('4/4', {})).toThrow('--shard 4/4: the index must be below the shard count 4');
    expect(() => parseShard('4', {})).toThrow('--shard 4: no shard index: give --shard i/4, or set JOB_COMPLETION_INDEX');
    expect(() => parseShard('4', { JOB_COMPLETION_INDEX: '4' })).toThrow('JOB_COMPLETION_INDEX=4: the index must be below the shard count 4');
    expect(() => parseShard('4', { JOB_COMPLETION_INDEX: 'x' })).toThrow('JOB_COMPLETION_INDEX=x: not a non-negative integer');
    expect(() => parseShard('1/x', {})).toThrow('--shard 1/x: expected i/N');
    expect(() => parseShard('0/0', {})).toThrow('the shard count must be at least 1');
    const items = Array.from({ length: 11 }, (_, k) => k);
    const parts = [0, 1, 2].map((i) => shardItems(items, { index: i, count: 3, from: '' }));
    expect(parts).toEqual([[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]);
    expect(summaryName({ index: 2, count: 3, from: '' })).toBe('summary-2-of-3.json');
    expect(summaryName()).toBe('summary.json');
  });

  it('the summary counts outcomes and averages finite metrics over restored items only', () => {
    const s = batchSummary(
      [
        { id: 'a', path: 'a', status: 'restored', metrics: { psnr: 20, ms_ssim: null } },
        { id: 'b', path: 'b', status: 'restored', metrics: { psnr: 30, ms_ssim: null } },
        { id: 'c', path: 'c', status: 'failed', error: 'x' },
        { id: 'd', path: 'd', status: 'skipped' },
      ],
      { batch: 'l' },
    );
    expect(s).toMatchObject({ batch: 'l', items: 4, restored: 2, skipped: 1, failed: 1, mean_metrics_of_restored: { psnr: 25 } });
  });
});

function capture(): CliIO & { lines: string[]; errors: string[]; text(): string } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l), text: () => [...lines, ...errors].join('\n') };
}

/** restore() stand-in: the upsampled-free "restoration" is y itself (same-size task). */
async function fakeRestore(engine: Engine, _m: unknown, _A: unknown, y: Tensor, opts: Parameters<typeof loop.restore>[4]) {
  const data = await y.read();
  const phase = { ms: 1, dispatches: 1, autoencoderDispatches: 0, peakLiveBytes: 0 };
  return {
    image: engine.tensor(data, y.shape, 'f32', 'fake_image'),
    latent: engine.tensor(new Float32Array(4 * 64), [1, 4, 8, 8], 'f32', 'fake_latent'),
    report: {
      method: opts.method, steps: opts.steps, timesteps: [1, 1] as [number, number], encode: phase,
      loop: { ...phase, perStepMs: 1, perStepDispatches: 1, replayedSteps: 0, perStepEncodeMs: 1, perStepExposedEncodeMs: 1 }, decode: phase, previews: { count: 0, ms: 0, dispatches: 0 },
      residuals: [], finalResidual: 0, forwardMode: 'reuse' as const, unetTapeBytes: 0,
    },
  };
}

describe('silo restore --batch', () => {
  let tmp: string;
  let photos: string;
  const base = (extra: string[]) => ['restore', '--golden', GOLDEN_ROOT, '--method', 'latent-dps', '--task', 'gaussian_blur', '--size', '64', '--steps', '1', '--quiet', ...extra];

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'silo-batch-'));
    // Four 64x64 photos in a folder (the shared 256x256 faces, resized) keep every item small.
    photos = join(tmp, 'photos');
    mkdirSync(photos);
    for (const name of readdirSync(FACES).filter((n) => n.endsWith('.png')).slice(0, 4)) {
      const png = await decodePng(readFileSync(join(FACES, name)), name);
      const rgb = { width: png.width, height: png.height, channels: 3 as const, data: png.data };
      writeFileSync(join(photos, name), await encodePng(resizeAndCenterCrop(rgb, 64, 64)));
    }
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('restores every item into --out-dir with its report, then a rerun skips them and resumes a missing one', async () => {
    const out = join(tmp, 'out1');
    mkdirSync(out);
    restoreSpy.mockImplementation(fakeRestore);
    try {
      const io = capture();
      expect(await main(base(['--batch', photos, '--batch-as', 'ground-truth', '--out-dir', out]), io), io.text()).toBe(0);
      const names = readdirSync(photos).map((n) => n.replace('.png', ''));
      expect(readdirSync(out).sort()).toEqual([...names.flatMap((n) => [`${n}.json`, `${n}.png`]), 'summary.json'].sort());
      expect(restoreSpy).toHaveBeenCalledTimes(4);
      const report = JSON.parse(readFileSync(join(out, `${names[0]}.json`), 'utf8'));
      expect(report.item).toMatchObject({ id: names[0], as: 'ground-truth' });
      expect(report.settings).toMatchObject({ method: 'latent-dps', task: 'gaussian_blur', size: 64 });
      expect(Number.isFinite(report.metrics.psnr)).toBe(true);
      const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
      expect(summary).toMatchObject({ items: 4, restored: 4, skipped: 0, failed: 0, shard: null });
      expect(Number.isFinite(summary.mean_metrics_of_restored.psnr)).toBe(true);

      // Rerun: nothing to do, no GPU started.
      restoreSpy.mockClear();
      const again = capture();
      expect(await main(base(['--batch', photos, '--batch-as', 'ground-truth', '--out-dir', out]), again), again.text()).toBe(0);
      expect(restoreSpy).not.toHaveBeenCalled();
      expect(again.lines[0]).toMatch(/4 items, 4 already done, 0 to restore/);
      expect(again.text()).not.toMatch(/WebGPU/);

      // An item whose report is missing is not finished: the rerun restores it alone.
      unlinkSync(join(out, `${names[2]}.json`));
      const resumed = capture();
      expect(await main(base(['--batch', photos, '--batch-as', 'ground-truth', '--out-dir', out]), resumed), resumed.text()).toBe(0);
      expect(restoreSpy).toHaveBeenCalledTimes(1);
      expect(JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'))).toMatchObject({ restored: 1, skipped: 3 });
    } finally {
      restoreSpy.mockReset();
      restoreSpy.mockImplementation((await vi.importActual<typeof import('../src/restore/loop.js')>('../src/restore/loop.js')).restore);
    }
  }, 300_000);

  it('a failing item is recorded and the batch goes on (exit 1); per-item seeds reach the sampler', async () => {
    const out = join(tmp, 'out2');
    mkdirSync(out);
    const [a, b] = readdirSync(photos);
    writeFileSync(join(tmp, 'broken.png'), 'not a png');
    const list = join(tmp, 'list.jsonl');
    writeFileSync(list, [`{"ground_truth": "photos/${a}", "seed": 11}`, '{"ground_truth": "broken.png"}', `{"ground_truth": "${join(photos, b!)}", "id": "second"}`].join('\n'));
    const seeds: number[] = [];
    restoreSpy.mockImplementation(async (...args) => (seeds.push(args[4].seed), fakeRestore(...args)));
    try {
      const io = capture();
      expect(await main(base(['--batch', list, '--out-dir', out, '--seed', '5']), io), io.text()).toBe(1);
      expect(seeds).toEqual([11, 5]);
      expect(readdirSync(out).sort()).toEqual([`${a!.replace('.png', '')}.json`, `${a!.replace('.png', '')}.png`, 'second.json', 'second.png', 'summary.json'].sort());
      const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
      expect(summary).toMatchObject({ items: 3, restored: 2, failed: 1 });
      expect(summary.outcomes[1]).toMatchObject({ id: 'broken', status: 'failed' });
      expect(summary.outcomes[1].error).toMatch(/broken\.png/);
      expect(io.errors.join('\n')).toMatch(/\[2\/3\] broken: failed: .*broken\.png/);
    } finally {
      restoreSpy.mockReset();
      restoreSpy.mockImplementation((await vi.importActual<typeof import('../src/restore/loop.js')>('../src/restore/loop.js')).restore);
    }
  }, 300_000);

  it('two shards (one from JOB_COMPLETION_INDEX) cover the batch once, each with its own summary', async () => {
    const out = join(tmp, 'out3');
    mkdirSync(out);
    restoreSpy.mockImplementation(fakeRestore);
    const saved = process.env['JOB_COMPLETION_INDEX'];
    try {
      const io0 = capture();
      expect(await main(base(['--batch', photos, '--batch-as', 'ground-truth', '--out-dir', out, '--shard', '0/2']), io0), io0.text()).toBe(0);
      process.env['JOB_COMPLETION_INDEX'] = '1';
      const io1 = capture();
      expect(await main(base(['--batch', photos, '--batch-as', 'ground-truth', '--out-dir', out, '--shard', '2']), io1), io1.text()).toBe(0);
      expect(io1.lines[0]).toMatch(/shard 1\/2 \(from JOB_COMPLETION_INDEX\): 2 of 4 items/);
      const s0 = JSON.parse(readFileSync(join(out, 'summary-0-of-2.json'), 'utf8'));
      const s1 = JSON.parse(readFileSync(join(out, 'summary-1-of-2.json'), 'utf8'));
      const ids = [...s0.outcomes, ...s1.outcomes].map((o: { id: string }) => o.id).sort();
      expect(ids).toEqual(readdirSync(photos).map((n) => n.replace('.png', '')).sort());
      expect(restoreSpy).toHaveBeenCalledTimes(4);
      expect(existsSync(join(out, 'summary.json'))).toBe(false);
    } finally {
      if (saved === undefined) delete process.env['JOB_COMPLETION_INDEX'];
      else process.env['JOB_COMPLETION_INDEX'] = saved;
      restoreSpy.mockReset();
      restoreSpy.mockImplementation((await vi.importActual<typeof import('../src/restore/loop.js')>('../src/restore/loop.js')).restore);
    }
  }, 300_000);

  it('refuses flags that do not fit a batch, and an --out-dir inside the batch folder, before any work', async () => {
    const cases: [string[], RegExp, number][] = [
      [['--batch', photos, '--out', join(tmp, 'x.png'), '--out-dir', tmp], /--out does not apply to --batch/, 2],
      [['--batch', photos], /--batch needs --out-dir/, 2],
      [['--ground-truth', join(photos, readdirSync(photos)[0]!), '--shard', '0/2'], /--shard only applies to --batch/, 2],
      [['--batch', photos, '--out-dir', tmp, '--batch-as', 'truth'], /--batch-as truth: expected input or ground-truth/, 2],
      [['--batch', photos, '--out-dir', photos], /--out-dir .* is inside the folder --batch/, 2],
      [['--batch', join(tmp, 'missing'), '--out-dir', tmp], /--batch .*missing: no such file or folder/, 1],
    ];
    for (const [extra, message, code] of cases) {
      const io = capture();
      expect(await main(base(extra), io), extra.join(' ')).toBe(code);
      expect(io.text()).toMatch(message);
    }
    expect(restoreSpy).not.toHaveBeenCalled();
  });
});
