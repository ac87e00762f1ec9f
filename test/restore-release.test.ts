// SILO's own weights end to end, offline: a local imitation of the hub serves the prior (the tiny golden
// models as stablediffusionapi/realistic-vision-v51) and a local imitation of the GitHub release serves
// trained_ckpt.zip (operators in SILO's checkpoint formats, sized for the tiny UNet). `silo pull` fetches
// both; `silo restore --task sr4` then needs nothing else and fetches nothing; the second task's operator
// missing from the cache, offline, is named with what to do; an unreachable hub says how to go without it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { decodePng, encodePng } from '../src/io/png.js';
import { resizeAndCenterCrop } from '../src/io/image.js';
import { startHubServer, type HubServer } from './helpers/hub-server.js';
import { readoutCheckpoint, releaseZip, startReleaseServer, stateDictCheckpoint, tinyCnnWeights, tinyReadoutWeights, type ReleaseServer } from './helpers/silo-release.js';
import { preserveWeights } from './helpers/silo-preserve.js';
import { preserveConfig } from '../src/models/silo/config.js';

const FACE = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;
const PRIOR = 'stablediffusionapi/realistic-vision-v51';
// unet_mini's readout features: up_blocks 0-2 give 64 channels, up_blocks[3] 32; its time embedding is 128 wide.
const UNET_MINI_FEATURES = [...Array(9).fill(64), 32, 32, 32];

function capture(): CliIO & { lines: string[]; errors: string[]; text(): string } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l), text: () => [...lines, ...errors].join('\n') };
}

