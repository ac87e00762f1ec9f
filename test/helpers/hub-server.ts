// A local imitation of the Hugging Face hub for tests, on 127.0.0.1 (ephemeral ports, never the
// internet). It answers HEAD and GET on /{org}/{name}/resolve/{revision}/{path} as the hub does:
// X-Repo-Commit, ETag (git blob id for plain files), and for LFS files (*.safetensors, *.bin) a 302 to
// a second "CDN" origin with X-Linked-Etag (the sha256) and X-Linked-Size; the CDN serves Range
// requests (206). 404s carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound); a gated
// repo answers 401 without the right Bearer token. The repo is the tiny golden models laid out as a
// diffusers SD repo, built in memory at start-up. Knobs: cut the connection mid-file once, send wrong
// bytes. For pages on another origin it sends the hub's CORS headers and answers the JSON API the
// browser client uses (revision -> commit, the paged file tree with LFS sha256s). Every request is logged. Requests are bounded, and the servers close themselves after
// `lifetimeMs` even if a test forgets to.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { parseSafetensors, serializeSafetensors, f32Entry, type SafetensorsEntry } from '../../src/formats/safetensors.js';
import { goldenDir } from './golden.js';

export interface HubRequest {
  origin: 'hub' | 'cdn';
  method: string;
  path: string;
  range?: string;
  authorization?: string;
}

export interface HubServerOptions {
  /** Repo id -> required token (a gated repo). */
  gated?: Record<string, string>;
  lifetimeMs?: number;
  maxRequests?: number;
  /** Entries per page of the tree API (default 10, so listings page). */
  treePageSize?: number;
}

export interface HubServer {
  endpoint: string;
  cdn: string;
  repoId: string;
  commit: string;
  /** The served files by path. */
  files: Map<string, Uint8Array>;
  requests: HubRequest[];
  /** Paths whose next GET is cut after half the bytes (once). */
  cutOnce: Set<string>;
  /** Paths whose GETs send one flipped byte. */
  corrupt: Set<string>;
  /** Paths whose next GET sends half the bytes, then nothing more (the socket stays open), once. */
  stallOnce: Set<string>;
  sha256(path: string): string;
  close(): Promise<void>;
}

export const SD15_SCHEDULER = {
  _class_name: 'PNDMScheduler', beta_end: 0.012, beta_schedule: 'scaled_linear', beta_start: 0.00085,
  num_train_timesteps: 1000, set_alpha_to_one: false, skip_prk_steps: true, steps_offset: 1, trained_betas: null, clip_sample: false,
};

const enc = (s: string) => new TextEncoder().encode(s);
const json = (v: unknown) => enc(JSON.stringify(v, null, 2));
const isLfs = (path: string) => /\.(safetensors|bin|ckpt)$/.test(path);

/** The same tensors stored as F16 (diffusers' fp16 variant). */
function toF16(bytes: Uint8Array, source: string): Uint8Array {
  const f = parseSafetensors(bytes, source);
  const out: Record<string, SafetensorsEntry> = {};
  for (const n of f.names()) {
    const info = f.info(n);
    out[n] = info.dtype === 'F32' ? f32Entry(f.getF32(n), info.shape, 'F16') : { dtype: info.dtype, shape: info.shape, data: f.getBytes(n) };
  }
  return serializeSafetensors(out);
}

