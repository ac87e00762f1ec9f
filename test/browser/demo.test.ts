// The restoration page (web/, as `npm run demo` builds and serves it) in headless Chromium, end to end:
// the tiny SD models come from the local hub imitation (another origin, CORS) through the streamed,
// sha256-verified OPFS cache, the operator (a small SILO preserve CNN) from a URL beside the page; a
// real photo from ../shared is picked, degraded (sr4) and restored with SILO-CNN at 64x64. Then: a
// second visit loads every weight from the cache with no weight request; Cancel stops within a step;
// a bad image, a forced small limit and a browser without WebGPU each show a clear message in the page.
// A screenshot of the finished page is written to test-output/ (not committed).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'puppeteer-core';
// @ts-expect-error plain ESM script without types
import { buildWeb, serveWeb } from '../../scripts/demo.mjs';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';
import { preserveWeights } from '../helpers/silo-preserve.js';
import { preserveConfig } from '../../src/models/silo/config.js';
import { f32Entry, serializeSafetensors } from '../../src/formats/safetensors.js';
import { crc32 } from '../../src/formats/zip.js';
import { goldenReleaseZip } from '../helpers/silo-release.js';
import { launchChromium, type Chromium } from './chromium.js';

const PHOTO = new URL('../../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;
const OUT = new URL('../../test-output/', import.meta.url).pathname;

interface DemoState {
  state: string;
  errors: { during: string; kind: string; message: string }[];
  report: string | null;
  metrics: Record<string, number | null> | null;
  fetchedBytes: number | null;
  progressEvents: number;
  previews: number;
}

let hub: HubServer;
let site: { url: string; close: () => Promise<void> };
let chromium: Chromium;
let tmp: string;
const served: string[] = [];

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'silo-demo-'));
  hub = await startHubServer({ lifetimeMs: 900_000, maxRequests: 10_000 });
  const dir = await buildWeb(join(tmp, 'site'));
  const ops = join(tmp, 'ops');
  mkdirSync(ops);
  const cfg = preserveConfig({ base_channels: 8, num_blocks: 2, noise_embed_dim: 16, pos_embed_channels: 6, max_noise: 0.1 });
  const w = preserveWeights(cfg, 11);
  writeFileSync(join(ops, 'preserve.safetensors'), serializeSafetensors(Object.fromEntries(Object.entries(w).map(([k, v]) => [k, f32Entry(v.data, v.shape)]))));
  writeFileSync(join(ops, 'not-an-image.png'), 'this is text, not a PNG');
  writeFileSync(join(ops, 'huge.png'), hugePngHeader(30_000, 30_000));
  site = await serveWeb({ site: dir, mounts: { '/ops/': ops }, log: (l: string) => served.push(l) });
  chromium = await launchChromium();
}, 180_000);

afterAll(async () => {
  await chromium?.close();
  await site?.close();
  await hub?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const state = (page: Page) => page.evaluate(() => (window as unknown as { siloDemo: DemoState }).siloDemo) as Promise<DemoState>;

async function waitState(page: Page, want: string[], timeout: number): Promise<DemoState> {
  await page
    .waitForFunction((w: string[]) => w.includes(document.body.dataset.state ?? ''), { timeout, polling: 200 }, want)
    .catch(async () => {
      const s = await state(page).catch(() => null);
      throw new Error(`the page did not reach ${want.join('/')} within ${timeout} ms: ${JSON.stringify({ state: s?.state, errors: s?.errors })}`);
    });
  return state(page);
}

/** Opens the page with these settings and waits for the worker's WebGPU adapter. */
async function openPage(query: Record<string, string>, pageErrors: string[] = []): Promise<Page> {
  const page = await chromium.browser.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(m.text());
  });
  await page.goto(`${site.url}?${new URLSearchParams(query)}`);
  return page;
}

