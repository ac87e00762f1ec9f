// Runs the weight-store checks in headless Chromium: main-thread checks on the page, and every
// backend (opfs, cache-api, memory) inside a dedicated worker, served from 127.0.0.1 (a secure
// context, so OPFS and the Cache API exist).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { openTestPage, type BrowserPage } from './serve.js';
import type { CheckResult } from './weight-store-checks.js';

let bp: BrowserPage;
beforeAll(async () => {
  bp = await openTestPage('test/browser/weight-store-page.ts', {
    bundles: { 'weight-store-worker.js': 'test/browser/weight-store-worker.ts' },
    ready: 'siloWeightStoreChecks',
  });
}, 120_000);
afterAll(async () => {
  await bp?.close();
});

describe('weight store in headless Chromium', () => {
  it('passes every check on the main thread and in a dedicated worker', async () => {
    const results = (await bp.page.evaluate(() => window.siloWeightStoreChecks())) as CheckResult[];
    for (const r of results) console.log(`[weight-store] ${r.ok ? 'ok  ' : 'FAIL'} ${r.name}${r.detail ? ` (${r.detail})` : ''}`);
    // Every backend ran its full list (a check that silently went missing would otherwise pass).
    for (const kind of ['opfs', 'cache-api', 'memory']) {
      expect(results.filter((r) => r.name.startsWith(`${kind}: `)).length, kind).toBeGreaterThanOrEqual(14);
    }
    expect(results.some((r) => r.name.startsWith('QuotaExceededError'))).toBe(true);
    const failed = results.filter((r) => !r.ok);
    expect(failed, failed.map((r) => `${r.name}: ${r.detail}`).join('\n')).toEqual([]);
  }, 300_000);
});