/** tokenizer/vocab.json + merges.txt from OpenAI's merges file (the vocabulary follows from the merges, as in CLIP). */
function tokenizerFiles(): Record<string, Uint8Array> {
  const text = gunzipSync(readFileSync(`${goldenDir('clip_text_mini')}/bpe_simple_vocab_16e6.txt.gz`)).toString('utf8');
  const merges = text.split('\n').slice(1, 1 + 49152 - 256 - 2);
  const bytesToUnicode: string[] = [];
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  const map = new Map<number, string>();
  for (let b = 0; b < 256; b++) if (printable(b)) map.set(b, String.fromCodePoint(b));
  for (let b = 0; b < 256; b++) if (!printable(b)) map.set(b, String.fromCodePoint(256 + extra++));
  for (let b = 0; b < 256; b++) if (printable(b)) bytesToUnicode.push(map.get(b)!);
  for (let b = 0; b < 256; b++) if (!printable(b)) bytesToUnicode.push(map.get(b)!);
  const vocab: string[] = [...bytesToUnicode, ...bytesToUnicode.map((c) => `${c}</w>`), ...merges.map((m) => m.replace(' ', '')), '<|startoftext|>', '<|endoftext|>'];
  const vocabObj: Record<string, number> = {};
  vocab.forEach((t, i) => (vocabObj[t] = i));
  return {
    'tokenizer/vocab.json': enc(JSON.stringify(vocabObj)),
    'tokenizer/merges.txt': enc(`#version: 0.2\n${merges.join('\n')}\n`),
    'tokenizer/tokenizer_config.json': json({ model_max_length: 77, pad_token: '<|endoftext|>', bos_token: '<|startoftext|>', eos_token: '<|endoftext|>', tokenizer_class: 'CLIPTokenizer' }),
    'tokenizer/special_tokens_map.json': json({ bos_token: '<|startoftext|>', eos_token: '<|endoftext|>', pad_token: '<|endoftext|>', unk_token: '<|endoftext|>' }),
  };
}

/** The served repo: restoration's files plus what a real SD repo also has (never to be requested). */
export function buildSdRepo(): Map<string, Uint8Array> {
  const read = (case_: string, file: string) => new Uint8Array(readFileSync(`${goldenDir(case_)}/${file}`));
  const unet = read('unet_mini', 'diffusion_pytorch_model.safetensors');
  const files: Record<string, Uint8Array> = {
    'model_index.json': json({
      _class_name: 'StableDiffusionPipeline', _diffusers_version: '0.27.1',
      feature_extractor: ['transformers', 'CLIPImageProcessor'], safety_checker: ['stable_diffusion', 'StableDiffusionSafetyChecker'],
      scheduler: ['diffusers', 'PNDMScheduler'], text_encoder: ['transformers', 'CLIPTextModel'], tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'UNet2DConditionModel'], vae: ['diffusers', 'AutoencoderKL'],
    }),
    'unet/config.json': read('unet_mini', 'config.json'),
    'unet/diffusion_pytorch_model.safetensors': unet,
    'unet/diffusion_pytorch_model.fp16.safetensors': toF16(unet, 'unet_mini'),
    'unet/diffusion_pytorch_model.bin': enc('not a pickle: must never be requested'),
    'vae/config.json': read('vae_mini', 'config.json'),
    'vae/diffusion_pytorch_model.safetensors': read('vae_mini', 'diffusion_pytorch_model.safetensors'),
    'text_encoder/config.json': read('clip_text_mini', 'config.json'),
    'text_encoder/model.safetensors': read('clip_text_mini', 'model.safetensors'),
    'scheduler/scheduler_config.json': json(SD15_SCHEDULER),
    'safety_checker/config.json': json({ _name_or_path: 'CompVis/stable-diffusion-safety-checker' }),
    'safety_checker/model.safetensors': serializeSafetensors({ w: f32Entry([1, 2, 3, 4], [4]) }),
    'feature_extractor/preprocessor_config.json': json({ crop_size: 224 }),
    ...tokenizerFiles(),
  };
  return new Map(Object.entries(files));
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const gitBlobId = (b: Uint8Array) => createHash('sha1').update(`blob ${b.byteLength}\0`).update(b).digest('hex');

