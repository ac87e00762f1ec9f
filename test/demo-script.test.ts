// `npm run demo` as a user runs it: scripts/demo.mjs builds the page, serves it on 127.0.0.1 and prints
// the address; the page, its worker, the tiny test models (../shared/golden) and samples/ are served,
// nothing outside them. `--out DIR` only writes the static files. Bad options exit 2 with a message.
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'silo-demo-script-'));
let child: ChildProcess | undefined;
afterAll(() => {
  child?.kill();
  rmSync(tmp, { recursive: true, force: true });
});

/** Starts the server and resolves with the address it prints. */
function startDemo(): Promise<{ url: string; output: () => string }> {
  child = spawn(process.execPath, ['scripts/demo.mjs', '--port', '0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no address printed within 60 s: ${out}`)), 60_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /silo demo: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
      if (m && /Ctrl-C stops the server/.test(out)) {
        clearTimeout(timer);
        resolve({ url: m[1]!, output: () => out });
      }
    };
    child!.stdout!.on('data', onData);
    child!.stderr!.on('data', onData);
    child!.on('exit', (code) => reject(new Error(`demo exited with ${code}: ${out}`)));
  });
}

describe('npm run demo', () => {
  it('serves the page, its worker, the tiny models and the samples on 127.0.0.1, and prints the address', async () => {
    const { url, output } = await startDemo();
    expect(output()).toMatch(/tiny test models: http:\/\/127\.0\.0\.1:\d+\/golden\//);
    const page = await fetch(url);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(await page.text()).toMatch(/<script type="module" src="main\.js"><\/script>/);
    for (const f of ['main.js', 'worker.js', 'style.css']) {
      const r = await fetch(`${url}${f}`);
      expect([f, r.status]).toEqual([f, 200]);
    }
    expect((await fetch(`${url}worker.js`)).headers.get('content-type')).toBe('text/javascript');
    const cfg = await fetch(`${url}golden/unet_mini/config.json`);
    expect(cfg.status).toBe(200);
    expect(JSON.parse(await cfg.text())).toHaveProperty('block_out_channels');
    const head = await fetch(`${url}golden/unet_mini/diffusion_pytorch_model.safetensors`, { method: 'HEAD' });
    expect([head.status, Number(head.headers.get('content-length'))]).toEqual([200, 13080280]);
    expect((await fetch(`${url}samples/astronaut.jpg`)).status).toBe(200);
    // Nothing outside the served folders.
    for (const p of ['golden/../../main/package.json', 'golden/%2e%2e/%2e%2e/main/package.json', '..%2fpackage.json', 'samples/../package.json']) {
      expect([p, (await fetch(`${url}${p}`)).status]).toEqual([p, 404]);
    }
  }, 120_000);

  it('--out writes the static files only', () => {
    const out = join(tmp, 'site');
    const r = spawnSync(process.execPath, ['scripts/demo.mjs', '--out', out], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/static page built in .*site/);
    expect(readdirSync(out).sort()).toEqual(['index.html', 'main.js', 'main.js.map', 'style.css', 'train-worker.js', 'train-worker.js.map', 'train.html', 'train.js', 'train.js.map', 'worker.js', 'worker.js.map']);
  }, 120_000);

  it('bad options exit 2 with a message', () => {
    for (const args of [['--port', 'x'], ['--nope'], ['--out']]) {
      const r = spawnSync(process.execPath, ['scripts/demo.mjs', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
      expect([args.join(' '), r.status]).toEqual([args.join(' '), 2]);
      expect(r.stderr).toMatch(/^demo: /);
    }
    expect(existsSync(join(tmp, 'x'))).toBe(false);
  });
});
