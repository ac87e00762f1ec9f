// The training page (web/train.html, as `npm run demo` builds and serves it) in headless Chromium: the
// real TAEF2 autoencoder from /golden/, real photos from ../shared picked as training and held-out
// images, a short run of SILO's CNN operator with a crop cache; the loss falls, validation reports the
// operator against the identity, and the trained operator downloads as a safetensors file that parses.
// Then: Stop ends a long run with a checkpoint, the checkpoint resumes, and a missing encoder is a clear
// error in the page; the readout operator trains on a Stable Diffusion folder given by URL (the golden
// mini models) and downloads as weights.safetensors + config.json; motion_blur takes a kernel file.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'puppeteer-core';
// @ts-expect-error plain ESM script without types
import { buildWeb, serveWeb } from '../../scripts/demo.mjs';
import { parseSafetensors } from '../../src/formats/safetensors.js';
import { inferDegradationConfig } from '../../src/models/silo/config.js';
import { launchChromium, type Chromium } from './chromium.js';
import { miniSdFolder } from '../helpers/sd-folder.js';

const IMAGES = new URL('../../../shared/assets/images', import.meta.url).pathname;
const GOLDEN = new URL('../../../shared/golden', import.meta.url).pathname;
const TRAIN = ['natural/kodim03.png', 'natural/kodim05.png', 'faces256/ffhq_69133.png', 'photos/mate_LadyBird.png'].map((f) => `${IMAGES}/${f}`);
const HELD = [`${IMAGES}/faces256/ffhq_69037.png`];

interface TrainState {
  state: string;
  steps: number;
  lastLoss: number | null;
  validations: { step: number; latentL1: number; identityL1: number; psnr?: number; roundTripL1?: number }[];
  checkpoints: number;
  cacheDone: number;
  errors: { kind: string; message: string }[];
  operatorBytes: number | null;
  operatorConfig: string | null;
}

let site: { url: string; close: () => Promise<void> };
let chromium: Chromium;
let tmp: string;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'silo-train-page-'));
  const dir = await buildWeb(join(tmp, 'site'));
  site = await serveWeb({ site: dir, mounts: { '/golden/': GOLDEN, '/sd/': miniSdFolder(tmp) } });
  chromium = await launchChromium();
}, 180_000);