export async function startHubServer(opts: HubServerOptions = {}, repoId = 'silo-test/tiny-sd', files = buildSdRepo()): Promise<HubServer> {
  const commit = createHash('sha1').update(`${repoId} commit`).digest('hex');
  const shaOf = new Map([...files].map(([p, b]) => [p, sha256(b)]));
  const byHash = new Map([...files].filter(([p]) => isLfs(p)).map(([p, b]) => [shaOf.get(p)!, { path: p, body: b }]));
  const requests: HubRequest[] = [];
  const cutOnce = new Set<string>();
  const corrupt = new Set<string>();
  const stallOnce = new Set<string>();
  const maxRequests = opts.maxRequests ?? 2000;
  let cdnOrigin = '';

  const body = (path: string, whole: Uint8Array) => {
    if (!corrupt.has(path)) return whole;
    const b = whole.slice();
    b[b.byteLength >> 1]! ^= 0xff;
    return b;
  };

  // Sends `data` (or the requested range); cuts the socket half-way when asked.
  const sendBytes = (req: IncomingMessage, res: ServerResponse, path: string, data: Uint8Array, extra: Record<string, string>) => {
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      if (start >= data.byteLength) {
        res.writeHead(416, { 'content-range': `bytes */${data.byteLength}` }).end();
        return;
      }
    }
    const part = data.subarray(start);
    const headers = { ...extra, 'content-length': String(part.byteLength), 'accept-ranges': 'bytes', ...(range ? { 'content-range': `bytes ${start}-${data.byteLength - 1}/${data.byteLength}` } : {}) };
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === 'HEAD') return void res.end();
    if (stallOnce.delete(path)) {
      res.write(part.subarray(0, part.byteLength >> 1)); // and never end: the client must give up
      return;
    }
    if (cutOnce.delete(path)) {
      res.write(part.subarray(0, part.byteLength >> 1), () => res.socket?.destroy());
      return;
    }
    res.end(part);
  };

  const handler = (origin: 'hub' | 'cdn') => (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '';
    requests.push({ origin, method: req.method ?? '', path: url, range: req.headers.range, authorization: req.headers.authorization });
    if (requests.length > maxRequests) return void res.writeHead(429).end();
    // CORS as the real hub sends it, so a page on another origin can read answers and headers.
    res.setHeader('access-control-allow-origin', '*');
    res.setHeader('access-control-expose-headers', 'x-repo-commit, x-linked-etag, x-linked-size, x-error-code, etag, content-length, content-range, link');
    if (req.method === 'OPTIONS') {
      return void res.writeHead(204, { 'access-control-allow-methods': 'GET, HEAD', 'access-control-allow-headers': 'authorization, range', 'access-control-max-age': '600' }).end();
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405).end();
    if (origin === 'cdn') {
      const m = /^\/cdn\/([0-9a-f]{64})$/.exec(url);
      const hit = m && byHash.get(m[1]!);
      if (!hit) return void res.writeHead(404).end();
      return sendBytes(req, res, hit.path, body(hit.path, hit.body), { etag: `"${m[1]}"` });
    }
    const api = apiAnswer(url, req.headers.authorization);
    if (api) return void res.writeHead(api.status, { 'content-type': 'application/json', ...api.headers }).end(JSON.stringify(api.body));
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url);
    // The real hub answers an unknown repo like a private one: 401 with X-Error-Code RepoNotFound.
    if (!m) return void res.writeHead(401, { 'x-error-code': 'RepoNotFound' }).end();
    const [, repo, revEnc, pathEnc] = m as unknown as [string, string, string, string];
    const gatedToken = opts.gated?.[repo];
    if (gatedToken !== undefined && req.headers.authorization !== `Bearer ${gatedToken}`) {
      return void res.writeHead(401, { 'x-error-code': 'GatedRepo' }).end('Access to this model is restricted');
    }
    if (repo !== repoId && gatedToken === undefined) return void res.writeHead(401, { 'x-error-code': 'RepoNotFound' }).end('Repository not found');
    const revision = decodeURIComponent(revEnc);
    if (revision !== 'main' && revision !== commit) return void res.writeHead(404, { 'x-error-code': 'RevisionNotFound' }).end();
    const path = pathEnc.split('/').map(decodeURIComponent).join('/');
    const data = files.get(path);
    if (!data) return void res.writeHead(404, { 'x-error-code': 'EntryNotFound', 'x-repo-commit': commit }).end();
    if (isLfs(path)) {
      const sha = shaOf.get(path)!;
      return void res
        .writeHead(302, {
          location: `${cdnOrigin}/cdn/${sha}`, 'x-repo-commit': commit, 'x-linked-etag': `"${sha}"`, 'x-linked-size': String(data.byteLength),
          etag: `"${gitBlobId(enc(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha}\nsize ${data.byteLength}\n`))}"`, 'content-length': '0',
        })
        .end();
    }
    sendBytes(req, res, path, body(path, data), { etag: `"${gitBlobId(data)}"`, 'x-repo-commit': commit });
  };

  // The JSON API the browser client uses: /api/models/{repo}/revision/{rev} (the commit) and
  // /api/models/{repo}/tree/{rev}?recursive=true (paths, sizes, LFS sha256s), paged by `treePageSize` with Link: rel="next".
  const apiAnswer = (url: string, authorization: string | undefined): { status: number; body: unknown; headers?: Record<string, string> } | null => {
    const m = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/?]+)(?:\?(.*))?$/.exec(url);
    if (!m) return null;
    const [, repo, kind, revEnc, query] = m as unknown as [string, string, string, string, string | undefined];
    const gatedToken = opts.gated?.[repo];
    if (gatedToken !== undefined && authorization !== `Bearer ${gatedToken}`) return { status: 401, body: { error: 'Access to this model is restricted' }, headers: { 'x-error-code': 'GatedRepo' } };
    if (repo !== repoId && gatedToken === undefined) return { status: 401, body: { error: 'Repository not found' }, headers: { 'x-error-code': 'RepoNotFound' } };
    const revision = decodeURIComponent(revEnc);
    if (revision !== 'main' && revision !== commit) return { status: 404, body: { error: 'Invalid rev id' }, headers: { 'x-error-code': 'RevisionNotFound' } };
    if (kind === 'revision') return { status: 200, body: { id: repoId, sha: commit, siblings: [...files.keys()].map((rfilename) => ({ rfilename })) } };
    const all = [...files].map(([path, data]) => ({
      type: 'file', path, size: isLfs(path) ? 135 : data.byteLength, oid: gitBlobId(data),
      ...(isLfs(path) ? { lfs: { oid: shaOf.get(path)!, size: data.byteLength, pointerSize: 135 } } : {}),
    }));
    const cursor = Number(new URLSearchParams(query ?? '').get('cursor') ?? '0');
    const page = all.slice(cursor, cursor + treePageSize);
    const next = cursor + treePageSize < all.length ? { link: `<${endpointUrl}/api/models/${repoId}/tree/${revEnc}?recursive=true&cursor=${cursor + treePageSize}>; rel="next"` } : undefined;
    return { status: 200, body: page, ...(next ? { headers: next } : {}) };
  };
  const treePageSize = opts.treePageSize ?? 10;
  let endpointUrl = '';

  const listen = async (s: Server) => {
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    s.unref();
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  };
  const hub = createServer(handler('hub'));
  const cdn = createServer(handler('cdn'));
  const endpoint = (endpointUrl = await listen(hub));
  cdnOrigin = await listen(cdn);
  const close = async () => {
    clearTimeout(timer);
    for (const s of [hub, cdn]) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  };
  const timer = setTimeout(() => void close(), opts.lifetimeMs ?? 120_000);
  timer.unref();
  return { endpoint, cdn: cdnOrigin, repoId, commit, files, requests, cutOnce, corrupt, stallOnce, sha256: (p) => shaOf.get(p)!, close };
}
