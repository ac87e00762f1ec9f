// Model sources for the browser: a Hugging Face repo (the hub's JSON API pins the commit and lists
// sizes and LFS sha256s; files come from CORS-friendly resolve URLs) or any base URL, each file
// streamed into a WeightStore (OPFS, the Cache API, or memory) keyed by repo, commit and path (or by
// URL), verified, and read back tensor by tensor: no file is ever held as one ArrayBuffer. A second
// visit finds every weight in the store and sends no request for it. Browser-safe (no node: imports).

import { SiloError } from '../engine/errors.js';
import { SafetensorsFile } from '../formats/safetensors.js';
import type { FolderAccess } from '../formats/folder.js';
import { HubError, HubUnreachableError, hubResponseError, isCommitHash, resolveUrl, validateRepoId } from './model-ref.js';
import { chooseRestorationFiles } from './restoration-files.js';
import type { FileProgress } from './progress-text.js';
import { sha256Hex } from './sha256.js';
import type { StoredFile, WeightStore } from './weight-store.js';

const MAX_TREE_PAGES = 50;
/** Plain (non-LFS) files are small (configs, the tokenizer); larger ones are refused. */
const MAX_PLAIN_BYTES = 64 << 20;

export interface BrowserSourceOptions {
  store: WeightStore;
  /** Per-file byte progress of downloads (cached files report nothing). */
  onProgress?: (p: FileProgress) => void;
  /** A line per file: cached or fetched. */
  log?: (line: string) => void;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

export interface BrowserHubOptions extends BrowserSourceOptions {
  /** The hub or a mirror (HF_ENDPOINT's role); default https://huggingface.co. */
  endpoint?: string;
  revision?: string;
  /** A read token for gated or private repos (sent to the endpoint's origin only). */
  token?: string;
}

/** A folder whose files live in the store; close() releases the open files (after the models are built). */
export interface StoredFolder {
  folder: FolderAccess;
  /** "fp16" when the fp16 weights were chosen (hub repos). */
  variant?: string;
  provenance: Record<string, unknown>;
  /** Bytes downloaded now (0 when every file came from the store). */
  fetchedBytes: number;
  close(): void;
}

interface TreeEntry {
  path: string;
  size: number;
  /** sha256 of an LFS file. */
  lfs?: string;
  /** The git blob id (sha1) of a plain file. */
  oid?: string;
}

/** Progress for one streamed file, with rate and ETA. */
function progressReporter(file: string, total: number | null, onProgress?: (p: FileProgress) => void) {
  const start = performance.now();
  let last = 0;
  return (bytes: number) => {
    const now = performance.now();
    if (!onProgress || (now - last < 100 && bytes !== total)) return;
    last = now;
    const rate = bytes / Math.max(1e-3, (now - start) / 1000);
    onProgress({ file, bytes, total, rate, etaSeconds: total !== null && rate > 0 ? (total - bytes) / rate : null });
  };
}

async function gitBlobId(bytes: Uint8Array): Promise<string> {
  const head = new TextEncoder().encode(`blob ${bytes.byteLength}\0`);
  const all = new Uint8Array(head.byteLength + bytes.byteLength);
  all.set(head);
  all.set(bytes, head.byteLength);
  return [...new Uint8Array(await crypto.subtle.digest('SHA-1', all))].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** A FolderAccess over stored files (opened on first use, kept open until close()). */
function storedFolder(location: string, names: Set<string>, openFile: (name: string) => Promise<StoredFile>): { folder: FolderAccess; close(): void } {
  const open = new Map<string, Promise<StoredFile>>();
  const get = (name: string) => {
    if (!names.has(name)) throw new SiloError(`${location}/${name}: not one of the files this source provides`);
    let f = open.get(name);
    if (!f) open.set(name, (f = openFile(name)));
    return f;
  };
  const bytes = async (name: string) => {
    const f = await get(name);
    return f.reader.read(0, f.size);
  };
  return {
    folder: {
      location,
      exists: async (name) => names.has(name),
      bytes,
      text: async (name) => new TextDecoder().decode(await bytes(name)),
      safetensors: async (name) => SafetensorsFile.open((await get(name)).reader, `${location}/${name}`),
    },
    close() {
      for (const f of open.values()) f.then((s) => s.close(), () => {});
      open.clear();
    },
  };
}

async function request(fetchFn: typeof fetch, url: string, init: RequestInit, what: string): Promise<Response> {
  try {
    return await fetchFn(url, init);
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new HubUnreachableError(`${what}: cannot reach ${new URL(url).origin} (${(e as Error).message}; offline, or the server does not allow requests from this page: CORS)`);
  }
}

/**
 * A Hugging Face repo as a folder of stored files. The commit is pinned first (the API's
 * /api/models/{repo}/revision/{rev}); with the hub unreachable, the commit and file list the store
 * kept from an earlier visit are used, so a cached model loads offline.
 */
export async function openHubModelInBrowser(repoId: string, opts: BrowserHubOptions): Promise<StoredFolder> {
  validateRepoId(repoId);
  const endpoint = (opts.endpoint || 'https://huggingface.co').replace(/\/+$/, '');
  const revision = opts.revision || 'main';
  const fetchFn = opts.fetch ?? fetch.bind(globalThis);
  const { store, signal } = opts;
  const log = opts.log ?? (() => {});
  const ctx = { repoId, revision, endpoint, token: opts.token };
  const ownOrigin = new URL(endpoint).origin;
  const headers = (url: string): Record<string, string> => (opts.token && new URL(url).origin === ownOrigin ? { authorization: `Bearer ${opts.token}` } : {});
  const repoKey = `hub/${repoId.replace('/', '--')}`;
  const refKey = `${repoKey}/refs/${encodeURIComponent(revision)}`;
  const api = async (url: string, what: string) => {
    const res = await request(fetchFn, url, { headers: headers(url), signal }, `${repoId}@${revision}`);
    if (!res.ok) throw hubResponseError(ctx, what, res, 'the Token field');
    return res;
  };

  let commit: string;
  let tree: TreeEntry[];
  let offline = false;
  try {
    commit = isCommitHash(revision) ? revision : String(((await (await api(`${endpoint}/api/models/${repoId}/revision/${encodeURIComponent(revision)}`, 'the revision')).json()) as { sha?: unknown }).sha ?? '');
    if (!isCommitHash(commit)) throw new HubError(`${repoId}@${revision}: ${endpoint} sent no commit hash for the revision; is it a Hugging Face hub?`);
    const cachedTree = await store.getText(`${repoKey}/${commit}/tree.json`);
    tree = cachedTree ? (JSON.parse(cachedTree) as TreeEntry[]) : await listTree(api, endpoint, repoId, commit);
    await store.putText(`${repoKey}/${commit}/tree.json`, JSON.stringify(tree));
    if (!isCommitHash(revision)) await store.putText(refKey, commit);
  } catch (e) {
    if (!(e instanceof HubUnreachableError)) throw e;
    const c = isCommitHash(revision) ? revision : await store.getText(refKey);
    const t = c ? await store.getText(`${repoKey}/${c}/tree.json`) : null;
    if (!c || !t) throw new HubUnreachableError(`${e.message}; and ${repoId}@${revision} is not in this browser's weight cache yet`);
    log(`${e.message}; using the cached commit ${c}`);
    commit = c;
    tree = JSON.parse(t) as TreeEntry[];
    offline = true;
  }

  const byPath = new Map(tree.map((t) => [t.path, t]));
  const key = (path: string) => `${repoKey}/${commit}/${path}`;
  let fetchedBytes = 0;
  const fetchFile = async (path: string): Promise<StoredFile> => {
    const cached = await store.open(key(path));
    if (cached) {
      log(`cached ${repoId}/${path}`);
      return cached;
    }
    const entry = byPath.get(path)!;
    if (offline) throw new HubUnreachableError(`${repoId}@${revision}: ${path} is not in this browser's weight cache and the hub cannot be reached`);
    const url = resolveUrl(endpoint, repoId, commit, path);
    const res = await request(fetchFn, url, { headers: headers(url), signal }, `${repoId}@${commit}: ${path}`);
    if (!res.ok || !res.body) throw hubResponseError({ ...ctx, revision: commit }, path, res, 'the Token field');
    const label = `${repoId}@${commit.slice(0, 12)}/${path}`;
    const report = progressReporter(path, entry.size, opts.onProgress);
    let stored: StoredFile;
    if (entry.lfs) {
      stored = await store.put(key(path), res.body, { size: entry.size, sha256: entry.lfs, label }, (n) => report(n), signal);
    } else {
      if (entry.size > MAX_PLAIN_BYTES) throw new HubError(`${label}: a ${entry.size}-byte file that is not stored with LFS; refusing to read it whole`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (bytes.byteLength !== entry.size) throw new HubError(`${label}: received ${bytes.byteLength} bytes, the hub lists ${entry.size}`);
      if (entry.oid && (await gitBlobId(bytes)) !== entry.oid) throw new HubError(`${label}: the bytes received do not have the git blob id ${entry.oid} the hub lists (corrupted in transit?)`);
      report(bytes.byteLength);
      stored = await store.put(key(path), new Blob([bytes]).stream(), { size: entry.size, sha256: sha256Hex(bytes), label });
    }
    fetchedBytes += entry.size;
    log(`fetched ${repoId}/${path} (${entry.size} bytes)`);
    return stored;
  };

  // Files are fetched once each, in order, before any model is built: download progress, then upload.
  const fetched = new Map<string, StoredFile>();
  const ensure = async (path: string) => {
    let f = fetched.get(path);
    if (!f) fetched.set(path, (f = await fetchFile(path)));
    return f;
  };
  try {
    const chosen = await chooseRestorationFiles(
      async (p) => byPath.has(p),
      async (p) => {
        const f = await ensure(p);
        return new TextDecoder().decode(f.reader.read(0, f.size));
      },
      false,
    );
    for (const p of chosen.files) await ensure(p);
    const files = chosen.files.map((p) => ({ path: p, size: byPath.get(p)!.size, ...(byPath.get(p)!.lfs ? { sha256: byPath.get(p)!.lfs } : { sha256: fetched.get(p)!.sha256 }) }));
    const { folder, close } = storedFolder(`${repoId}@${revision}`, new Set(chosen.files), async (p) => ensure(p));
    return {
      folder,
      variant: chosen.variant,
      provenance: { repo: repoId, revision, commit, endpoint, offline, files, fetched_bytes: fetchedBytes, cache: store.kind },
      fetchedBytes,
      close() {
        close();
        for (const f of fetched.values()) f.close();
        fetched.clear();
      },
    };
  } catch (e) {
    for (const f of fetched.values()) f.close();
    throw e;
  }
}

/** The repo's files at a commit, from the hub's tree API (following its Link: rel="next" pages). */
async function listTree(api: (url: string, what: string) => Promise<Response>, endpoint: string, repoId: string, commit: string): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  let url: string | null = `${endpoint}/api/models/${repoId}/tree/${commit}?recursive=true`;
  for (let page = 0; url; page++) {
    if (page >= MAX_TREE_PAGES) throw new HubError(`${repoId}@${commit}: the file list runs past ${MAX_TREE_PAGES} pages`);
    const res = await api(url, 'the file list');
    const items = (await res.json()) as unknown;
    if (!Array.isArray(items)) throw new HubError(`${repoId}@${commit}: ${url} did not answer a file list`);
    for (const it of items as Record<string, unknown>[]) {
      if (it['type'] !== 'file' || typeof it['path'] !== 'string' || typeof it['size'] !== 'number') continue;
      const lfs = it['lfs'] as { oid?: unknown; size?: unknown } | undefined;
      const sha = typeof lfs?.oid === 'string' ? lfs.oid : undefined;
      out.push({
        path: it['path'],
        size: typeof lfs?.size === 'number' ? lfs.size : it['size'],
        ...(sha ? { lfs: sha } : typeof it['oid'] === 'string' ? { oid: it['oid'] } : {}),
      });
    }
    const next = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '');
    url = next ? new URL(next[1]!, url).href : null;
  }
  return out;
}

/**
 * A folder at a base URL (a diffusers folder, an operator's folder, the tiny test models) whose files
 * are stored on first use under the URL, sha256 recorded; later visits read them from the store with
 * no request. exists() asks the server (HEAD) only for files not stored yet.
 */
export function openUrlFolderInBrowser(baseUrl: string, opts: BrowserSourceOptions & { init?: RequestInit }): StoredFolder {
  const base = baseUrl.replace(/\/+$/, '');
  const fetchFn = opts.fetch ?? fetch.bind(globalThis);
  const { store, signal } = opts;
  const log = opts.log ?? (() => {});
  const key = (name: string) => `url/${encodeURIComponent(base)}/${name}`;
  const opened = new Map<string, Promise<StoredFile>>();
  const files: Record<string, { size: number; sha256: string }> = {};
  const provenance: Record<string, unknown> = { url: base, files, cache: store.kind };
  let fetchedBytes = 0;
  const openFile = (name: string): Promise<StoredFile> => {
    let p = opened.get(name);
    if (!p) {
      p = (async () => {
        const cached = await store.open(key(name));
        if (cached) {
          log(`cached ${base}/${name}`);
          return cached;
        }
        const url = `${base}/${name}`;
        const res = await request(fetchFn, url, { ...opts.init, signal }, url);
        if (!res.ok || !res.body) throw new SiloError(`${url}: HTTP ${res.status} ${res.statusText}`.trim());
        const declared = res.headers.get('content-encoding') ? null : res.headers.get('content-length');
        const total = declared && /^\d+$/.test(declared) ? Number(declared) : null;
        const report = progressReporter(name, total, opts.onProgress);
        const f = await store.put(key(name), res.body, { ...(total !== null ? { size: total } : {}), label: url }, (n) => report(n), signal);
        fetchedBytes += f.size;
        out.fetchedBytes = fetchedBytes;
        log(`fetched ${url} (${f.size} bytes)`);
        return f;
      })();
      p.catch(() => opened.delete(name));
      opened.set(name, p);
    }
    return p.then((f) => ((files[name] = { size: f.size, sha256: f.sha256 }), f));
  };
  const read = async (name: string) => {
    const f = await openFile(name);
    return f.reader.read(0, f.size);
  };
  const out: StoredFolder = {
    folder: {
      location: base,
      bytes: read,
      text: async (name) => new TextDecoder().decode(await read(name)),
      exists: async (name) => {
        if (opened.has(name)) return opened.get(name)!.then(() => true, () => false);
        const cached = await store.open(key(name));
        if (cached) {
          // openFile() will reuse this entry without logging, so its "cached" line is written here.
          log(`cached ${base}/${name}`);
          opened.set(name, Promise.resolve(cached));
          return true;
        }
        try {
          return (await fetchFn(`${base}/${name}`, { ...opts.init, method: 'HEAD', signal })).ok;
        } catch {
          return false;
        }
      },
      safetensors: async (name) => SafetensorsFile.open((await openFile(name)).reader, `${base}/${name}`),
    },
    provenance,
    fetchedBytes: 0,
    close() {
      for (const p of opened.values()) p.then((f) => f.close(), () => {});
      opened.clear();
    },
  };
  return out;
}
