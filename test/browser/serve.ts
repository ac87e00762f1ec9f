// Bundles the browser test page with esbuild, serves it from 127.0.0.1 (a secure context, so
// navigator.gpu exists) and launches Debian's Chromium with WebGPU enabled through puppeteer-core.

import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, extname, resolve, sep } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Page } from 'puppeteer-core';
// @ts-expect-error plain ESM script without types
import { bundle } from '../../scripts/build.mjs';
import { launchChromium, type Chromium } from './chromium.js';

/** ../shared/golden is served read-only under /golden/ so page tests can fetch torch-written files. */
const GOLDEN_DIR = resolve(new URL('../../../shared/golden', import.meta.url).pathname);

export interface BrowserPage {
  page: Page;
  url: string;
  close: () => Promise<void>;
}

export interface TestPageOptions {
  /** More bundles served beside page.js: output file name -> entry (e.g. a worker script). */
  bundles?: Record<string, string>;
  /** The window function whose appearance says the page is ready (default siloRunCases). */
  ready?: string;
}

export async function openTestPage(entry: string, options: TestPageOptions = {}): Promise<BrowserPage> {
  const dir = mkdtempSync(join(tmpdir(), 'silo-browser-'));
  await bundle(entry, join(dir, 'page.js'), 'browser');
  for (const [file, src] of Object.entries(options.bundles ?? {})) await bundle(src, join(dir, file), 'browser');
  const ready = options.ready ?? 'siloRunCases';
  const html = '<!doctype html><meta charset="utf-8"><title>silo-webgpu tests</title><script type="module" src="page.js"></script>';
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/' || path === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(html);
      return;
    }
    if (path.startsWith('/golden/')) {
      const file = resolve(GOLDEN_DIR, decodeURIComponent(path.slice('/golden/'.length)));
      if (!file.startsWith(GOLDEN_DIR + sep)) {
        res.writeHead(403).end();
        return;
      }
      let body: Buffer;
      try {
        body = readFileSync(file);
      } catch {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body);
      return;
    }
    try {
      const body = readFileSync(join(dir, path.replace(/^\/+/, '').replace(/\.\./g, '')));
      const type = extname(path) === '.js' ? 'text/javascript' : 'application/octet-stream';
      res.writeHead(200, { 'content-type': type }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  let chromium: Chromium;
  try {
    chromium = await launchChromium();
  } catch (e) {
    server.close();
    throw e;
  }
  const { browser } = chromium;
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  const url = `http://127.0.0.1:${port}/`;
  await page.goto(url);
  await page.waitForFunction((name: string) => typeof (window as unknown as Record<string, unknown>)[name] === 'function', { timeout: 30_000 }, ready).catch(() => {
    throw new Error(`test page did not load: ${errors.join('; ')}`);
  });
  return {
    page,
    url,
    close: async () => {
      await chromium.close();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