const hubQuery = (extra: Record<string, string> = {}) => ({
  model: 'hub', repo: hub.repoId, endpoint: hub.endpoint, operator: 'url', operatorUrl: '/ops/preserve.safetensors',
  task: 'sr4', size: '64', steps: '6', previewEvery: '2', cache: 'opfs', ...extra,
});

/** Requests for weight bytes: the resolve GETs of .safetensors files and every CDN GET. */
const weightRequests = () => hub.requests.filter((r) => r.method === 'GET' && (r.origin === 'cdn' || /\.safetensors$/.test(r.path))).length;

async function pickImage(page: Page, path: string) {
  const input = await page.$('#image-file');
  await (input as unknown as { uploadFile: (p: string) => Promise<void> }).uploadFile(path);
  await page.waitForFunction(() => document.getElementById('image-info')!.textContent !== '', { timeout: 10_000 });
}

async function canvasPixels(page: Page, id: string): Promise<{ width: number; height: number; data: number[] }> {
  return page.evaluate((cid: string) => {
    const c = document.getElementById(cid) as HTMLCanvasElement;
    const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height);
    return { width: d.width, height: d.height, data: Array.from(d.data) };
  }, id);
}

describe('the restoration page in headless Chromium', () => {
  it('restores a shared photo with the tiny models streamed from the hub into the OPFS cache', async () => {
    const errors: string[] = [];
    const page = await openPage(hubQuery(), errors);
    const ready = await waitState(page, ['idle', 'no-webgpu', 'error'], 60_000);
    expect(ready.state, JSON.stringify(ready.errors)).toBe('idle');
    expect(await page.$eval('#webgpu-status', (e) => e.textContent)).toMatch(/WebGPU .*Origin Private File System/);

    const before = weightRequests();
    await page.click('#load');
    const loaded = await waitState(page, ['ready', 'error'], 180_000);
    expect(loaded.state, JSON.stringify(loaded.errors)).toBe('ready');
    expect(loaded.fetchedBytes).toBeGreaterThan(1e6);
    expect(weightRequests() - before, 'weights were downloaded').toBeGreaterThan(0);
    expect(await page.$eval('#cache-info', (e) => e.textContent)).toMatch(/\d+ files, [\d.]+ MB \(opfs\)/);
    expect(await page.$eval('#method', (e) => (e as HTMLSelectElement).value)).toBe('silo-cnn');

    await pickImage(page, PHOTO);
    await page.click('#run');
    const done = await waitState(page, ['done', 'error'], 300_000);
    expect(done.state, JSON.stringify(done.errors)).toBe('done');
    expect(done.progressEvents).toBe(6);
    expect(done.previews).toBeGreaterThan(0);

    // The result is a picture: not blank, and not the input photo.
    const after = await canvasPixels(page, 'after');
    const measured = await canvasPixels(page, 'before');
    const input = await canvasPixels(page, 'groundtruth');
    expect([after.width, after.height]).toEqual([64, 64]);
    expect([input.width, input.height]).toEqual([64, 64]);
    const meanAbsDiff = after.data.reduce((a, v, i) => a + (i % 4 === 3 ? 0 : Math.abs(v - input.data[i]!)), 0) / (64 * 64 * 3);
    expect(meanAbsDiff, 'the restored canvas differs from the input photo').toBeGreaterThan(1);
    const lum = after.data.filter((_, i) => i % 4 !== 3);
    const mean = lum.reduce((a, b) => a + b, 0) / lum.length;
    const spread = Math.sqrt(lum.reduce((a, b) => a + (b - mean) ** 2, 0) / lum.length);
    expect(spread, 'the restored canvas is not one flat colour').toBeGreaterThan(2);
    expect([measured.width, measured.height]).toEqual([16, 16]);

    // The report offered for download parses and says what ran; the PNG link holds a PNG.
    const links = await page.evaluate(async () => {
      const rep = document.getElementById('download-report') as HTMLAnchorElement;
      const png = document.getElementById('download-png') as HTMLAnchorElement;
      await new Promise((r) => setTimeout(r, 200)); // toBlob is asynchronous
      const text = await (await fetch(rep.href)).text();
      const head = png.href ? Array.from(new Uint8Array(await (await fetch(png.href)).arrayBuffer()).subarray(0, 8)) : [];
      return { text, head, hidden: [rep.hidden, png.hidden] };
    });
    const report = JSON.parse(links.text);
    expect(report.settings).toMatchObject({ method: 'silo-cnn', task: 'sr4', steps: 6, size: 64 });
    expect(report.model).toMatchObject({ repo: hub.repoId, commit: hub.commit, cache: 'opfs' });
    expect(report.model.files.find((f: { path: string }) => f.path === 'unet/diffusion_pytorch_model.fp16.safetensors').sha256).toBe(hub.sha256('unet/diffusion_pytorch_model.fp16.safetensors'));
    expect(report.dispatches.autoencoder_in_loop).toBe(0);
    expect(links.head).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(links.hidden).toEqual([false, false]);
    const metrics = await page.$eval('#metrics', (e) => e.textContent);
    expect(metrics).toMatch(/psnr/);
    expect(Number.isFinite(done.metrics!['psnr'])).toBe(true);

    mkdirSync(OUT, { recursive: true });
    await page.setViewport({ width: 1200, height: 1400 });
    await page.screenshot({ path: join(OUT, 'demo-page.png'), fullPage: true });
    console.log(`[demo] screenshot: ${join(OUT, 'demo-page.png')}; psnr ${done.metrics!['psnr']?.toFixed(2)}`);
    expect(errors).toEqual([]);
    await page.close();
  }, 600_000);

  it('a second visit loads every weight from the cache with no weight request', async () => {
    const page = await openPage(hubQuery());
    expect((await waitState(page, ['idle', 'error'], 60_000)).state).toBe('idle');
    const before = weightRequests();
    await page.click('#load');
    const loaded = await waitState(page, ['ready', 'error'], 180_000);
    expect(loaded.state, JSON.stringify(loaded.errors)).toBe('ready');
    expect(loaded.fetchedBytes).toBe(0);
    expect(weightRequests() - before, 'no weight was requested again').toBe(0);
    expect(served.filter((l) => l.startsWith('GET /ops/preserve.safetensors')).length, 'the operator was fetched once, on the first visit').toBe(1);
    expect(await page.$eval('#download-text', (e) => e.textContent)).toMatch(/all weights from the cache/);
    await page.close();
  }, 300_000);

  it('Clear cache empties the store, and the next load downloads again', async () => {
    const page = await openPage(hubQuery());
    await waitState(page, ['idle'], 60_000);
    await page.click('#load'); // from the cache, or filling it
    expect((await waitState(page, ['ready', 'error'], 180_000)).state).toBe('ready');
    await page.waitForFunction(() => /^[1-9]\d* files/.test(document.getElementById('cache-info')!.textContent ?? ''), { timeout: 10_000 });
    await page.click('#clear-cache');
    await page.waitForFunction(() => /^0 files, 0\.0 MB/.test(document.getElementById('cache-info')!.textContent ?? ''), { timeout: 10_000 });
    const before = weightRequests();
    await page.click('#load');
    const loaded = await waitState(page, ['ready', 'error'], 180_000);
    expect(loaded.state, JSON.stringify(loaded.errors)).toBe('ready');
    expect(loaded.fetchedBytes).toBeGreaterThan(1e6);
    expect(weightRequests() - before).toBeGreaterThan(0);
    await page.close();
  }, 300_000);

  it('the Cache API fallback stores and serves the weights too', async () => {
    for (const visit of [1, 2]) {
      const page = await openPage(hubQuery({ cache: 'cache-api' }));
      expect((await waitState(page, ['idle', 'error'], 60_000)).state).toBe('idle');
      expect(await page.$eval('#webgpu-status', (e) => e.textContent)).toMatch(/Cache API \(fallback\)/);
      const before = weightRequests();
      await page.click('#load');
      const loaded = await waitState(page, ['ready', 'error'], 180_000);
      expect(loaded.state, JSON.stringify(loaded.errors)).toBe('ready');
      if (visit === 1) expect(weightRequests() - before).toBeGreaterThan(0);
      else expect([loaded.fetchedBytes, weightRequests() - before]).toEqual([0, 0]);
      await page.close();
    }
  }, 300_000);

  it('a local folder the user picks loads tensor by tensor, with no request to the hub', async () => {
    const dir = join(tmp, 'tiny-sd');
    for (const [path, bytes] of hub.files) {
      mkdirSync(join(dir, path, '..'), { recursive: true });
      writeFileSync(join(dir, path), bytes);
    }
    const page = await openPage({ model: 'folder', operator: 'none', method: 'latent-dps', task: 'sr4', size: '64', steps: '2', cache: 'memory' });
    await waitState(page, ['idle'], 60_000);
    const input = await page.$('#model-folder');
    await (input as unknown as { uploadFile: (...p: string[]) => Promise<void> }).uploadFile(dir);
    expect(await page.$eval('#model-folder', (e) => (e as HTMLInputElement).files!.length)).toBe(hub.files.size);
    const before = hub.requests.length;
    await page.click('#load');
    const loaded = await waitState(page, ['ready', 'error'], 180_000);
    expect(loaded.state, JSON.stringify(loaded.errors)).toBe('ready');
    expect(hub.requests.length).toBe(before);
    expect(await page.$eval('#log', (e) => e.textContent)).toMatch(/diffusers pipeline from picked folder tiny-sd/);
    await pickImage(page, PHOTO);
    await page.click('#run');
    const done = await waitState(page, ['done', 'error'], 300_000);
    expect(done.state, JSON.stringify(done.errors)).toBe('done');
    await page.close();
  }, 400_000);

  it("SILO's trained_ckpt.zip picked in the page: its sr4 operator is converted in memory and SILO-RG set up with SILO's settings", async () => {
    const zipPath = join(tmp, 'trained_ckpt.zip');
    writeFileSync(zipPath, goldenReleaseZip(['sr4']));
    const page = await openPage({ model: 'hub', repo: hub.repoId, endpoint: hub.endpoint, operator: 'release-zip', task: 'gaussian_blur', prompt: 'something else', cache: 'opfs' });
    await waitState(page, ['idle'], 60_000);
    expect((await page.$$eval('#operator-zip-task option', (o) => o.map((e) => (e as HTMLOptionElement).value))).sort()).toEqual(['gaussian_blur', 'inpaint_center', 'inpaint_random', 'jpeg10', 'sr4', 'sr8']);
    await page.select('#operator-zip-task', 'sr4');
    const input = await page.$('#operator-zip');
    await (input as unknown as { uploadFile: (p: string) => Promise<void> }).uploadFile(zipPath);
    await page.click('#load');
    const loaded = await waitState(page, ['ready', 'error'], 180_000);
    expect(loaded.state, JSON.stringify(loaded.errors)).toBe('ready');
    const form = await page.evaluate(() => ({
      task: (document.getElementById('task') as HTMLSelectElement).value,
      method: (document.getElementById('method') as HTMLSelectElement).value,
      prompt: (document.getElementById('prompt') as HTMLInputElement).value,
      size: (document.getElementById('size') as HTMLInputElement).value,
      log: document.getElementById('log')!.textContent,
    }));
    expect(form).toMatchObject({ task: 'sr4', method: 'silo-rg', prompt: 'A high quality photo of a face', size: '512' });
    expect(form.log).toMatch(/SILO's silo-rg operator for sr4 \(ffhq\) from trained_ckpt\.zip:trained_ckpt\/RG\/sr_4_rg_ffhq_operator\.pt, converted in memory/);
    // The operator imitates sr4 only: another task is refused before any work.
    await page.select('#task', 'gaussian_blur');
    await pickImage(page, PHOTO);
    await page.click('#run');
    const s = await waitState(page, ['error', 'done'], 60_000);
    expect(s.errors.at(-1)).toMatchObject({ during: 'run', kind: 'input' });
    expect(s.errors.at(-1)!.message).toMatch(/the loaded operator is SILO's for sr4, not gaussian_blur/);
    await page.close();
  }, 300_000);

  it('Cancel stops a long run within a step, and the page can run again', async () => {
    const page = await openPage(hubQuery({ steps: '400', previewEvery: '0' }));
    await waitState(page, ['idle'], 60_000);
    await page.click('#load');
    expect((await waitState(page, ['ready', 'error'], 180_000)).state).toBe('ready');
    await pickImage(page, PHOTO);
    await page.click('#run');
    await page.waitForFunction(() => (window as unknown as { siloDemo: DemoState }).siloDemo.progressEvents >= 3, { timeout: 120_000, polling: 50 });
    // Count and click in one task of the page, so no step can finish between the two.
    const atCancel = await page.evaluate(() => {
      const n = (window as unknown as { siloDemo: DemoState }).siloDemo.progressEvents;
      (document.getElementById('cancel') as HTMLButtonElement).click();
      return n;
    });
    const s = await waitState(page, ['cancelled', 'error', 'done'], 60_000);
    expect(s.state, JSON.stringify(s.errors)).toBe('cancelled');
    // After the click: the step in flight, and on a loaded machine one step's message the worker had already
    // posted but the page had not yet received (seen once with the CPU shared by a training run). A Cancel
    // that did not stop the loop would go on for hundreds of steps.
    expect(s.progressEvents - atCancel, 'at most the step in flight (and one message in transit) after Cancel').toBeLessThanOrEqual(2);
    expect(await page.$eval('#step-text', (e) => e.textContent)).toMatch(/cancelled: restore: stopped after \d+ of 400 steps/);
    expect(await page.$eval('#run', (e) => (e as HTMLButtonElement).disabled)).toBe(false);
    await page.close();
  }, 400_000);

  it('a file that is not an image, and one that declares 30000x30000 pixels, are refused with messages naming them', async () => {
    const page = await openPage(hubQuery());
    await waitState(page, ['idle'], 60_000);
    await page.click('#load');
    expect((await waitState(page, ['ready', 'error'], 180_000)).state).toBe('ready');
    await pickImage(page, join(tmp, 'ops', 'not-an-image.png'));
    await page.click('#run');
    const s = await waitState(page, ['error', 'done'], 60_000);
    expect(s.state).toBe('error');
    expect(s.errors.at(-1)).toMatchObject({ during: 'run', kind: 'image' });
    const shown = await page.$eval('#error', (e) => ({ text: e.textContent, hidden: (e as HTMLElement).hidden }));
    expect(shown.hidden).toBe(false);
    expect(shown.text).toMatch(/This image cannot be used .*not-an-image\.png: not a known image format/);
    await pickImage(page, join(tmp, 'ops', 'huge.png'));
    await page.click('#run');
    const huge = await waitState(page, ['error', 'done'], 60_000);
    expect(huge.errors.at(-1)).toMatchObject({ during: 'run', kind: 'image' });
    expect(huge.errors.at(-1)!.message).toMatch(/huge\.png: 30000x30000 = 900000000 pixels is more than maxPixels/);
    await page.close();
  }, 300_000);

  it('a limit too small for the chosen size names the limit and a size that fits, which then runs', async () => {
    // Latent-DPS keeps the decoder (and its gradient) in every step, untiled: at 512x512 the tiny VAE's
    // upsampled 64-channel activation is 64 MiB; capped at 10 MiB (every tiny weight, the largest CLIP's
    // 9 MB token table, still loads) the page must name the limit and 192x192.
    const page = await openPage(hubQuery({ method: 'latent-dps', size: '512', steps: '1', previewEvery: '0', maxBufferSize: String(10 << 20) }));
    await waitState(page, ['idle'], 60_000);
    await page.click('#load');
    const loaded = await waitState(page, ['ready', 'error'], 180_000);
    expect(loaded.state, JSON.stringify(loaded.errors)).toBe('ready');
    await pickImage(page, PHOTO);
    await page.click('#run');
    const s = await waitState(page, ['error', 'done'], 300_000);
    expect(s.state).toBe('error');
    const last = s.errors.at(-1)!;
    expect(last.kind, last.message).toBe('limit');
    expect(last.message).toMatch(/^this adapter's maxBufferSize is 10\.0 MiB, and a 512x512 restoration needs [\d.]+ MiB in one buffer; choose a size of 192x192 or smaller/);
    expect(await page.$eval('#error', (e) => e.textContent)).toMatch(/limits are too small/);
    await page.$eval('#size', (e) => ((e as HTMLInputElement).value = '192'));
    await page.click('#run');
    const again = await waitState(page, ['error', 'done'], 300_000);
    expect(again.state, JSON.stringify(again.errors.at(-1))).toBe('done');
    expect(await page.$eval('#error', (e) => (e as HTMLElement).hidden)).toBe(true);
    await page.close();
  }, 600_000);

  it('a lost device (the GPU process killed) is named, and Load starts a new one', async () => {
    const page = await openPage(hubQuery({ method: 'latent-dps', steps: '2', previewEvery: '0' }));
    await waitState(page, ['idle'], 60_000);
    await page.click('#load');
    expect((await waitState(page, ['ready', 'error'], 180_000)).state).toBe('ready');
    const cdp = await chromium.browser.target().createCDPSession();
    await cdp.send('Browser.crashGpuProcess');
    await cdp.detach();
    await pickImage(page, PHOTO);
    await page.click('#run');
    const s = await waitState(page, ['error', 'done'], 120_000);
    expect(s.state, 'the run after the GPU process died').toBe('error');
    expect(s.errors.at(-1)).toMatchObject({ kind: 'device-lost' });
    expect(await page.$eval('#error', (e) => e.textContent)).toMatch(/The GPU device was lost .*press Load again/);
    await page.click('#load');
    expect((await waitState(page, ['ready', 'error'], 180_000)).state).toBe('ready');
    await page.click('#run');
    const again = await waitState(page, ['error', 'done'], 300_000);
    expect(again.state, JSON.stringify(again.errors.at(-1))).toBe('done');
    await page.close();
  }, 600_000);

  it('a browser without WebGPU gets a message instead of a broken page', async () => {
    const page = await chromium.browser.newPage();
    await page.evaluateOnNewDocument(() => {
      delete (Navigator.prototype as unknown as { gpu?: unknown }).gpu;
    });
    await page.goto(`${site.url}?${new URLSearchParams(hubQuery())}`);
    const s = await waitState(page, ['no-webgpu', 'idle'], 60_000);
    expect(s.state).toBe('no-webgpu');
    expect(await page.$eval('#webgpu-status', (e) => e.textContent)).toMatch(/no WebGPU/);
    expect(await page.$eval('#load', (e) => (e as HTMLButtonElement).disabled)).toBe(true);
    await page.close();
  }, 120_000);
});

/** A PNG signature and IHDR that declare width x height RGB pixels, and nothing more: decoders must refuse before allocating. */
function hugePngHeader(width: number, height: number): Uint8Array {
  const out = new Uint8Array(8 + 25);
  out.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, 13);
  out.set([0x49, 0x48, 0x44, 0x52], 12); // IHDR
  dv.setUint32(16, width);
  dv.setUint32(20, height);
  out.set([8, 2, 0, 0, 0], 24); // 8-bit RGB, deflate, adaptive filters, no interlace
  dv.setUint32(29, crc32(out.subarray(12, 29)));
  return out;
}
