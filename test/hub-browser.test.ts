// The browser's model sources (src/hub/hub-browser.ts) run in Node: Node has fetch and the 'memory'
// weight store needs no browser API. A hub repo against test/helpers/hub-server.ts (commit pinning,
// paged tree, chosen files, verification, the store on a second and an offline visit, errors, abort)
// and a plain URL folder against test/helpers/static-server.ts. Nothing leaves 127.0.0.1.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openHubModelInBrowser, openUrlFolderInBrowser, type BrowserHubOptions } from '../src/hub/hub-browser.js';
import { openWeightStore, StoreError, type WeightStore } from '../src/hub/weight-store.js';
import { HubError, HubUnreachableError } from '../src/hub/model-ref.js';
import type { FileProgress } from '../src/hub/progress-text.js';
import { f32Entry, parseSafetensors, serializeSafetensors } from '../src/formats/safetensors.js';
import { startHubServer, type HubServer } from './helpers/hub-server.js';
import { serveDir } from './helpers/static-server.js';

const REPO = 'silo-test/tiny-sd';
const GATED = 'silo-test/gated-sd';
const UNET = 'unet/diffusion_pytorch_model.fp16.safetensors';
const VAE = 'vae/diffusion_pytorch_model.safetensors';
const RESTORATION_FILES = [
  'model_index.json',
  'unet/config.json', UNET,
  'vae/config.json', VAE,
  'text_encoder/config.json', 'text_encoder/model.safetensors',
  'tokenizer/vocab.json', 'tokenizer/merges.txt', 'tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json',
  'scheduler/scheduler_config.json',
];
const LFS_FILES = RESTORATION_FILES.filter((p) => p.endsWith('.safetensors'));
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

let server: HubServer;
beforeAll(async () => {
  server = await startHubServer({ gated: { [GATED]: 'secret' } });
});
afterAll(async () => {
  await server?.close();
});

const hubOpts = (store: WeightStore, extra: Partial<BrowserHubOptions> = {}): BrowserHubOptions => ({ store, endpoint: server.endpoint, ...extra });
/** The repo paths the hub's resolve URLs were asked for since `from`, with the revision each named. */
const resolved = (s: HubServer, from = 0) =>
  s.requests.slice(from).flatMap((r) => {
    const m = /^\/[^/]+\/[^/]+\/resolve\/([^/]+)\/(.+)$/.exec(r.path);
    return m ? [{ revision: decodeURIComponent(m[1]!), path: m[2]!.split('/').map(decodeURIComponent).join('/'), method: r.method }] : [];
  });
type Provenance = { commit: string; offline: boolean; files: { path: string; size: number; sha256: string }[] };
const errorOf = (p: Promise<unknown>) => p.then(() => { throw new Error('expected a rejection'); }, (e: unknown) => e as Error);

