// End to end: `silo restore --model org/name` in-process against the local hub imitation (tiny
// models, 64x64, 1 step): the repo is fetched into HF_HUB_CACHE, the report records repo, revision,
// commit and each weight file's sha256; a second run with --offline sends no request at all.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { startHubServer, type HubServer } from './helpers/hub-server.js';

const PHOTO = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;
const ENV = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE', 'HF_TOKEN'] as const;

let server: HubServer;
let dir: string;
const saved: Record<string, string | undefined> = {};

function capture(): CliIO & { text(): string } {
  const lines: string[] = [];
  return { out: (l) => lines.push(l), err: (l) => lines.push(l), text: () => lines.join('\n') };
}

beforeAll(async () => {
  server = await startHubServer();
  dir = mkdtempSync(join(tmpdir(), 'silo-hub-restore-'));
  for (const k of ENV) saved[k] = process.env[k];
  process.env['HF_ENDPOINT'] = server.endpoint;
  process.env['HF_HUB_CACHE'] = join(dir, 'cache');
  delete process.env['HF_HUB_OFFLINE'];
  delete process.env['HF_TOKEN'];
});
afterAll(async () => {
  for (const k of ENV) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('silo restore --model <hub repo id>', () => {
  it('downloads the repo, restores, records provenance; --offline then needs no server', async () => {
    const args = (tag: string) => ['restore', '--model', `${server.repoId}@main`, '--method', 'latent-dps', '--task', 'sr4', '--ground-truth', PHOTO,
      '--size', '64', '--steps', '1', '--out', join(dir, `${tag}.png`), '--report', join(dir, `${tag}.json`), '--quiet'];
    const io = capture();
    expect(await main(args('online'), io), io.text()).toBe(0);
    const report = JSON.parse(readFileSync(join(dir, 'online.json'), 'utf8')) as { model: { repo: string; revision: string; commit: string; files: Array<{ path: string; sha256?: string }> } };
    expect(report.model).toMatchObject({ repo: server.repoId, revision: 'main', commit: server.commit });
    for (const f of ['unet/diffusion_pytorch_model.fp16.safetensors', 'vae/diffusion_pytorch_model.safetensors', 'text_encoder/model.safetensors']) {
      expect(report.model.files.find((x) => x.path === f)?.sha256, f).toBe(server.sha256(f));
    }
    expect(server.requests.some((r) => /safety_checker|feature_extractor/.test(r.path))).toBe(false);

    server.requests.length = 0;
    const io2 = capture();
    expect(await main([...args('offline'), '--offline'], io2), io2.text()).toBe(0);
    expect(server.requests).toEqual([]);
    const again = JSON.parse(readFileSync(join(dir, 'offline.json'), 'utf8')) as typeof report;
    expect(again.model.files).toEqual(report.model.files);
  });

  it('a bad repo id is refused before any work, naming the rule', async () => {
    const io = capture();
    const code = await main(['restore', '--model', 'org/bad--name', '--method', 'latent-dps', '--ground-truth', PHOTO, '--size', '64', '--steps', '1', '--out', join(dir, 'x.png')], io);
    expect(code).not.toBe(0);
    expect(io.text()).toMatch(/"org\/bad--name" is not a valid Hugging Face repo id: "--" and "\.\." are not allowed/);
    expect(io.text()).not.toMatch(/adapter/i); // no engine was created
  });
});
