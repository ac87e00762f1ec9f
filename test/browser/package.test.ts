// The packed package in headless Chromium: the scratch project that installed the tarball is served
// from 127.0.0.1 and a page imports 'silo-webgpu' through an import map pointing where the package's
// "exports" send a browser, then runs a matmul on Chromium's WebGPU. (Node half: test/package.test.ts.)
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EXPECTED, MATMUL, packAndInstall, readJson, type PackedPackage } from '../helpers/packed-package.js';
import { serveDir } from '../helpers/static-server.js';
import { launchChromium, type Chromium } from './chromium.js';

/** The file "exports" gives a browser for '.', following the conditions in their order. */
function browserEntry(exportsField: unknown): string {
  if (typeof exportsField === 'string') return exportsField;
  if (!exportsField || typeof exportsField !== 'object') throw new Error(`no browser entry in exports: ${JSON.stringify(exportsField)}`);
  const map = exportsField as Record<string, unknown>;
  if ('.' in map) return browserEntry(map['.']);
  const key = Object.keys(map).find((k) => ['browser', 'import', 'default'].includes(k));
  if (!key) throw new Error(`no browser condition in exports: ${JSON.stringify(map)}`);
  return browserEntry(map[key]);
}

let pkg: PackedPackage;
let server: { base: string; close: () => void } | undefined;
let chromium: Chromium | undefined;
beforeAll(async () => {
  pkg = await packAndInstall();
  server = await serveDir(pkg.project);
  chromium = await launchChromium();
}, 180_000);
afterAll(async () => {
  await chromium?.close();
  server?.close();
  pkg?.cleanup();
});

describe('packed package in headless Chromium', () => {
  it('a page imports the installed browser bundle and runs a matmul', async () => {
    const entry = browserEntry(readJson(join(pkg.installed, 'package.json'))['exports']);
    expect(entry).toBe('./dist/silo-webgpu.js');
    const importMap = { imports: { 'silo-webgpu': `/node_modules/silo-webgpu/${entry.replace(/^\.\//, '')}` } };
    writeFileSync(
      join(pkg.project, 'index.html'),
      `<!doctype html><meta charset="utf-8"><title>silo-webgpu package</title><link rel="icon" href="data:,">
<script type="importmap">${JSON.stringify(importMap)}</script>
<script type="module">
import { Engine, runProgram, matmul } from 'silo-webgpu';
window.siloPackageRun = async () => { ${MATMUL} return { summary, y }; };
</script>`,
    );
    const page = await chromium!.browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('response', (r) => {
      if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`);
    });
    await page.goto(`${server!.base}/index.html`);
    await page.waitForFunction(() => typeof (window as unknown as { siloPackageRun?: unknown }).siloPackageRun === 'function', { timeout: 30_000 }).catch(() => {
      throw new Error(`the page did not load the package: ${errors.join('; ')}`);
    });
    const out = (await page.evaluate(() => (window as unknown as { siloPackageRun: () => Promise<unknown> }).siloPackageRun())) as { summary: string; y: number[] };
    console.log(`[package] chromium: ${out.summary}`);
    expect(out.summary).toMatch(/^WebGPU/);
    expect(out.y).toEqual(EXPECTED);
    expect(errors).toEqual([]);
  });
});