afterAll(async () => {
  await chromium?.close();
  await site?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const state = (page: Page) => page.evaluate(() => (window as unknown as { siloTrain: TrainState }).siloTrain) as Promise<TrainState>;

async function waitState(page: Page, want: string[], timeout: number): Promise<TrainState> {
  await page.waitForFunction((w: string[]) => w.includes(document.body.dataset.state ?? ''), { timeout, polling: 200 }, want).catch(async () => {
    const s = await state(page).catch(() => null);
    throw new Error(`the page did not reach ${want.join('/')} within ${timeout} ms: ${JSON.stringify(s)}`);
  });
  return state(page);
}

async function open(query: Record<string, string>, errors: string[]): Promise<Page> {
  const page = await chromium.browser.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${site.url}train.html?${new URLSearchParams(query)}`);
  const s = await waitState(page, ['idle', 'no-webgpu'], 60_000);
  expect(s.state, JSON.stringify(s.errors)).toBe('idle');
  return page;
}

async function pick(page: Page, id: string, paths: string[]) {
  const input = await page.$(`#${id}`);
  await (input as unknown as { uploadFile: (...p: string[]) => Promise<void> }).uploadFile(...paths);
}

/** The bytes behind a download link, fetched inside the page. */
async function linkBytes(page: Page, id: string): Promise<Uint8Array> {
  const b64 = await page.$eval(`#${id}`, async (a) => {
    const buf = new Uint8Array(await (await fetch((a as HTMLAnchorElement).href)).arrayBuffer());
    let s = '';
    for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode(...buf.subarray(i, i + 0x8000));
    return btoa(s);
  });
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

const query = { task: 'gaussian_blur', size: '32', batch: '4', lr: '2e-3', cache: '8', valEvery: '6', checkpointEvery: '6', encoder: '/golden/taef2/taef2_encoder.safetensors', decoder: '/golden/taef2/taef2_decoder.safetensors' };

describe('the training page in headless Chromium', () => {
  it('trains the CNN operator for TAEF2 on picked photos: the loss falls, validation and downloads work', async () => {
    const errors: string[] = [];
    const page = await open({ ...query, steps: '12' }, errors);
    await pick(page, 'train-files', TRAIN);
    await pick(page, 'heldout-files', HELD);
    expect(await page.$eval('#data-info', (e) => e.textContent)).toBe('4 training image(s), 1 held out');
    await page.click('#train');
    const done = await waitState(page, ['done', 'error'], 400_000);
    expect(done.state, JSON.stringify(done.errors)).toBe('done');
    expect(done.steps).toBe(12);
    expect(done.cacheDone).toBe(8);
    expect(done.validations.map((v) => v.step)).toEqual([0, 6, 12]);
    const [v0, v2] = [done.validations[0]!, done.validations[2]!];
    expect(v2.latentL1).toBeLessThan(v0.latentL1);
    expect(v2.identityL1).toBe(v0.identityL1);
    expect(v2.psnr).toBeGreaterThan(0);
    // The round trip through the autoencoder does not depend on the operator.
    expect(v2.roundTripL1).toBe(v0.roundTripL1);
    expect(v0.roundTripL1).toBeLessThan(v0.identityL1);
    expect(await page.$eval('#validation', (e) => e.textContent)).toMatch(/round trip/);
    expect(await page.$eval('#curve', (e) => e.innerHTML)).toMatch(/<svg/);
    expect(await page.$$eval('#validation tr', (r) => r.length)).toBe(4);
    const op = parseSafetensors(await linkBytes(page, 'download-operator'), 'operator.safetensors');
    expect(inferDegradationConfig(op)).toMatchObject({ latentDim: 32, latentSize: 4, sigmaCondition: true });
    expect(op.metadata?.['step']).toBe('12');
    const csv = new TextDecoder().decode(await linkBytes(page, 'download-csv')).trim().split('\n');
    expect(csv.length).toBe(13);
    const losses = csv.slice(1).map((r) => Number(r.split(',')[1]));
    expect(losses.slice(-3).reduce((a, b) => a + b) / 3).toBeLessThan(losses.slice(0, 3).reduce((a, b) => a + b) / 3);
    expect(errors).toEqual([]);
    await page.close();
  }, 600_000);

  it('Stop keeps a checkpoint; the checkpoint resumes (a width-2 operator); a missing encoder is a clear error', async () => {
    const errors: string[] = [];
    const page = await open({ ...query, steps: '400', checkpointEvery: '0', valEvery: '1000', width: '2' }, errors);
    await pick(page, 'train-files', TRAIN);
    await page.click('#train');
    await page.waitForFunction(() => (window as unknown as { siloTrain: TrainState }).siloTrain.steps >= 2, { timeout: 300_000, polling: 100 });
    await page.click('#stop');
    const stopped = await waitState(page, ['stopped', 'error'], 120_000);
    expect(stopped.state, JSON.stringify(stopped.errors)).toBe('stopped');
    expect(stopped.checkpoints).toBe(1);
    const ckpt = await linkBytes(page, 'download-checkpoint');
    const step = Number(parseSafetensors(ckpt, 'checkpoint').metadata?.['step']);
    expect(step).toBe(stopped.steps);
    await page.close();

    // Resume from the downloaded checkpoint to two more steps.
    const resumePath = join(tmp, 'checkpoint.safetensors');
    (await import('node:fs')).writeFileSync(resumePath, ckpt);
    const page2 = await open({ ...query, steps: String(step + 2), checkpointEvery: '0', valEvery: '1000', width: '2' }, errors);
    await pick(page2, 'train-files', TRAIN);
    await pick(page2, 'resume-file', [resumePath]);
    await page2.click('#train');
    const resumed = await waitState(page2, ['done', 'error'], 300_000);
    expect(resumed.state, JSON.stringify(resumed.errors)).toBe('done');
    expect(resumed.steps).toBe(2);
    const op = parseSafetensors(await linkBytes(page2, 'download-operator'), 'op');
    expect(op.metadata?.['step']).toBe(String(step + 2));
    expect(inferDegradationConfig(op)).toMatchObject({ latentDim: 32, width: 2 });
    await page2.close();

    const page3 = await open({ ...query, steps: '2', encoder: '/golden/taef2/missing.safetensors' }, errors);
    await pick(page3, 'train-files', TRAIN);
    await page3.click('#train');
    const failed = await waitState(page3, ['error', 'done'], 120_000);
    expect(failed.state).toBe('error');
    expect(failed.errors[0]!.message).toMatch(/encoder .*missing.safetensors: HTTP 404/);
    expect(await page3.$eval('#error', (e) => e.textContent)).toMatch(/HTTP 404/);
    expect(errors).toEqual([]);
    await page3.close();
  }, 600_000);

  it('trains the readout operator on a Stable Diffusion folder by URL and downloads its folder (config.json + weights.safetensors)', async () => {
    const errors: string[] = [];
    const page = await open({ operator: 'readout', prior: 'sd-url', sdUrl: '/sd', task: 'sr4', size: '64', batch: '2', cache: '4', steps: '2', valEvery: '2', checkpointEvery: '0' }, errors);
    expect(await page.$eval('#lr', (e) => (e as HTMLInputElement).value)).toBe('2e-4');
    expect(await page.$eval('#width', (e) => (e.closest('label') as HTMLElement).hidden)).toBe(true);
    await pick(page, 'train-files', TRAIN);
    await pick(page, 'heldout-files', HELD);
    await page.click('#train');
    const done = await waitState(page, ['done', 'error'], 500_000);
    expect(done.state, JSON.stringify(done.errors)).toBe('done');
    expect(done.steps).toBe(2);
    expect(done.validations.map((v) => v.step)).toEqual([0, 2]);
    expect(done.validations[0]!.psnr).toBeGreaterThan(0);
    const cfg = JSON.parse(done.operatorConfig!) as Record<string, unknown>;
    expect(cfg).toMatchObject({ _class_name: 'AggregationNetwork', latent_size: 8, output_head_channels: 4, sigma_emb_dim: 128 });
    expect(JSON.parse(new TextDecoder().decode(await linkBytes(page, 'download-config')))).toEqual(cfg);
    expect(await page.$eval('#download-operator', (a) => (a as HTMLAnchorElement).download)).toBe('weights.safetensors');
    const w = parseSafetensors(await linkBytes(page, 'download-operator'), 'weights.safetensors');
    expect(w.names()).toContain('mixing_weights');
    expect(w.metadata?.['step']).toBe('2');
    expect(JSON.parse(w.metadata!['prior']!)).toMatchObject({ timestep: 0, prompt: '' });
    // The readout operator with a TAESD-family autoencoder is refused in the page, naming what to choose.
    await page.select('#prior-kind', 'taesd');
    await page.click('#train');
    await page.waitForFunction(() => !(document.getElementById('error') as HTMLElement).hidden);
    expect(await page.$eval('#error', (e) => e.textContent)).toMatch(/readout operator reads a Stable Diffusion UNet's features/);
    expect(errors).toEqual([]);
    await page.close();
  }, 600_000);

  it('motion_blur trains with a picked kernel file (its fingerprint is in the operator); without one it asks for it', async () => {
    const errors: string[] = [];
    const kernel = join(tmp, 'streak.txt');
    (await import('node:fs')).writeFileSync(kernel, Array.from({ length: 5 }, (_, i) => Array.from({ length: 5 }, (_, j) => (i === j ? 1 : 0)).join(' ')).join('\n'));
    const page = await open({ ...query, task: 'motion_blur', steps: '2', cache: '4', valEvery: '100', checkpointEvery: '0' }, errors);
    expect(await page.$eval('#kernel-label', (e) => (e as HTMLElement).hidden)).toBe(false);
    await pick(page, 'train-files', TRAIN);
    await page.click('#train');
    await page.waitForFunction(() => !(document.getElementById('error') as HTMLElement).hidden);
    expect(await page.$eval('#error', (e) => e.textContent)).toMatch(/motion_blur: choose its blur kernel file/);
    await pick(page, 'kernel-file', [kernel]);
    await page.click('#train');
    const done = await waitState(page, ['done', 'error'], 300_000);
    expect(done.state, JSON.stringify(done.errors)).toBe('done');
    const op = parseSafetensors(await linkBytes(page, 'download-operator'), 'operator.safetensors');
    expect(op.metadata?.['kernel']).toMatch(/^5x5 fnv1a:[0-9a-f]{8}$/);
    expect(JSON.parse(op.metadata!['train_settings']!)).toMatchObject({ task: 'motion_blur' });
    expect(errors).toEqual([]);
    await page.close();
  }, 600_000);
});