describe('openHubModelInBrowser', () => {
  it('first open pins the commit, pages the tree, fetches exactly the restoration files and verifies them', async () => {
    const store = await openWeightStore('memory');
    const from = server.requests.length;
    const progress: FileProgress[] = [];
    const src = await openHubModelInBrowser(REPO, hubOpts(store, { onProgress: (p) => progress.push(p) }));
    try {
      const prov = src.provenance as unknown as Provenance;
      expect(prov.commit).toBe(server.commit);
      expect(prov.offline).toBe(false);
      expect(src.variant).toBe('fp16');
      const reqs = server.requests.slice(from);
      // The listing has more than one page (10 entries each): the client must follow Link: rel="next".
      expect(reqs.some((r) => r.origin === 'hub' && r.path.includes('/tree/') && r.path.includes('cursor='))).toBe(true);
      // Files come from the pinned commit, one GET each, and nothing restoration does not need.
      const got = resolved(server, from);
      expect(got.every((g) => g.revision === server.commit && g.method === 'GET')).toBe(true);
      expect(got.map((g) => g.path).sort()).toEqual([...RESTORATION_FILES].sort());
      expect(got.some((g) => /\.bin$|^safety_checker\/|^feature_extractor\/|^unet\/diffusion_pytorch_model\.safetensors$/.test(g.path))).toBe(false);
      expect(reqs.filter((r) => r.origin === 'cdn').map((r) => r.path).sort()).toEqual(LFS_FILES.map((p) => `/cdn/${server.sha256(p)}`).sort());

      expect(prov.files.map((f) => f.path)).toEqual(RESTORATION_FILES);
      for (const f of prov.files) {
        const bytes = server.files.get(f.path)!;
        expect(f.size, f.path).toBe(bytes.byteLength);
        // LFS files carry the hub's sha256; plain ones the hash the store computed, the same value.
        expect(f.sha256, f.path).toBe(sha256(bytes));
        if (LFS_FILES.includes(f.path)) expect(f.sha256, f.path).toBe(server.sha256(f.path));
      }
      expect(src.fetchedBytes).toBe(RESTORATION_FILES.reduce((n, p) => n + server.files.get(p)!.byteLength, 0));

      const unet = await src.folder.safetensors!(UNET);
      const direct = parseSafetensors(server.files.get(UNET)!, UNET);
      expect(unet.names()).toEqual(direct.names());
      for (const n of direct.names().slice(0, 8)) expect(unet.getF32(n), n).toEqual(direct.getF32(n));
      expect(JSON.parse(await src.folder.text('model_index.json'))._class_name).toBe('StableDiffusionPipeline');
      expect(await src.folder.exists(UNET)).toBe(true);
      expect(await src.folder.exists('unet/diffusion_pytorch_model.bin')).toBe(false);
      await expect(src.folder.bytes('safety_checker/config.json')).rejects.toThrow(/not one of the files this source provides/);

      const size = server.files.get(UNET)!.byteLength;
      expect(progress.some((p) => p.file === UNET && p.bytes === size && p.total === size)).toBe(true);
    } finally {
      src.close();
    }
  });

  it('a second open with the same store sends no request for any file', async () => {
    const store = await openWeightStore('memory');
    (await openHubModelInBrowser(REPO, hubOpts(store))).close();
    const from = server.requests.length;
    const log: string[] = [];
    const progress: FileProgress[] = [];
    const src = await openHubModelInBrowser(REPO, hubOpts(store, { log: (l) => log.push(l), onProgress: (p) => progress.push(p) }));
    try {
      const reqs = server.requests.slice(from);
      // Only the commit lookup: the tree is stored per commit, every file per commit and path.
      expect(reqs.length).toBeGreaterThan(0);
      expect(reqs.every((r) => r.origin === 'hub' && r.path.startsWith('/api/models/'))).toBe(true);
      expect(reqs.some((r) => r.path.includes('/tree/'))).toBe(false);
      expect(src.fetchedBytes).toBe(0);
      expect((src.provenance as unknown as Provenance).commit).toBe(server.commit);
      expect(log.filter((l) => l.startsWith('cached ')).length).toBe(RESTORATION_FILES.length);
      expect(log.some((l) => l.startsWith('fetched '))).toBe(false);
      expect(progress).toEqual([]);
      const unet = await src.folder.safetensors!(UNET);
      const direct = parseSafetensors(server.files.get(UNET)!, UNET);
      const name = direct.names()[0]!;
      expect(unet.getF32(name)).toEqual(direct.getF32(name));
    } finally {
      src.close();
    }
  });

  it('opens from the stored commit and tree when the hub is unreachable; says so when nothing is stored', async () => {
    const own = await startHubServer();
    const store = await openWeightStore('memory');
    (await openHubModelInBrowser(REPO, { store, endpoint: own.endpoint })).close();
    await own.close();
    const log: string[] = [];
    const src = await openHubModelInBrowser(REPO, { store, endpoint: own.endpoint, log: (l) => log.push(l) });
    try {
      const prov = src.provenance as unknown as Provenance;
      expect(prov.offline).toBe(true);
      expect(prov.commit).toBe(own.commit);
      expect(src.fetchedBytes).toBe(0);
      expect(log.some((l) => l.includes(`using the cached commit ${own.commit}`))).toBe(true);
      expect(JSON.parse(await src.folder.text('scheduler/scheduler_config.json'))._class_name).toBe('PNDMScheduler');
      const vae = await src.folder.safetensors!(VAE);
      const direct = parseSafetensors(own.files.get(VAE)!, VAE);
      const name = direct.names()[0]!;
      expect(vae.getF32(name)).toEqual(direct.getF32(name));
    } finally {
      src.close();
    }

    // A network failure as fetch reports it (TypeError), with nothing stored.
    const down: typeof fetch = async () => {
      throw new TypeError('fetch failed');
    };
    const err = await errorOf(openHubModelInBrowser(REPO, { store: await openWeightStore('memory'), endpoint: server.endpoint, fetch: down }));
    expect(err).toBeInstanceOf(HubUnreachableError);
    expect(err.message).toMatch(/cannot reach http:\/\/127\.0\.0\.1:\d+ \(fetch failed/);
    expect(err.message).toContain(`${REPO}@main is not in this browser's weight cache`);
  });

  it('a corrupted LFS file fails naming the file and both hashes, and is not kept', async () => {
    const store = await openWeightStore('memory');
    const bad = server.files.get(VAE)!.slice();
    bad[bad.byteLength >> 1]! ^= 0xff; // what hub-server.ts sends for a corrupt path
    server.corrupt.add(VAE);
    let err: Error;
    try {
      err = await errorOf(openHubModelInBrowser(REPO, hubOpts(store)));
    } finally {
      server.corrupt.delete(VAE);
    }
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('mismatch');
    expect(err.message).toContain(VAE);
    expect(err.message).toContain(`sha256 mismatch: expected ${server.sha256(VAE)}, got ${sha256(bad)}`);
    expect((await store.list()).some((e) => e.key.endsWith(`/${VAE}`))).toBe(false);

    const from = server.requests.length;
    const src = await openHubModelInBrowser(REPO, hubOpts(store));
    try {
      // Files verified before the failure stay; the VAE is fetched again, this time whole and right.
      expect(server.requests.slice(from).filter((r) => r.origin === 'cdn').map((r) => r.path)).toEqual(
        LFS_FILES.filter((p) => p !== UNET).map((p) => `/cdn/${server.sha256(p)}`),
      );
      expect((src.provenance as unknown as Provenance).files.find((f) => f.path === VAE)!.sha256).toBe(server.sha256(VAE));
      const vae = await src.folder.safetensors!(VAE);
      const direct = parseSafetensors(server.files.get(VAE)!, VAE);
      for (const n of direct.names().slice(0, 4)) expect(vae.getF32(n), n).toEqual(direct.getF32(n));
    } finally {
      src.close();
    }
  });

  it('unknown, gated, and bad revisions give HubErrors that say what to do; a token opens a gated repo', async () => {
    const store = await openWeightStore('memory');
    const unknown = await errorOf(openHubModelInBrowser('silo-test/nope', hubOpts(store)));
    expect(unknown).toBeInstanceOf(HubError);
    expect(unknown.message).toMatch(/^silo-test\/nope: no such repo on http:\/\/127\.0\.0\.1:\d+, or it is private \(HTTP 401\); check the id, and if it is private enter a token in the Token field/);

    const gated = await errorOf(openHubModelInBrowser(GATED, hubOpts(store)));
    expect(gated).toBeInstanceOf(HubError);
    expect(gated.message).toMatch(/^silo-test\/gated-sd: the repo is gated or private \(HTTP 401 for the revision\); no token was sent: enter a token in the Token field/);
    const wrong = await errorOf(openHubModelInBrowser(GATED, hubOpts(store, { token: 'nope' })));
    expect(wrong).toBeInstanceOf(HubError);
    expect(wrong.message).toMatch(/the repo is gated or private \(HTTP 401 for the revision\); the token in the Token field was not accepted/);
    expect(wrong.message).not.toContain('${');

    const from = server.requests.length;
    const src = await openHubModelInBrowser(GATED, hubOpts(store, { token: 'secret' }));
    try {
      expect((src.provenance as unknown as Provenance).files.map((f) => f.path)).toEqual(RESTORATION_FILES);
      const reqs = server.requests.slice(from);
      expect(reqs.filter((r) => r.origin === 'hub').every((r) => r.authorization === 'Bearer secret')).toBe(true);
      // The token goes to the hub's origin only, never to the CDN the LFS files redirect to.
      expect(reqs.filter((r) => r.origin === 'cdn').length).toBe(LFS_FILES.length);
      expect(reqs.some((r) => r.origin === 'cdn' && r.authorization !== undefined)).toBe(false);
    } finally {
      src.close();
    }

    const rev = await errorOf(openHubModelInBrowser(REPO, hubOpts(store, { revision: 'no-such-branch' })));
    expect(rev).toBeInstanceOf(HubError);
    expect(rev.message).toBe(`${REPO}: no revision "no-such-branch" (HTTP 404)`);

    // An invalid id is refused before any request.
    let calls = 0;
    const counting: typeof fetch = (input, init) => (calls++, fetch(input, init));
    const before = server.requests.length;
    const invalid = await errorOf(openHubModelInBrowser('silo-test/a--b', hubOpts(store, { fetch: counting })));
    expect(invalid).toBeInstanceOf(HubError);
    expect(invalid.message).toMatch(/^"silo-test\/a--b" is not a valid Hugging Face repo id: "--" and "\.\." are not allowed/);
    expect(calls).toBe(0);
    expect(server.requests.length).toBe(before);
  });

  it('an abort mid-download rejects, keeps no partial file, and a later open succeeds', async () => {
    const store = await openWeightStore('memory');
    const ctrl = new AbortController();
    let abortedAt = -1;
    const onProgress = (p: FileProgress) => {
      if (p.file === UNET && !ctrl.signal.aborted && p.total !== null && p.bytes < p.total) {
        abortedAt = p.bytes;
        ctrl.abort();
      }
    };
    const err = await errorOf(openHubModelInBrowser(REPO, hubOpts(store, { signal: ctrl.signal, onProgress })));
    expect(abortedAt).toBeGreaterThan(0); // the abort really came mid-file
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('aborted');
    expect(err.message).toContain(UNET);
    expect((await store.list()).some((e) => e.key.endsWith(`/${UNET}`))).toBe(false);

    const log: string[] = [];
    const src = await openHubModelInBrowser(REPO, hubOpts(store, { log: (l) => log.push(l) }));
    try {
      expect(log).toContain(`fetched ${REPO}/${UNET} (${server.files.get(UNET)!.byteLength} bytes)`);
      expect(log).toContain(`cached ${REPO}/unet/config.json`);
      const unet = await src.folder.safetensors!(UNET);
      const direct = parseSafetensors(server.files.get(UNET)!, UNET);
      const name = direct.names().at(-1)!;
      expect(unet.getF32(name)).toEqual(direct.getF32(name));
    } finally {
      src.close();
    }
  });
});

describe('openUrlFolderInBrowser', () => {
  let root: string;
  let site: { base: string; close: () => void };
  const values = [0.5, -1.25, 3, 4.75, -0.125, 6];
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'silo-hub-browser-'));
    writeFileSync(join(root, 'config.json'), JSON.stringify({ _class_name: 'Tiny', width: 3 }));
    writeFileSync(join(root, 'model.safetensors'), serializeSafetensors({ w: f32Entry(values, [2, 3]) }));
    site = await serveDir(root);
  });
  afterAll(() => {
    site?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('stores each file on first use with its sha256; a second folder on the same store sends no GET', async () => {
    const store = await openWeightStore('memory');
    const calls: { url: string; method: string }[] = [];
    const counting: typeof fetch = (input, init) => {
      calls.push({ url: String(input), method: init?.method ?? 'GET' });
      return fetch(input, init);
    };
    const gets = () => calls.filter((c) => c.method === 'GET');
    const modelBytes = serializeSafetensors({ w: f32Entry(values, [2, 3]) });

    const first = openUrlFolderInBrowser(`${site.base}/`, { store, fetch: counting });
    expect(await first.folder.exists('config.json')).toBe(true);
    expect(await first.folder.exists('missing.json')).toBe(false);
    expect(gets()).toEqual([]); // exists() asks with HEAD
    const st = await first.folder.safetensors!('model.safetensors');
    expect([...st.getF32('w')]).toEqual(values);
    expect(st.info('w').shape).toEqual([2, 3]);
    expect(JSON.parse(await first.folder.text('config.json')).width).toBe(3);
    expect(gets().map((c) => c.url).sort()).toEqual([`${site.base}/config.json`, `${site.base}/model.safetensors`]);
    const files = first.provenance['files'] as Record<string, { size: number; sha256: string }>;
    expect(files['model.safetensors']).toEqual({ size: modelBytes.byteLength, sha256: sha256(modelBytes) });
    expect(files['config.json']!.sha256).toBe(sha256(new TextEncoder().encode(JSON.stringify({ _class_name: 'Tiny', width: 3 }))));
    expect(first.fetchedBytes).toBeGreaterThanOrEqual(modelBytes.byteLength);
    first.close();

    calls.length = 0;
    const log: string[] = [];
    const second = openUrlFolderInBrowser(site.base, { store, fetch: counting, log: (l) => log.push(l) });
    expect(await second.folder.exists('model.safetensors')).toBe(true);
    expect([...(await second.folder.safetensors!('model.safetensors')).getF32('w')]).toEqual(values);
    expect(JSON.parse(await second.folder.text('config.json'))._class_name).toBe('Tiny');
    expect(gets()).toEqual([]);
    expect(calls).toEqual([]); // stored files need no HEAD either
    expect(second.fetchedBytes).toBe(0);
    expect(log).toEqual([`cached ${site.base}/model.safetensors`, `cached ${site.base}/config.json`]);
    expect((second.provenance['files'] as Record<string, { sha256: string }>)['model.safetensors']!.sha256).toBe(sha256(modelBytes));
    second.close();

    const missing = openUrlFolderInBrowser(site.base, { store, fetch: counting });
    await expect(missing.folder.bytes('missing.json')).rejects.toThrow(/missing\.json: HTTP 404/);
  });
});
