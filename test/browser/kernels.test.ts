// Runs the kernel cases inside headless Chromium (SwiftShader WebGPU) and checks each one.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { openTestPage, type BrowserPage } from './serve.js';
import type { CaseResult } from './cases.js';

let bp: BrowserPage;
beforeAll(async () => {
  bp = await openTestPage('test/browser/page.ts');
}, 120_000);
afterAll(async () => {
  await bp?.close();
});

describe('headless Chromium', () => {
  it('has a WebGPU adapter', async () => {
    const summary = await bp.page.evaluate(() => window.siloAdapter());
    console.log(`[browser] ${summary}`);
    expect(summary).toMatch(/WebGPU/);
  });

  it('runs every kernel case and matches the CPU references', async () => {
    const names = await bp.page.evaluate(() => window.siloCaseNames());
    expect(names.length).toBeGreaterThan(0);
    const results = (await bp.page.evaluate(() => window.siloRunCases())) as CaseResult[];
    expect(results.map((r) => r.name)).toEqual(names);
    for (const r of results) {
      console.log(`[browser] ${r.ok ? 'ok  ' : 'FAIL'} ${r.name} (max abs diff ${r.maxAbsDiff.toExponential(2)}, ${r.ms.toFixed(0)} ms)`);
    }
    const failed = results.filter((r) => !r.ok);
    expect(failed, failed.map((r) => `${r.name}: ${r.worst}`).join('\n')).toEqual([]);
  }, 600_000);
});