describe('SILO release: silo pull, then silo restore --task with nothing else', () => {
  let tmp: string;
  let hub: HubServer;
  let release: ReleaseServer;
  let photo: string;
  const saved: Record<string, string | undefined> = {};
  const ENV = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE', 'SILO_CACHE', 'SILO_RELEASE_URL', 'HF_TOKEN'];

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'silo-release-'));
    hub = await startHubServer({}, PRIOR);
    release = await startReleaseServer(
      releaseZip({
        'trained_ckpt/RG/sr_4_rg_ffhq_operator.pt': readoutCheckpoint(tinyReadoutWeights({ featureDims: UNET_MINI_FEATURES, projection: 128, latent: 8, emb: 128 }), { optimizerParams: 3 }),
        'trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt': stateDictCheckpoint(tinyCnnWeights({ latent: 8, emb: 128 })),
        // SILO's preserve CNN for sr4 (a bare state dict, as the real one), small: base 8, 2 blocks.
        'trained_ckpt/RG/sr_4_cnn_ffhq_operator.pt': stateDictCheckpoint(
          new Map(Object.entries(preserveWeights(preserveConfig({ base_channels: 8, num_blocks: 2, noise_embed_dim: 16 }), 21))),
        ),
      }),
    );
    for (const k of ENV) saved[k] = process.env[k];
    Object.assign(process.env, { HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: join(tmp, 'hub'), SILO_CACHE: join(tmp, 'silo'), SILO_RELEASE_URL: release.url });
    delete process.env['HF_HUB_OFFLINE'];
    delete process.env['HF_TOKEN'];
    const png = await decodePng(readFileSync(FACE), FACE);
    photo = join(tmp, 'face.png');
    writeFileSync(photo, await encodePng(resizeAndCenterCrop({ width: png.width, height: png.height, channels: 3, data: png.data }, 64, 64)));
  }, 120_000);
  afterAll(async () => {
    for (const k of ENV) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    await hub?.close();
    await release?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('pull fetches the prior and the sr4 operator; restore --task sr4 uses them with zero requests and records them', async () => {
    const pull = capture();
    expect(await main(['pull', '--task', 'sr4'], pull), pull.text()).toBe(0);
    expect(release.requests.length).toBeGreaterThan(0);
    expect(hub.requests.length).toBeGreaterThan(0);
    const [hubSeen, releaseSeen] = [hub.requests.length, release.requests.length];

    const out = join(tmp, 'out.png');
    const reportPath = join(tmp, 'r.json');
    const io = capture();
    expect(await main(['restore', '--ground-truth', photo, '--task', 'sr4', '--steps', '2', '--quiet', '--out', out, '--report', reportPath], io), io.text()).toBe(0);
    // Online, the hub client asks for each file's metadata again (HEAD, as huggingface_hub does) but fetches no bytes.
    expect(hub.requests.slice(hubSeen).filter((r) => r.method !== 'HEAD'), 'no hub download: the prior came from the cache').toEqual([]);
    expect(release.requests.length - releaseSeen, 'no release request: the operator came from the cache').toBe(0);
    expect(io.text()).toMatch(/SILO's released readout operator for sr4: trained_ckpt\/RG\/sr_4_rg_ffhq_operator\.pt/);
    const report = JSON.parse(readFileSync(reportPath, 'utf8'));
    expect(report.settings).toMatchObject({ method: 'silo-rg', task: 'sr4', eta: 0.5, eta_from: "SILO's scripts/rg_ffhq_sr_4.sh", clamp_w: true, prompt: 'A high quality photo of a face', size: 64 });
    expect(report.operator).toMatchObject({ sha256: release.sha256, checkpoint: 'trained_ckpt/RG/sr_4_rg_ffhq_operator.pt', dataset: 'ffhq', script: 'scripts/rg_ffhq_sr_4.sh' });
    expect(report.model).toMatchObject({ repo: PRIOR, commit: hub.commit });
    expect(report.dispatches.autoencoder_in_loop).toBe(0);
    const png = await decodePng(readFileSync(out), out);
    expect([png.width, png.height]).toEqual([64, 64]);
  }, 300_000);

  it("restore --task sr4 --method silo-cnn fetches SILO's preserve CNN and guides with it, with its script's settings", async () => {
    // The hub imitation serves one repo (the FFHQ prior, cached by the test above); the row's own prior is SD-1.5.
    const reportPath = join(tmp, 'preserve.json');
    const io = capture();
    const args = ['restore', '--ground-truth', photo, '--task', 'sr4', '--method', 'silo-cnn', '--model', PRIOR, '--steps', '1', '--quiet', '--out', join(tmp, 'p.png'), '--report', reportPath];
    expect(await main(args, io), io.text()).toBe(0);
    expect(io.text()).toMatch(/SILO's released preserve operator for sr4: trained_ckpt\/RG\/sr_4_cnn_ffhq_operator\.pt \(COCO, as scripts\/cnn_coco_sr_4\.sh runs it\)/);
    const report = JSON.parse(readFileSync(reportPath, 'utf8'));
    expect(report.settings).toMatchObject({ method: 'silo-cnn', task: 'sr4', eta: 0.75, clamp_w: true, prompt: 'A high quality photo' });
    expect(report.operator).toMatchObject({ checkpoint: 'trained_ckpt/RG/sr_4_cnn_ffhq_operator.pt', dataset: 'coco' });
    expect(report.dispatches.autoencoder_in_loop).toBe(0);
  }, 300_000);

  it('offline, an operator that was never pulled is named with what to do; the measurement as a positional argument', async () => {
    process.env['HF_HUB_OFFLINE'] = '1';
    // A SILO cache without the release zip (with it, any of its operators converts offline).
    process.env['SILO_CACHE'] = join(tmp, 'silo-empty');
    try {
      const y = join(tmp, 'y8.png');
      const png = await decodePng(readFileSync(photo), photo);
      writeFileSync(y, await encodePng(resizeAndCenterCrop({ width: 64, height: 64, channels: 3, data: png.data }, 8, 8)));
      const io = capture();
      const seen = release.requests.length;
      expect(await main(['restore', y, '--task', 'sr8', '--steps', '1', '--quiet', '--out', join(tmp, 'sr8.png')], io)).toBe(1);
      expect(release.requests.length).toBe(seen);
      expect(io.text()).toMatch(/sr_8_cnn_ffhq_operator/);
      expect(io.text()).toMatch(/is not in the cache .*silo pull --task sr8.* on a machine with network/);
      expect(io.text()).toMatch(/--operator <.*--model <diffusers folder>/);
      expect(io.text()).not.toMatch(/WebGPU/); // refused before the GPU started
    } finally {
      delete process.env['HF_HUB_OFFLINE'];
      process.env['SILO_CACHE'] = join(tmp, 'silo');
    }
  }, 120_000);

  it('an unreachable hub is an error that says how to run from local folders', async () => {
    const io = capture();
    const env = process.env['HF_ENDPOINT'];
    process.env['HF_ENDPOINT'] = 'http://127.0.0.1:1';
    process.env['HF_HUB_CACHE'] = join(tmp, 'empty-hub');
    try {
      expect(await main(['restore', '--ground-truth', photo, '--method', 'latent-dps', '--task', 'sr4', '--quiet', '--out', join(tmp, 'x.png')], io)).toBe(1);
    } finally {
      process.env['HF_ENDPOINT'] = env;
      process.env['HF_HUB_CACHE'] = join(tmp, 'hub');
    }
    expect(io.text()).toMatch(/cannot reach http:\/\/127\.0\.0\.1:1/);
    expect(io.text()).toMatch(/--model <folder> {5}a Stable Diffusion 1\.5 diffusers folder/);
    expect(io.text()).not.toMatch(/--operator <path>/); // latent-dps needs none
  }, 120_000);
});
