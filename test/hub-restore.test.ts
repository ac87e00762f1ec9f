// End to end: `silo restore --model org/name` in-process against the local hub imitation (tiny
// models, 64x64): the repo is fetched into HF_HUB_CACHE, loadDiffusersPipeline builds every model from
// the snapshot (fp16 UNet) and the prompt is encoded; the sampler itself is a stand-in (the measurement
// as the result: its real runs are in cli-restore.test.ts) to keep this to seconds on SwiftShader. The
// report records repo, revision,
// commit and each weight file's sha256. --offline is wired through (an empty cache is named, no
// request sent); offline runs against a full cache are in hub.test.ts (no GPU).
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { startHubServer, type HubServer } from './helpers/hub-server.js';
import * as restoreModule from '../src/restore/loop.js';
import type { Engine } from '../src/engine/device.js';
import type { Tensor } from '../src/engine/tensor.js';

vi.mock('../src/restore/loop.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../src/restore/loop.js')>();
  return { ...m, restore: vi.fn(m.restore) };
});
const restoreSpy = vi.mocked(restoreModule.restore);
type Models = Parameters<typeof restoreModule.restore>[1];

/** The stand-in sampler: records the models it was given and returns y as the image. */
function standIn(seen: { models?: Models }) {
  return async (engine: Engine, models: Models, _A: unknown, y: Tensor, opts: Parameters<typeof restoreModule.restore>[4]) => {
    seen.models = models;
    const phase = { ms: 1, dispatches: 1, autoencoderDispatches: 0, peakLiveBytes: 0 };
    return {
      image: engine.tensor(await y.read(), y.shape, 'f32', 'stand_in_image'),
      latent: engine.tensor(new Float32Array(4 * 64), [1, 4, 8, 8], 'f32', 'stand_in_latent'),
      report: {
        method: opts.method, steps: opts.steps, timesteps: [1, 1] as [number, number], encode: phase, loop: { ...phase, perStepMs: 1, perStepDispatches: 1, replayedSteps: 0, perStepEncodeMs: 1, perStepExposedEncodeMs: 1 },
        decode: phase, previews: { count: 0, ms: 0, dispatches: 0 }, residuals: [], finalResidual: 0, forwardMode: 'reuse' as const, unetTapeBytes: 0,
      },
    };
  };
}

const PHOTO = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;
const ENV = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE', 'HF_TOKEN', 'HF_HOME', 'HF_TOKEN_PATH', 'HUGGING_FACE_HUB_TOKEN'] as const;

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
  process.env['HF_HOME'] = join(dir, 'home'); // no saved token of this machine's user
  for (const k of ['HF_HUB_OFFLINE', 'HF_TOKEN', 'HF_TOKEN_PATH', 'HUGGING_FACE_HUB_TOKEN']) delete process.env[k];
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
  it('downloads the repo, restores and records provenance', async () => {
    const args = (tag: string) => ['restore', '--model', `${server.repoId}@main`, '--method', 'latent-dps', '--task', 'gaussian_blur', '--ground-truth', PHOTO,
      '--size', '64', '--steps', '1', '--out', join(dir, `${tag}.png`), '--report', join(dir, `${tag}.json`), '--quiet'];
    const io = capture();
    const seen: { models?: Models } = {};
    restoreSpy.mockImplementationOnce(standIn(seen) as unknown as typeof restoreModule.restore);
    expect(await main(args('online'), io), io.text()).toBe(0);
    // The models came from the hub snapshot: the tiny UNet (its fp16 file), its VAE and a [1, 77, 48] prompt embedding.
    expect(seen.models!.unet.config.blockOutChannels).toEqual([32, 64, 64, 64]);
    expect(seen.models!.text.shape).toEqual([1, 77, 48]);
    expect(io.text()).toContain(`${server.repoId}@main: commit ${server.commit}`);
    const report = JSON.parse(readFileSync(join(dir, 'online.json'), 'utf8')) as { model: { repo: string; revision: string; commit: string; files: Array<{ path: string; sha256?: string }> } };
    expect(report.model).toMatchObject({ repo: server.repoId, revision: 'main', commit: server.commit });
    for (const f of ['unet/diffusion_pytorch_model.fp16.safetensors', 'vae/diffusion_pytorch_model.safetensors', 'text_encoder/model.safetensors']) {
      expect(report.model.files.find((x) => x.path === f)?.sha256, f).toBe(server.sha256(f));
    }
    expect(server.requests.some((r) => /safety_checker|feature_extractor/.test(r.path))).toBe(false);

  });

  it('--offline uses the cache only: an empty one is named, with no request sent', async () => {
    server.requests.length = 0;
    const io = capture();
    const empty = join(dir, 'empty-cache');
    process.env['HF_HUB_CACHE'] = empty;
    try {
      const code = await main(['restore', '--model', server.repoId, '--offline', '--method', 'latent-dps', '--ground-truth', PHOTO, '--size', '64', '--steps', '1', '--out', join(dir, 'o.png')], io);
      expect(code).not.toBe(0);
    } finally {
      process.env['HF_HUB_CACHE'] = join(dir, 'cache');
    }
    expect(io.text()).toContain(`offline: ${server.repoId}@main is not in the cache ${empty}`);
    expect(server.requests).toEqual([]);
  });

  it('a bad repo id is refused before any work, naming the rule', async () => {
    const io = capture();
    const code = await main(['restore', '--model', 'org/bad--name', '--method', 'latent-dps', '--ground-truth', PHOTO, '--size', '64', '--steps', '1', '--out', join(dir, 'x.png')], io);
    expect(code).not.toBe(0);
    expect(io.text()).toMatch(/"org\/bad--name" is not a valid Hugging Face repo id: "--" and "\.\." are not allowed/);
    expect(io.text()).not.toMatch(/adapter/i); // no engine was created
  });
});
