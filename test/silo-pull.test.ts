// `silo pull` and resolveReleasedOperator against a local imitation of SILO's GitHub release
// (test/helpers/silo-release.ts) and of the hub (the prior): cache layout and recorded sha256, resume
// after a cut, wrong bytes refused, a second pull sends nothing, offline use and its messages, one lock
// for concurrent pulls, and operators that the engine builds (golden weights, on the GPU).
import { describe, it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { pullOperators, resolveReleasedOperator, siloCacheDir, OperatorCacheError, type ReleaseOptions } from '../src/hub/silo-release-node.js';
import { releasedOperator, PRIOR_RV } from '../src/hub/silo-operators.js';
import { parseSafetensors } from '../src/formats/safetensors.js';
import { readSafetensorsFile } from '../src/formats/safetensors-node.js';
import { aggregationConfig, inferDegradationConfig } from '../src/models/silo/config.js';
import { WeightLoader } from '../src/models/weights.js';
import { AggregationNetwork } from '../src/models/silo/readout.js';
import { DegradationModel } from '../src/models/silo/cnn.js';
import type { FileProgress } from '../src/hub/progress-text.js';
import {
  goldenCnnWeights, goldenReadoutWeights, goldenReleaseZip, readoutCheckpoint, releaseZip, startReleaseServer, stateDictCheckpoint,
  tinyCnnWeights, tinyReadoutWeights, RELEASE_PATH, type ReleaseServer, type Weights,
} from './helpers/silo-release.js';
import { startHubServer, type HubServer } from './helpers/hub-server.js';
import { getEngine } from './helpers/engine.js';

const RG = tinyReadoutWeights();
const RAND_IP = tinyReadoutWeights({ condInpaint: true, seed: 50 });
const CNN = tinyCnnWeights();
const ZIP = releaseZip(
  {
    'trained_ckpt/RG/sr_4_rg_ffhq_operator.pt': readoutCheckpoint(RG),
    'trained_ckpt/RG/rand_ip_rg_ffhq_operator.pt': readoutCheckpoint(RAND_IP, { step: 7 }),
    'trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt': stateDictCheckpoint(CNN),
  },
  // Both entry kinds: stored (read in place) and deflated (inflated in memory).
  { stored: (p) => p.includes('/CNN/') },
);

let server: ReleaseServer;
let hub: HubServer;
let cache: string;
const temps: string[] = [];
const tempDir = (tag: string) => {
  const d = mkdtempSync(join(tmpdir(), `silo-pull-${tag}-`));
  temps.push(d);
  return d;
};
let env: Record<string, string | undefined>;

beforeAll(async () => {
  server = await startReleaseServer(ZIP);
  hub = await startHubServer({}, PRIOR_RV);
});
afterAll(async () => {
  await server?.close();
  await hub?.close();
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});
beforeEach(() => {
  server.requests.length = 0;
  server.cutOnce = false;
  server.corrupt = false;
  hub.requests.length = 0;
  cache = tempDir('cache');
  env = { SILO_CACHE: cache, SILO_RELEASE_URL: server.url, HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: tempDir('hf'), HF_HOME: tempDir('hfhome'), HOME: tempDir('home') };
});

function capture(): CliIO & { outText: () => string; errText: () => string } {
  const out: string[] = [];
  const err: string[] = [];
  return { out: (l) => out.push(l), err: (l) => err.push(l), outText: () => out.join('\n'), errText: () => err.join('\n') };
}

/** Runs `silo pull ...` in-process with `env` as the environment. */
async function pull(args: string[], e = env) {
  const saved = { ...process.env };
  for (const k of ['SILO_CACHE', 'SILO_RELEASE_URL', 'SILO_RELEASE_SHA256', 'XDG_CACHE_HOME', 'HF_HUB_OFFLINE', 'HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HOME', 'HF_TOKEN']) delete process.env[k];
  Object.assign(process.env, e);
  const io = capture();
  try {
    return { code: await main(['pull', ...args], io), io };
  } finally {
    process.env = saved;
  }
}

function expectSameTensors(file: string, w: Weights) {
  const f = parseSafetensors(readFileSync(file), file);
  expect(f.names().sort()).toEqual([...w.keys()].sort());
  for (const [name, t] of w) expect(Buffer.compare(Buffer.from(f.getBytes(name)), Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), name).toBe(0);
}

const releaseDir = () => join(cache, 'releases/ronraphaeli--SILO/Checkpoints');
const opsDir = () => join(cache, 'operators', server.sha256.slice(0, 16));

describe('silo pull', () => {
  it('into an empty cache: fetches the zip once (302 to the CDN), records its sha256, converts only the operators asked for', async () => {
    const { code, io } = await pull(['--task', 'sr4', '--task', 'sr8', '--no-prior']);
    expect(io.errText()).toMatch(/trained_ckpt\.zip 100% [\d.]+\/[\d.]+ MB, [\d.]+ MB\/s/);
    expect(code).toBe(0);
    expect(server.requests.map((r) => `${r.origin} ${r.method} ${r.path.split('?')[0]}`)).toEqual([`github GET ${RELEASE_PATH}`, expect.stringMatching(/^cdn GET \/github-production-release-asset\//)]);
    expect(readdirSync(releaseDir()).sort()).toEqual(['trained_ckpt.zip', 'trained_ckpt.zip.json']);
    expect(Buffer.compare(readFileSync(join(releaseDir(), 'trained_ckpt.zip')), ZIP)).toBe(0);
    const record = JSON.parse(readFileSync(join(releaseDir(), 'trained_ckpt.zip.json'), 'utf8'));
    expect(record).toMatchObject({ url: server.url, sha256: server.sha256, bytes: ZIP.byteLength });
    expect(readdirSync(opsDir()).sort()).toEqual(['sr_4_rg_ffhq_operator', 'sr_8_cnn_ffhq_operator']);
    const rg = join(opsDir(), 'sr_4_rg_ffhq_operator');
    expect(readdirSync(rg).sort()).toEqual(['config.json', 'source.json', 'weights.safetensors']);
    expectSameTensors(join(rg, 'weights.safetensors'), RG);
    expect(aggregationConfig(JSON.parse(readFileSync(join(rg, 'config.json'), 'utf8')))).toMatchObject({ featureDims: [8, 8, 4], projectionDim: 128, condInpaint: false });
    expect(JSON.parse(readFileSync(join(rg, 'source.json'), 'utf8'))).toMatchObject({ sha256: server.sha256, entry: 'trained_ckpt/RG/sr_4_rg_ffhq_operator.pt', kind: 'readout' });
    const cnn = join(opsDir(), 'sr_8_cnn_ffhq_operator/weights.safetensors');
    expectSameTensors(cnn, CNN);
    expect(io.outText()).toMatch(/fetched trained_ckpt\.zip: \d+ bytes, sha256 [0-9a-f]{64}/);
    expect(io.outText()).toContain(`sr4 silo-rg (readout, ffhq): ${rg} [prior ${PRIOR_RV}, eta 0.5, clamp true`);
    expect(io.outText()).toContain(`sr8 silo-cnn (cnn, ffhq): ${cnn}`);
    expect(existsSync(join(opsDir(), 'rand_ip_rg_ffhq_operator'))).toBe(false); // not asked for

    // A second pull sends nothing; so does one offline; a new task is converted from the cached zip without a request.
    server.requests.length = 0;
    const again = await pull(['--task', 'sr4', '--task', 'sr8', '--no-prior']);
    expect(again.code).toBe(0);
    expect(again.io.outText()).toMatch(/nothing fetched/);
    const off = await pull(['--task', 'sr4', '--no-prior'], { ...env, HF_HUB_OFFLINE: '1' });
    expect(off.code).toBe(0);
    const more = await pull(['--task', 'inpaint_random', '--no-prior', '--offline']);
    expect(more.code).toBe(0);
    expect(server.requests).toEqual([]);
    const cfg = JSON.parse(readFileSync(join(opsDir(), 'rand_ip_rg_ffhq_operator/config.json'), 'utf8'));
    expect(cfg).toMatchObject({ cond_inpaint: true, _silo_checkpoint: { step: 7 } });
  });

  it('resumes after a cut connection with a Range request, and the sha256 is of the whole file', async () => {
    server.cutOnce = true;
    const seen: FileProgress[] = [];
    const r = await pullOperators([releasedOperator('sr4')], { env, onProgress: (p) => seen.push(p) });
    const cdn = server.requests.filter((q) => q.origin === 'cdn');
    expect(cdn).toHaveLength(2);
    expect(cdn[1]!.range).toMatch(/^bytes=\d+-$/);
    expect(Number(/\d+/.exec(cdn[1]!.range!)![0])).toBeGreaterThan(0);
    expect(r.provenance).toEqual({ url: server.url, sha256: server.sha256, bytes: ZIP.byteLength, zipPath: join(releaseDir(), 'trained_ckpt.zip') });
    expect(r.fetchedBytes).toBe(ZIP.byteLength);
    expect(seen.at(-1)).toMatchObject({ file: 'trained_ckpt.zip', bytes: ZIP.byteLength, total: ZIP.byteLength });
    expect(seen.every((p) => p.rate >= 0)).toBe(true);
    expect(readdirSync(releaseDir()).filter((f) => f.endsWith('.incomplete') || f.endsWith('.lock'))).toEqual([]);
  });

  it('wrong bytes are refused against SILO_RELEASE_SHA256, naming the file, and nothing is left behind', async () => {
    server.corrupt = true;
    const { code, io } = await pull(['--task', 'sr4', '--no-prior'], { ...env, SILO_RELEASE_SHA256: server.sha256 });
    expect(code).toBe(1);
    expect(io.errText()).toMatch(new RegExp(`trained_ckpt\\.zip: downloaded bytes have sha256 [0-9a-f]{64}, expected ${server.sha256}; the partial file .*trained_ckpt\\.zip\\.incomplete was deleted`));
    expect(readdirSync(releaseDir())).toEqual([]);
    expect(existsSync(join(cache, 'operators'))).toBe(false);
    // Without an expected sha256 the zip's own CRC-32s catch them.
    const unpinned = await pull(['--task', 'sr4', '--no-prior']);
    expect(unpinned.code).toBe(1);
    expect(unpinned.io.errText()).toMatch(/trained_ckpt\.zip: the download is not an intact zip \(zip .*(CRC-32 mismatch|deflate).*\); it was deleted, run again/);
    expect(readdirSync(releaseDir())).toEqual([]);
    // The right bytes then pass the same check.
    server.corrupt = false;
    expect((await pull(['--task', 'sr4', '--no-prior'], { ...env, SILO_RELEASE_SHA256: server.sha256 })).code).toBe(0);
  });

  it('offline without a cache names what is missing and how to get it, sending nothing', async () => {
    const { code, io } = await pull(['--task', 'sr4', '--task', 'sr8', '--no-prior', '--offline']);
    expect(code).toBe(1);
    expect(io.errText()).toMatch(/offline: SILO's operators sr_4_rg_ffhq_operator \(sr4, silo-rg\), sr_8_cnn_ffhq_operator \(sr8, silo-cnn\) are not in the cache/);
    expect(io.errText()).toMatch(/Run `silo pull --task sr4 --task sr8` on a machine with network .* --operator <converted operator> and --model <diffusers folder>/);
    await expect(resolveReleasedOperator({ task: 'gaussian_blur', env: { ...env, HF_HUB_OFFLINE: '1' } })).rejects.toThrow(OperatorCacheError);
    expect(server.requests).toEqual([]);
  });

  it('an unknown asset is a 404 named as such; bad arguments are usage errors; no operator is a plain error', async () => {
    const missing = await pull(['--task', 'sr4', '--no-prior'], { ...env, SILO_RELEASE_URL: `${server.origin}/ronraphaeli/SILO/releases/download/Checkpoints/nope.zip` });
    expect(missing.code).toBe(1);
    expect(missing.io.errText()).toMatch(/trained_ckpt\.zip: no such release asset at .*nope\.zip/);
    for (const [args, re] of [
      [[], /say what to fetch: --task <t> \(repeatable\) or --all/],
      [['--task', 'sr16'], /--task sr16: expected one of/],
      [['--all', '--task', 'sr4'], /exclude each other/],
      [['--task', 'sr4', '--method', 'psld'], /--method psld: expected silo-rg or silo-cnn/],
      [['--task', 'sr4', '--prior', '--no-prior'], /--prior and --no-prior exclude each other/],
    ] as [string[], RegExp][]) {
      const r = await pull(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.io.errText()).toMatch(re);
    }
    // A checkpoint the zip does not hold (the release's layout changed): named, with what it holds.
    const absent = await pull(['--task', 'gaussian_blur', '--no-prior']);
    expect(absent.code).toBe(1);
    expect(absent.io.errText()).toMatch(/trained_ckpt\.zip: no entry trained_ckpt\/RG\/gb_rg_ffhq_operator\.pt .*its checkpoints: trained_ckpt\/RG\/sr_4_rg_ffhq_operator\.pt, /);
    expect(existsSync(join(opsDir(), 'gb_rg_ffhq_operator'))).toBe(false);
    server.requests.length = 0;
    const none = await pull(['--task', 'motion_blur', '--no-prior']);
    expect(none.code).toBe(1);
    expect(none.io.errText()).toMatch(/SILO released no operator for motion_blur/);
    expect(server.requests.filter((r) => r.origin === 'cdn')).toEqual([]);
  });

  it('two pulls at once: one download under the lock, both get the operator', async () => {
    const opts: ReleaseOptions = { env };
    const [a, b] = await Promise.all([pullOperators([releasedOperator('sr4')], opts), pullOperators([releasedOperator('sr4')], opts)]);
    expect(server.requests.filter((r) => r.origin === 'cdn')).toHaveLength(1);
    expect(a.operators[0]!.operatorPath).toBe(b.operators[0]!.operatorPath);
    expect([a.operators[0]!.converted, b.operators[0]!.converted].sort()).toEqual([false, true]);
  });

  it('also fetches the prior into the Hugging Face cache; a second run fetches no bytes, offline sends nothing', async () => {
    const first = await pull(['--task', 'sr4']);
    expect(first.io.errText()).toMatch(/unet\/diffusion_pytorch_model\.fp16\.safetensors 100%/); // the prior's progress, fp16 preferred
    expect(first.code).toBe(0);
    expect(first.io.outText()).toMatch(new RegExp(`prior ${PRIOR_RV}@main: commit [0-9a-f]{40}, 12 files in .*models--stablediffusionapi--realistic-vision-v51/snapshots/`));
    expect(hub.requests.filter((r) => r.method === 'GET').length).toBeGreaterThan(0);
    hub.requests.length = 0;
    server.requests.length = 0;
    const second = await pull(['--task', 'sr4']);
    expect(second.code).toBe(0);
    expect(second.io.outText()).toMatch(/prior .* nothing fetched/);
    expect(hub.requests.filter((r) => r.method === 'GET')).toEqual([]);
    hub.requests.length = 0;
    expect((await pull(['--task', 'sr4', '--offline'])).code).toBe(0);
    expect(hub.requests).toEqual([]);
    expect(server.requests).toEqual([]);
  });

  it('the cache folder: SILO_CACHE, else XDG_CACHE_HOME/silo-webgpu, else ~/.cache/silo-webgpu', () => {
    expect(siloCacheDir({ SILO_CACHE: '/a', XDG_CACHE_HOME: '/x' }, '/home/u')).toBe('/a');
    expect(siloCacheDir({ XDG_CACHE_HOME: '/x' }, '/home/u')).toBe('/x/silo-webgpu');
    expect(siloCacheDir({}, '/home/u')).toBe('/home/u/.cache/silo-webgpu');
  });
});

describe('resolveReleasedOperator with the golden operators', () => {
  it('pulls on first use and returns paths the engine builds AggregationNetwork / DegradationModel from, bit-exact', async () => {
    const golden = await startReleaseServer(goldenReleaseZip(['sr4']));
    try {
      const e = { ...env, SILO_RELEASE_URL: golden.url };
      const lines: string[] = [];
      const rg = await resolveReleasedOperator({ task: 'sr4', env: e, log: (l) => lines.push(l) });
      expect(rg.entry.path).toBe('trained_ckpt/RG/sr_4_rg_ffhq_operator.pt');
      expect(rg.prior).toBe(PRIOR_RV);
      expect(rg.provenance).toMatchObject({ url: golden.url, sha256: golden.sha256, bytes: golden.zip.byteLength });
      expect(lines.join('\n')).toMatch(/converted trained_ckpt\/RG\/sr_4_rg_ffhq_operator\.pt ->/);
      const cnn = await resolveReleasedOperator({ task: 'sr8', env: e });
      expect(cnn.operatorPath).toMatch(/sr_8_cnn_ffhq_operator\/weights\.safetensors$/);
      expect(cnn.fetchedBytes).toBe(0);
      expect(golden.requests.filter((r) => r.origin === 'cdn')).toHaveLength(1);
      expectSameTensors(`${rg.operatorPath}/weights.safetensors`, goldenReadoutWeights());
      expectSameTensors(cnn.operatorPath, goldenCnnWeights());
      // Built on the GPU with strict loading (every tensor claimed, shapes as the config says).
      const engine = await getEngine();
      const cfg = aggregationConfig(JSON.parse(readFileSync(`${rg.operatorPath}/config.json`, 'utf8')));
      expect(cfg).toMatchObject({ featureDims: [32, 32, 32, 32, 32, 32, 16, 16, 16, 8, 8, 8], projectionDim: 384, sigmaCondition: true, condInpaint: false, latentSize: 64, sigmaEmbDim: 1280 });
      const loaders: WeightLoader[] = [];
      const keep = <T>(w: WeightLoader, m: T) => (loaders.push(w), m);
      const net = WeightLoader.build(engine, await readSafetensorsFile(`${rg.operatorPath}/weights.safetensors`), { dtype: 'f32' }, (w) => keep(w, new AggregationNetwork(w, cfg)));
      const cnnSrc = await readSafetensorsFile(cnn.operatorPath);
      const model = WeightLoader.build(engine, cnnSrc, { dtype: 'f32' }, (w) => keep(w, new DegradationModel(w, inferDegradationConfig(cnnSrc))));
      await WeightLoader.verify(engine);
      expect(net.groups).toBe(12);
      expect(model.config).toMatchObject({ latentDim: 4, sigmaCondition: true, latentSize: 64 });
      for (const l of loaders) l.disposeAll();
    } finally {
      await golden.close();
    }
  });
});
