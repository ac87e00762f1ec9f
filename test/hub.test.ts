// Models from the Hugging Face hub (no GPU): repo ids, the hub's cache layout, resumable verified
// downloads, locks, offline use, errors for gated / missing repos, and the files restoration fetches.
// Everything runs against test/helpers/hub-server.ts on 127.0.0.1.
import { describe, it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { hubSettingsFromEnv, parseModelRef, resolveUrl, validateRepoId, HubError } from '../src/hub/model-ref.js';
import { openHubModel, type HubFolderOptions } from '../src/hub/hub-folder-node.js';
import { downloadBlob, headFile, type FileProgress } from '../src/hub/download-node.js';
import { linkSnapshot, repoCache } from '../src/hub/cache-node.js';
import { openComponent } from '../src/models/diffusers-folder.js';
import { shardSafetensors, parseSafetensors, type SafetensorsEntry } from '../src/formats/safetensors.js';
import { subFolder } from '../src/formats/folder.js';
import { loadClipTokenizer } from '../src/models/clip/tokenizer.js';
import { formatDownloadProgress } from '../src/hub/progress-text.js';
import { buildSdRepo, startHubServer, type HubServer } from './helpers/hub-server.js';
import { goldenDir } from './helpers/golden.js';

const REPO = 'silo-test/tiny-sd';
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const RESTORATION_FILES = [
  'model_index.json',
  'unet/config.json', 'unet/diffusion_pytorch_model.fp16.safetensors',
  'vae/config.json', 'vae/diffusion_pytorch_model.safetensors',
  'text_encoder/config.json', 'text_encoder/model.safetensors',
  'tokenizer/vocab.json', 'tokenizer/merges.txt', 'tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json',
  'scheduler/scheduler_config.json',
];

let server: HubServer;
let cacheDir: string;
const temps: string[] = [];
const tempDir = (tag: string) => {
  const d = mkdtempSync(join(tmpdir(), `silo-hub-${tag}-`));
  temps.push(d);
  return d;
};
// env: an empty HF_HOME, so no token saved on this machine can leak into the tests.
const opts = (extra: HubFolderOptions = {}): HubFolderOptions => ({ endpoint: server.endpoint, cacheDir, offline: false, env: { HF_HOME: tempDir('home') }, ...extra });
const repoDir = () => join(cacheDir, 'models--silo-test--tiny-sd');
const gets = () => server.requests.filter((r) => r.method === 'GET');

beforeAll(async () => {
  server = await startHubServer({ gated: { 'silo-test/gated-sd': 'hf_secret' } });
});
afterAll(async () => {
  await server?.close();
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});
beforeEach(() => {
  server.requests.length = 0;
  server.cutOnce.clear();
  server.corrupt.clear();
  server.stallOnce.clear();
  cacheDir = tempDir('cache');
});

describe('model references', () => {
  it('accepts hub ids like huggingface_hub and refuses bad ones with a clear message', async () => {
    for (const ok of ['org/name', 'stable-diffusion-v1-5/stable-diffusion-v1-5', 'gpt2', 'a/b', 'Org_1/name.v2']) expect(() => validateRepoId(ok)).not.toThrow();
    const bad: Array<[string, RegExp]> = [
      ['org/na--me', /"--" and "\.\." are not allowed/],
      ['org/na..me', /"--" and "\.\." are not allowed/],
      ['a/b/c', /more than one "\/"/],
      ['org/name.git', /cannot end with "\.git"/],
      ['org/-name', /start and end with a letter or digit/],
      ['org/na me', /only letters, digits/],
      [`org/${'x'.repeat(100)}`, /at most 96/],
    ];
    for (const [id, re] of bad) {
      expect(() => validateRepoId(id), id).toThrow(HubError);
      expect(() => validateRepoId(id), id).toThrow(re);
    }
    const noDir = async () => false;
    expect(await parseModelRef('org/name', noDir)).toEqual({ kind: 'repo', repoId: 'org/name', revision: 'main' });
    expect(await parseModelRef('org/name@refs/pr/3', noDir)).toEqual({ kind: 'repo', repoId: 'org/name', revision: 'refs/pr/3' });
    expect(await parseModelRef('https://example.org/sd', noDir)).toEqual({ kind: 'url', url: 'https://example.org/sd' });
    // An existing directory wins over a repo id of the same spelling.
    expect(await parseModelRef('org/name', async (p) => p === 'org/name')).toEqual({ kind: 'folder', path: 'org/name' });
    await expect(parseModelRef('./missing/folder', noDir)).rejects.toThrow(/no such folder/);
    await expect(parseModelRef('org/name@', noDir)).rejects.toThrow(/empty revision/);
    await expect(parseModelRef('ftp://x/y', noDir)).rejects.toThrow(/only http/);
  });

  it('reads HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE and the cache root as huggingface_hub does; quotes the revision', () => {
    expect(hubSettingsFromEnv({}, '/home/u')).toEqual({ endpoint: 'https://huggingface.co', token: undefined, cacheDir: '/home/u/.cache/huggingface/hub', tokenPath: '/home/u/.cache/huggingface/token', offline: false });
    expect(hubSettingsFromEnv({ HUGGING_FACE_HUB_TOKEN: 'hf_old' }).token).toBe('hf_old');
    expect(hubSettingsFromEnv({ HF_TOKEN: 'hf_new', HUGGING_FACE_HUB_TOKEN: 'hf_old' }).token).toBe('hf_new');
    expect(hubSettingsFromEnv({ HF_HOME: '/h', HF_TOKEN_PATH: '/t/tok' }).tokenPath).toBe('/t/tok');
    expect(hubSettingsFromEnv({ HF_HOME: '/h' }, '/home/u').cacheDir).toBe('/h/hub');
    expect(hubSettingsFromEnv({ HF_HOME: '/h', HF_HUB_CACHE: '/c' }, '/home/u').cacheDir).toBe('/c');
    expect(hubSettingsFromEnv({ XDG_CACHE_HOME: '/x' }, '/home/u').cacheDir).toBe('/x/huggingface/hub');
    const s = hubSettingsFromEnv({ HF_ENDPOINT: 'http://mirror:8080/', HF_TOKEN: 'hf_abc', HF_HUB_OFFLINE: '1' });
    expect(s).toMatchObject({ endpoint: 'http://mirror:8080', token: 'hf_abc', offline: true });
    expect(resolveUrl('https://huggingface.co', 'org/n', 'refs/pr/1', 'unet/a b.json')).toBe('https://huggingface.co/org/n/resolve/refs%2Fpr%2F1/unet/a%20b.json');
  });

  it('prints download progress with percentage, sizes, rate and ETA', () => {
    expect(formatDownloadProgress({ file: 'unet/w.safetensors', bytes: 12_300_000, total: 30_000_000, rate: 5_100_000, etaSeconds: 3.4 })).toBe('unet/w.safetensors 41% 12.3/30.0 MB, 5.1 MB/s, ETA 4s');
    expect(formatDownloadProgress({ file: 'f', bytes: 0, total: null, rate: 0, etaSeconds: null })).toBe('f 0.0 MB, 0.0 MB/s');
    expect(formatDownloadProgress({ file: 'f', bytes: 1, total: 2, rate: 1, etaSeconds: 3725 })).toMatch(/ETA 1h02m$/);
  });
});

describe('downloads into the hub cache', () => {
  it('a first download creates exactly the huggingface_hub layout and fetches only what restoration needs', async () => {
    const progress: FileProgress[] = [];
    const hub = await openHubModel(REPO, opts({ token: 'hf_not_for_the_cdn', onProgress: (p) => progress.push(p) }));
    const commit = server.commit;
    expect(hub.provenance).toMatchObject({ repo: REPO, revision: 'main', commit, offline: false });
    expect(hub.variant).toBe('fp16');
    expect(hub.provenance.files.map((f) => f.path).sort()).toEqual([...RESTORATION_FILES].sort());
    expect(readFileSync(join(repoDir(), 'refs/main'), 'utf8')).toBe(commit);
    const snap = join(repoDir(), 'snapshots', commit);
    for (const f of RESTORATION_FILES) {
      const entry = join(snap, f);
      expect(lstatSync(entry).isSymbolicLink(), f).toBe(true);
      const target = readlinkSync(entry);
      const etag = hub.provenance.files.find((x) => x.path === f)!.etag;
      expect(target, f).toBe(relative(dirname(entry), join(repoDir(), 'blobs', etag)));
      expect(target.startsWith('../'), f).toBe(true);
      const bytes = server.files.get(f)!;
      expect(sha256(readFileSync(entry)), f).toBe(sha256(bytes));
      if (/\.safetensors$/.test(f)) {
        expect(etag, `${f}: LFS blob named by its sha256`).toBe(sha256(bytes));
        expect(hub.provenance.files.find((x) => x.path === f)!.sha256).toBe(etag);
      } else {
        expect(etag, `${f}: plain blob named by its git blob id`).toBe(createHash('sha1').update(`blob ${bytes.byteLength}\0`).update(bytes).digest('hex'));
      }
    }
    expect(readdirSync(join(repoDir(), 'blobs')).filter((b) => b.endsWith('.incomplete'))).toEqual([]);
    expect(readdirSync(join(cacheDir, '.locks/models--silo-test--tiny-sd'))).toEqual([]); // locks released
    // Never the safety checker, the feature extractor, .bin files or the plain UNet next to its fp16 variant.
    for (const r of server.requests) expect(r.path).not.toMatch(/safety_checker|feature_extractor|\.bin$|unet\/diffusion_pytorch_model\.safetensors$/);
    // Every GET asked the hub at the commit; LFS files followed its 302 to the CDN origin, without the token.
    const hubGets = gets().filter((r) => r.origin === 'hub');
    expect(hubGets.map((r) => r.path.replace(`/${REPO}/resolve/${commit}/`, '')).sort()).toEqual([...RESTORATION_FILES].sort());
    const cdnGets = server.requests.filter((r) => r.origin === 'cdn');
    expect(cdnGets.map((r) => r.path.slice('/cdn/'.length)).sort()).toEqual(RESTORATION_FILES.filter((f) => f.endsWith('.safetensors')).map((f) => server.sha256(f)).sort());
    for (const r of cdnGets) expect(r.authorization).toBeUndefined();
    expect(server.requests.filter((r) => r.origin === 'hub').every((r) => r.authorization === 'Bearer hf_not_for_the_cdn')).toBe(true);
    // Progress: per file up to its size, with a rate and an ETA.
    const last = progress.filter((p) => p.file === 'unet/diffusion_pytorch_model.fp16.safetensors').at(-1)!;
    expect(last.bytes).toBe(last.total);
    expect(last.rate).toBeGreaterThan(0);
    expect(last.etaSeconds).toBe(0);
    expect(hub.provenance.fetchedBytes).toBe(RESTORATION_FILES.reduce((n, f) => n + server.files.get(f)!.byteLength, 0));
    // The folder reads the snapshot and hides the files that were not chosen.
    expect(await hub.folder.exists('unet/diffusion_pytorch_model.fp16.safetensors')).toBe(true);
    expect(await hub.folder.exists('unet/diffusion_pytorch_model.safetensors')).toBe(false);
    // The tokenizer files the repo serves (vocab.json + merges.txt) give the golden CLIP ids.
    const tok = await loadClipTokenizer(subFolder(hub.folder, 'tokenizer'));
    const tokens = JSON.parse(readFileSync(`${goldenDir('clip_text_mini')}/tokens.json`, 'utf8')) as { prompts: Array<{ prompt: string; input_ids: number[] }> };
    for (const p of tokens.prompts) expect(Array.from(tok.call(p.prompt).inputIds), p.prompt).toEqual(p.input_ids);
    const unet = await openComponent(hub.folder, 'unet', { variant: hub.variant });
    expect(unet.file).toBe('unet/diffusion_pytorch_model.fp16.safetensors');
    expect(unet.weights.info('conv_in.weight').dtype).toBe('F16');

    // A second run online only asks (HEAD), fetching zero bytes; offline it sends no request at all.
    server.requests.length = 0;
    const again = await openHubModel(REPO, opts());
    expect(gets()).toEqual([]);
    expect(again.provenance.fetchedBytes).toBe(0);
    server.requests.length = 0;
    const offline = await openHubModel(REPO, opts({ offline: true }));
    expect(server.requests).toEqual([]);
    expect(offline.provenance.commit).toBe(commit);
    expect(offline.provenance.files).toEqual(hub.provenance.files);
    expect(offline.variant).toBe('fp16');
    // With the hub unreachable (nothing listens on port 1) the cached revision is used, as huggingface_hub does.
    const lines: string[] = [];
    const unreachable = await openHubModel(REPO, opts({ endpoint: 'http://127.0.0.1:1', log: (l) => lines.push(l) }));
    expect(unreachable.provenance).toMatchObject({ commit, offline: true, files: hub.provenance.files });
    expect(lines.join('\n')).toMatch(/cannot reach http:\/\/127\.0\.0\.1:1 .*; trying the cache/);
    await expect(openHubModel('silo-test/other', opts({ endpoint: 'http://127.0.0.1:1' }))).rejects.toThrow(/cannot reach http:\/\/127\.0\.0\.1:1 .*, and offline: silo-test\/other@main is not in the cache/);
    // HF_HUB_OFFLINE=1 in the environment does the same, and a full commit hash works without refs/.
    await openHubModel(REPO, { cacheDir, endpoint: server.endpoint, env: { HF_HUB_OFFLINE: '1' }, revision: commit });
    expect(server.requests).toEqual([]);
  });

  it('a snapshot entry is a copy of the blob where symlinks fail', async () => {
    const cache = repoCache(cacheDir, REPO);
    mkdirSync(join(repoDir(), 'blobs'), { recursive: true });
    writeFileSync(cache.blob('abc123'), 'blob bytes');
    await linkSnapshot(cache, server.commit, 'unet/config.json', 'abc123', async () => {
      throw Object.assign(new Error('EPERM: operation not permitted, symlink'), { code: 'EPERM' });
    });
    const entry = cache.snapshot(server.commit, 'unet/config.json');
    expect(lstatSync(entry).isSymbolicLink()).toBe(false);
    expect(readFileSync(entry, 'utf8')).toBe('blob bytes');
    expect(readdirSync(dirname(entry))).toEqual(['config.json']); // no temporary left
  });

  it('a cut connection is resumed with Range and the blob matches its sha256', async () => {
    const file = 'unet/diffusion_pytorch_model.fp16.safetensors';
    server.cutOnce.add(file);
    const hub = await openHubModel(REPO, opts());
    const cdn = server.requests.filter((r) => r.origin === 'cdn' && r.path.endsWith(server.sha256(file)));
    expect(cdn.length).toBe(2);
    expect(cdn[0]!.range).toBeUndefined();
    expect(cdn[1]!.range).toMatch(/^bytes=[1-9]\d*-$/);
    const blob = join(repoDir(), 'blobs', server.sha256(file));
    expect(sha256(readFileSync(blob))).toBe(server.sha256(file));
    expect(hub.provenance.files.find((f) => f.path === file)!.sha256).toBe(server.sha256(file));
  });

  it('a stalled connection is given up after the timeout and resumed with Range', async () => {
    const file = 'text_encoder/model.safetensors';
    server.stallOnce.add(file);
    const t0 = Date.now();
    await openHubModel(REPO, opts({ timeoutMs: 2000 }));
    const cdn = server.requests.filter((r) => r.origin === 'cdn' && r.path.endsWith(server.sha256(file)));
    expect(cdn.map((r) => r.range?.replace(/\d+/, 'N'))).toEqual([undefined, 'bytes=N-']);
    expect(sha256(readFileSync(join(repoDir(), 'blobs', server.sha256(file))))).toBe(server.sha256(file));
    expect(Date.now() - t0).toBeLessThan(20_000);
  });

  it('a later run resumes a partial blob left by an earlier one', async () => {
    const file = 'vae/diffusion_pytorch_model.safetensors';
    const bytes = server.files.get(file)!;
    const half = bytes.byteLength >> 1;
    mkdirSync(join(repoDir(), 'blobs'), { recursive: true });
    writeFileSync(join(repoDir(), 'blobs', `${server.sha256(file)}.incomplete`), bytes.subarray(0, half));
    await openHubModel(REPO, opts());
    const cdn = server.requests.filter((r) => r.origin === 'cdn' && r.path.endsWith(server.sha256(file)));
    expect(cdn.map((r) => r.range)).toEqual([`bytes=${half}-`]);
    expect(sha256(readFileSync(join(repoDir(), 'blobs', server.sha256(file))))).toBe(server.sha256(file));
  });

  it('a plain file is verified against its git blob id', async () => {
    server.corrupt.add('unet/config.json');
    await expect(openHubModel(REPO, opts())).rejects.toThrow(/unet\/config\.json: downloaded bytes have git blob id [0-9a-f]{40}, the hub says [0-9a-f]{40}; the partial file was deleted/);
    expect(existsSync(join(repoDir(), 'snapshots', server.commit, 'unet/config.json'))).toBe(false);
  });

  it('wrong bytes: an error naming the file, the partial blob deleted, nothing in snapshots/', async () => {
    const file = 'vae/diffusion_pytorch_model.safetensors';
    server.corrupt.add(file);
    const err = await openHubModel(REPO, opts()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubError);
    expect((err as Error).message).toMatch(/vae\/diffusion_pytorch_model\.safetensors: downloaded bytes have sha256 [0-9a-f]{64}, the hub says [0-9a-f]{64}; the partial file was deleted/);
    const blobs = readdirSync(join(repoDir(), 'blobs'));
    expect(blobs.filter((b) => b.startsWith(server.sha256(file)))).toEqual([]);
    expect(existsSync(join(repoDir(), 'snapshots', server.commit, file))).toBe(false);
  });

  it('two downloads of one blob at once: one writer, the other waits, the blob is intact', async () => {
    const [a, b] = await Promise.all([openHubModel(REPO, opts()), openHubModel(REPO, opts())]);
    expect(a.provenance.files).toEqual(b.provenance.files);
    for (const f of ['unet/diffusion_pytorch_model.fp16.safetensors', 'vae/diffusion_pytorch_model.safetensors', 'text_encoder/model.safetensors']) {
      expect(server.requests.filter((r) => r.origin === 'cdn' && r.path.endsWith(server.sha256(f))).length, f).toBe(1);
      expect(sha256(readFileSync(join(repoDir(), 'snapshots', server.commit, f))), f).toBe(server.sha256(f));
    }
    // The same at the blob level, with a stale lock left by a dead process in the way.
    const ctx = { repoId: REPO, revision: 'main', endpoint: server.endpoint };
    const file = 'text_encoder/model.safetensors';
    const meta = (await headFile(ctx, resolveUrl(server.endpoint, REPO, 'main', file), file))!;
    const other = tempDir('cache2');
    const cache = repoCache(other, REPO);
    mkdirSync(dirname(cache.lock(meta.etag)), { recursive: true });
    writeFileSync(cache.lock(meta.etag), `4194000 ${(await import('node:os')).hostname()} 0\n`);
    server.requests.length = 0;
    const got = await Promise.all([0, 1, 2].map(() => downloadBlob(ctx, cache, meta, file)));
    expect(got.filter((n) => n > 0)).toEqual([meta.size]); // exactly one fetched the bytes
    expect(gets().filter((r) => r.origin === 'cdn').length).toBe(1);
    expect(sha256(readFileSync(cache.blob(meta.etag)))).toBe(meta.etag);
    expect(existsSync(cache.lock(meta.etag))).toBe(false);
  });

  it('uses a cache written in the huggingface_hub layout by hand: offline no request, online no download', async () => {
    const commit = server.commit;
    for (const f of RESTORATION_FILES) {
      const bytes = server.files.get(f)!;
      const etag = f.endsWith('.safetensors') ? sha256(bytes) : createHash('sha1').update(`blob ${bytes.byteLength}\0`).update(bytes).digest('hex');
      mkdirSync(join(repoDir(), 'blobs'), { recursive: true });
      writeFileSync(join(repoDir(), 'blobs', etag), bytes);
      const link = join(repoDir(), 'snapshots', commit, f);
      mkdirSync(dirname(link), { recursive: true });
      // One entry a copy, as huggingface_hub leaves them where symlinks are unsupported: hashed for the provenance.
      if (f === 'vae/diffusion_pytorch_model.safetensors') writeFileSync(link, bytes);
      else symlinkSync(relative(dirname(link), join(repoDir(), 'blobs', etag)), link);
    }
    mkdirSync(join(repoDir(), 'refs'), { recursive: true });
    writeFileSync(join(repoDir(), 'refs/main'), commit);
    const offline = await openHubModel(REPO, opts({ offline: true }));
    expect(server.requests).toEqual([]);
    expect(offline.variant).toBe('fp16');
    expect(offline.provenance.files.find((f) => f.path === 'vae/diffusion_pytorch_model.safetensors')!.sha256).toBe(server.sha256('vae/diffusion_pytorch_model.safetensors'));
    const online = await openHubModel(REPO, opts());
    expect(gets()).toEqual([]);
    expect(online.provenance.fetchedBytes).toBe(0);
    expect(realpathSync(join(online.snapshotDir, 'vae/config.json'))).toBe(realpathSync(join(offline.snapshotDir, 'vae/config.json')));
  });
});

describe('errors name what is wrong', () => {
  it('offline: a missing revision and missing files are named, with how to get them', async () => {
    await expect(openHubModel(REPO, opts({ offline: true }))).rejects.toThrow(/offline: silo-test\/tiny-sd@main is not in the cache .*refs\/main.*run once without --offline/);
    await openHubModel(REPO, opts());
    rmSync(join(repoDir(), 'snapshots', server.commit, 'tokenizer/merges.txt'));
    rmSync(join(repoDir(), 'snapshots', server.commit, 'vae/diffusion_pytorch_model.safetensors'));
    server.requests.length = 0;
    const err = (await openHubModel(REPO, opts({ offline: true })).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toMatch(/is missing from the cache/);
    expect(err.message).toContain('tokenizer/merges.txt');
    expect(err.message).toContain('vae/diffusion_pytorch_model.fp16.safetensors or vae/diffusion_pytorch_model.safetensors');
    expect(err.message).toMatch(/run once without --offline/);
    expect(server.requests).toEqual([]);
  });

  it('a gated repo without the token says so and how to pass one; with HF_TOKEN it downloads', async () => {
    const err = (await openHubModel('silo-test/gated-sd', opts()).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(HubError);
    expect(err.message).toMatch(/silo-test\/gated-sd: the repo is gated or private \(HTTP 401 for model_index\.json\); no token was sent: set HF_TOKEN=/);
    const wrong = (await openHubModel('silo-test/gated-sd', opts({ token: 'hf_wrong' })).catch((e: unknown) => e)) as Error;
    expect(wrong.message).toMatch(/the token in HF_TOKEN was not accepted/);
    const ok = await openHubModel('silo-test/gated-sd', opts({ env: { HF_TOKEN: 'hf_secret' } }));
    expect(ok.provenance.files.length).toBe(RESTORATION_FILES.length);
    // The token `huggingface-cli login` saved in $HF_HOME/token is used when HF_TOKEN is not set.
    const home = tempDir('hfhome');
    writeFileSync(join(home, 'token'), 'hf_secret\n');
    server.requests.length = 0;
    await openHubModel('silo-test/gated-sd', opts({ env: { HF_HOME: home }, cacheDir: tempDir('cache3') }));
    expect(server.requests.filter((r) => r.origin === 'hub').every((r) => r.authorization === 'Bearer hf_secret')).toBe(true);
  });

  it('404s name the repo, the revision or the file', async () => {
    await expect(openHubModel('silo-test/nope', opts())).rejects.toThrow(/silo-test\/nope: no such repo on http:\/\/127\.0\.0\.1:\d+, or it is private \(HTTP 401\); check the id, and if it is private set HF_TOKEN=/);
    await expect(openHubModel(REPO, opts({ revision: 'v9' }))).rejects.toThrow(/silo-test\/tiny-sd: no revision "v9"/);
    const files = buildSdRepo();
    files.delete('scheduler/scheduler_config.json');
    const partial = await startHubServer({}, 'silo-test/partial', files);
    try {
      await expect(openHubModel('silo-test/partial', opts({ endpoint: partial.endpoint }))).rejects.toThrow(/scheduler\/scheduler_config\.json is not in the repo/);
    } finally {
      await partial.close();
    }
    // A UNet with only PyTorch pickles: refused, naming what was tried; the .bin is never fetched.
    const binOnly = buildSdRepo();
    for (const k of [...binOnly.keys()]) if (/^unet\/.*\.safetensors$/.test(k)) binOnly.delete(k);
    const bins = await startHubServer({}, 'silo-test/bin-only', binOnly);
    try {
      await expect(openHubModel('silo-test/bin-only', opts({ endpoint: bins.endpoint }))).rejects.toThrow(
        /no \.safetensors weights for unet: tried unet\/diffusion_pytorch_model\.fp16\.safetensors, .*unet\/diffusion_pytorch_model\.safetensors\.index\.json \(\.bin\/\.ckpt weights are not downloaded; convert them with `silo convert`\)/,
      );
      expect(bins.requests.filter((r) => r.path.endsWith('.bin'))).toEqual([]);
    } finally {
      await bins.close();
    }
    await expect(openHubModel('bad--id', opts())).rejects.toThrow(/not a valid Hugging Face repo id/);
    expect(server.requests.filter((r) => r.path.includes('bad--id'))).toEqual([]);
  });

  it('a sharded UNet brings its index and every shard, and reads as one source', async () => {
    const files = buildSdRepo();
    const unet = parseSafetensors(files.get('unet/diffusion_pytorch_model.safetensors')!, 'unet');
    const tensors: Record<string, SafetensorsEntry> = {};
    for (const n of unet.names()) tensors[n] = { dtype: unet.info(n).dtype, shape: unet.info(n).shape, data: unet.getBytes(n) };
    const { index, shards } = shardSafetensors(tensors, 4_000_000, 'diffusion_pytorch_model');
    for (const k of [...files.keys()]) if (k.startsWith('unet/diffusion_pytorch_model')) files.delete(k);
    files.set('unet/diffusion_pytorch_model.safetensors.index.json', new TextEncoder().encode(JSON.stringify(index)));
    for (const [name, b] of Object.entries(shards)) files.set(`unet/${name}`, b);
    expect(Object.keys(shards).length).toBeGreaterThan(2);
    const sharded = await startHubServer({}, 'silo-test/sharded', files);
    try {
      const hub = await openHubModel('silo-test/sharded', opts({ endpoint: sharded.endpoint }));
      expect(hub.variant).toBeUndefined();
      const paths = hub.provenance.files.map((f) => f.path);
      for (const s of Object.keys(shards)) expect(paths).toContain(`unet/${s}`);
      const c = await openComponent(hub.folder, 'unet', { variant: hub.variant });
      expect(c.file).toBe('unet/diffusion_pytorch_model.safetensors.index.json');
      expect(c.weights.names().length).toBe(unet.names().length);
    } finally {
      await sharded.close();
    }
  });
});
