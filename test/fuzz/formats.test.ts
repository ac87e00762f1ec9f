// The format fuzzer: seeded mutations of valid safetensors files, torch checkpoints, PNGs and JPEGs,
// each parsed fully (every tensor read, every pixel decoded) in a worker thread. A case must end in
// success or a SiloError; any other exception, a hang past the per-case guard or a huge allocation
// fails the test and prints the seed and mutations. CPU only (no GPU work).
//
// FUZZ_CASES=n sets the cases per format (default 500); FUZZ_SEED=s moves the seed range;
// FUZZ_REPRO=format:seed runs just that one case (the seed printed with a failure); FUZZ_VERBOSE=1
// lists the commonest SiloError messages per format (where the cases stop).
import { afterAll, describe, expect, it } from 'vitest';
import { jpegCorpus, pngCorpus, pthCorpus, safetensorsCorpus, type Corpus } from './corpus.js';
import { removeWorkerBundle, runFuzz, summaryLine } from './harness.js';
import type { FuzzFormat } from './protocol.js';

const CASES = Number(process.env.FUZZ_CASES ?? 500);
const BASE_SEED = Number(process.env.FUZZ_SEED ?? 0x51109);
const REPRO = process.env.FUZZ_REPRO?.split(':');
const VERBOSE = process.env.FUZZ_VERBOSE === '1';
const GUARD_MS = 5000;

afterAll(removeWorkerBundle);

const FORMATS: [FuzzFormat, () => Corpus | Promise<Corpus>][] = [
  ['safetensors', safetensorsCorpus],
  ['pth', pthCorpus],
  ['png', pngCorpus],
  ['jpeg', jpegCorpus],
];

describe('fuzz: mutated files end in success or a SiloError', () => {
  for (const [format, corpus] of FORMATS) {
    const seeds = REPRO ? (REPRO[0] === format ? [Number(REPRO[1])] : []) : Array.from({ length: CASES }, (_, i) => BASE_SEED * 1000 + i);
    it.skipIf(seeds.length === 0)(`${format}: ${seeds.length} cases`, { timeout: 120_000 }, async () => {
      const summary = await runFuzz(format, await corpus(), seeds, GUARD_MS, undefined, VERBOSE);
      console.log(summaryLine(summary));
      if (VERBOSE) for (const [msg, n] of [...summary.details].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`  ${n}x ${msg}`);
      const report = summary.failures.map((f) => `  seed ${f.seed} (FUZZ_REPRO=${format}:${f.seed}) ${f.what}\n    -> ${f.outcome}`).join('\n');
      expect(summary.failures, `${summary.failures.length} ${format} case(s) failed:\n${report}`).toEqual([]);
      expect(summary.cases).toBe(seeds.length);
      // The corpus and the mutations must reach both outcomes, or the fuzzer tests nothing.
      if (!REPRO) {
        expect(summary.ok).toBeGreaterThan(0);
        expect(summary.cases - summary.ok).toBeGreaterThan(0);
      }
    });
  }
});

describe('fuzz harness', () => {
  it('tells success, SiloErrors, foreign exceptions, sync and async hangs and huge allocations apart', { timeout: 60_000 }, async () => {
    // Seeds 0..5 behave as: ok, SiloError, TypeError, endless loop, 96 MiB allocation (cap 64 MiB here), never-settling promise.
    const s = await runFuzz('selftest', [], [0, 1, 2, 3, 4, 5, 6, 7], 1000, 64 << 20);
    expect(s.cases, JSON.stringify({ ...s, errors: [...s.errors] })).toBe(8);
    expect(s.ok).toBe(2); // seeds 0 and 6
    expect([...s.errors]).toEqual([['SiloError', 2]]); // seeds 1 and 7
    const bySeed = new Map(s.failures.map((f) => [f.seed, f.outcome]));
    expect([...bySeed.keys()].sort()).toEqual([2, 3, 4, 5]);
    expect(bySeed.get(2)).toMatch(/not a SiloError: TypeError: a raw TypeError/);
    expect(bySeed.get(3)).toMatch(/hang: no result after 1000 ms/);
    expect(bySeed.get(4)).toMatch(/huge allocation/);
    expect(bySeed.get(5)).toMatch(/hang/);
  });
});
