// Launches Debian's Chromium headless with WebGPU enabled (puppeteer-core), with a fresh profile
// that close() removes. Shared by the kernel test page (serve.ts) and the packed-package test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer, { type Browser } from 'puppeteer-core';

export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';

export interface Chromium {
  browser: Browser;
  close: () => Promise<void>;
}

export async function launchChromium(): Promise<Chromium> {
  const userDataDir = mkdtempSync(join(tmpdir(), 'silo-chromium-'));
  let browser: Browser;
  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      protocolTimeout: 600_000,
      args: [
        '--headless=new',
        '--no-sandbox',
        '--enable-unsafe-webgpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-default-apps',
        '--disable-extensions',
        `--user-data-dir=${userDataDir}`,
      ],
    });
  } catch (e) {
    rmSync(userDataDir, { recursive: true, force: true });
    throw new Error(`could not launch ${CHROMIUM}: ${(e as Error).message}`);
  }
  return {
    browser,
    close: async () => {
      await browser.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}
