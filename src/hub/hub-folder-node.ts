// A Hugging Face repo as a FolderAccess: the files restoration needs are fetched into (or found in)
// the hub cache, and the folder reads them from snapshots/<commit>/ on disk, so
// loadDiffusersPipeline and the lazy safetensors reader work unchanged. Offline (option or
// HF_HUB_OFFLINE=1) only the cache is used and every missing file is named. Node only.

import type { FolderAccess } from '../formats/folder.js';
import { dirFolder } from '../formats/folder-node.js';
import { HubError, HubUnreachableError, hubSettingsFromEnv, isCommitHash, resolveUrl, validateRepoId, type HubSettings } from './model-ref.js';
import { fileExists, linkSnapshot, markNoExist, readRef, repoCache, writeRef, type RepoCache } from './cache-node.js';
import { downloadBlob, headFile, sha256File, type FileMeta, type FileProgress, type HubRequestContext } from './download-node.js';
import { chooseRestorationFiles } from './restoration-files.js';

const MAX_INDEX_BYTES = 64 << 20;

export interface HubFolderOptions extends Partial<HubSettings> {
  revision?: string;
  /** Defaults for unset options come from this environment (default process.env). */
  env?: Record<string, string | undefined>;
  onProgress?: (p: FileProgress) => void;
  /** Tells about each file (cached / fetched), for the CLI's log. */
  log?: (line: string) => void;
  fetch?: typeof fetch;
  attempts?: number;
  /** HEAD / stalled-GET timeout in ms (default 30 s). */
  timeoutMs?: number;
}

/** What the report records about the model. */
export interface HubProvenance {
  repo: string;
  revision: string;
  commit: string;
  endpoint: string;
  offline: boolean;
  /** Every file used, with its etag (the sha256 for LFS files) and size in bytes. */
  files: Array<{ path: string; etag: string; sha256?: string; size: number }>;
  /** Bytes fetched in this run (0 with a complete cache). */
  fetchedBytes: number;
}

export interface HubFolder {
  folder: FolderAccess;
  /** "fp16" when the fp16 weights were chosen: pass it to loadDiffusersPipeline. */
  variant?: string;
  snapshotDir: string;
  provenance: HubProvenance;
}

/** The folder restricted to the chosen files: exists() says no to anything else (e.g. the plain weights next to the fp16 ones). */
function restrictedFolder(dir: string, files: Set<string>, location: string): FolderAccess {
  const inner = dirFolder(dir);
  const known = (name: string) => {
    if (!files.has(name)) throw new HubError(`${location}/${name}: not one of the files fetched for restoration`);
  };
  return {
    location,
    exists: async (name) => files.has(name) && inner.exists(name),
    bytes: async (name, p) => (known(name), inner.bytes(name, p)),
    text: async (name) => (known(name), inner.text(name)),
    safetensors: async (name, p) => (known(name), inner.safetensors!(name, p)),
  };
}

async function blobInfo(cache: RepoCache, commit: string, path: string): Promise<{ etag: string; size: number }> {
  const { realpath, stat } = await import('node:fs/promises');
  const { basename } = await import('node:path');
  const snap = cache.snapshot(commit, path);
  const real = await realpath(snap).catch(() => snap);
  const size = (await stat(real)).size;
  // A symlinked snapshot names its blob; a copied one is hashed.
  if (real !== snap) return { etag: basename(real), size };
  return { etag: await sha256File(real), size };
}

export async function openHubModel(repoId: string, opts: HubFolderOptions = {}): Promise<HubFolder> {
  validateRepoId(repoId);
  const { homedir } = await import('node:os');
  const env = hubSettingsFromEnv(opts.env ?? process.env, homedir());
  const settings: HubSettings = {
    endpoint: (opts.endpoint ?? env.endpoint).replace(/\/+$/, ''),
    token: opts.token ?? env.token ?? (await readTokenFile(env.tokenPath)),
    cacheDir: opts.cacheDir ?? env.cacheDir,
    offline: opts.offline ?? env.offline,
  };
  if (!settings.cacheDir) throw new HubError('no Hugging Face cache folder: set HF_HUB_CACHE or HF_HOME');
  const revision = opts.revision ?? 'main';
  const cache = repoCache(settings.cacheDir, repoId);
  const log = opts.log ?? (() => {});
  const metas = new Map<string, FileMeta>();
  let fetchedBytes = 0;
  let commit: string;

  let usedCacheOnly = settings.offline;
  /** The cache alone (offline, or the hub unreachable): every missing file is named. */
  const fromCache = async (why: string): Promise<HubFolder> => {
    usedCacheOnly = true;
    const c = isCommitHash(revision) ? revision : await readRef(cache, revision);
    if (!c) {
      throw new HubError(`${why}: ${repoId}@${revision} is not in the cache ${settings.cacheDir} (no ${cache.ref(revision)}); run once without --offline / HF_HUB_OFFLINE to download it`);
    }
    commit = c;
    const chosen = await chooseRestorationFiles(
      (p) => fileExists(cache.snapshot(commit, p)),
      async (p) => (await import('node:fs/promises')).readFile(cache.snapshot(commit, p), 'utf8'),
      true,
    );
    if (chosen.missing.length) {
      throw new HubError(
        `${why}: ${repoId}@${revision} (commit ${commit}) is missing from the cache ${settings.cacheDir}: ${chosen.missing.join(', ')}; ` +
          `run once without --offline (unset HF_HUB_OFFLINE) to fetch them, or \`huggingface-cli download ${repoId} ${chosen.missing.filter((m) => !m.includes(' ')).join(' ')}\``.trim(),
      );
    }
    return finish(chosen.files, chosen.variant);
  };
  if (settings.offline) return fromCache('offline');

  const ctx: HubRequestContext = { repoId, revision, endpoint: settings.endpoint, token: settings.token, fetch: opts.fetch, attempts: opts.attempts, timeoutMs: opts.timeoutMs };
  // The first HEAD pins the commit; every later file is resolved at that commit, so a push in between cannot mix versions.
  let first: FileMeta | null;
  try {
    first = await headFile(ctx, resolveUrl(settings.endpoint, repoId, revision, 'model_index.json'), 'model_index.json');
  } catch (e) {
    // As huggingface_hub does: with the hub unreachable (not refusing), a cached revision is used.
    if (!(e instanceof HubUnreachableError)) throw e;
    log(`${e.message}; trying the cache`);
    return fromCache(`${e.message}, and offline`);
  }
  if (!first) throw new HubError(`${repoId}@${revision}: no model_index.json; restoration needs a diffusers Stable Diffusion repo`);
  commit = first.commit;
  metas.set('model_index.json', first);
  await writeRef(cache, revision, commit);
  const atCommit: HubRequestContext = { ...ctx, revision: commit };

  const probe = async (path: string) => {
    if (metas.has(path)) return true;
    if (await fileExists(cache.noExist(commit, path))) return false;
    const meta = await headFile(atCommit, resolveUrl(settings.endpoint, repoId, commit, path), path);
    if (!meta) {
      await markNoExist(cache, commit, path);
      return false;
    }
    metas.set(path, meta);
    return true;
  };
  const fetchOne = async (path: string) => {
    const meta = metas.get(path)!;
    // GET at the commit, whichever revision the HEAD asked (model_index.json's asked the branch).
    const n = await downloadBlob(atCommit, cache, { ...meta, url: resolveUrl(settings.endpoint, repoId, commit, path) }, path, opts.onProgress);
    fetchedBytes += n;
    log(n > 0 ? `fetched ${repoId}/${path} (${n} bytes)` : `cached ${repoId}/${path}`);
    await linkSnapshot(cache, commit, path, meta.etag);
  };
  const chosen = await chooseRestorationFiles(probe, async (p) => {
    // Only sharded indexes are read here: small JSON, so a huge one is refused rather than read into memory.
    if (metas.get(p)!.size > MAX_INDEX_BYTES) throw new HubError(`${repoId}@${revision}: ${p} is ${metas.get(p)!.size} bytes, too large for a weight index`);
    await fetchOne(p);
    return (await import('node:fs/promises')).readFile(cache.snapshot(commit, p), 'utf8');
  }, false);
  for (const f of chosen.files) if (!(await fileExists(cache.snapshot(commit, f))) || !(await linkedTo(cache, commit, f, metas.get(f)!.etag))) await fetchOne(f);
  return finish(chosen.files, chosen.variant);

  async function finish(files: string[], variant?: string): Promise<HubFolder> {
    const list: HubProvenance['files'] = [];
    for (const f of files) {
      const m = metas.get(f);
      const info = m ? { etag: m.etag, size: m.size } : await blobInfo(cache, commit, f);
      list.push({ path: f, etag: info.etag, ...(/^[0-9a-f]{64}$/.test(info.etag) ? { sha256: info.etag } : {}), size: info.size });
    }
    const snapshotDir = `${cache.repoDir}/snapshots/${commit}`;
    return {
      folder: restrictedFolder(snapshotDir, new Set(files), `${repoId}@${revision}`),
      variant,
      snapshotDir,
      provenance: { repo: repoId, revision, commit, endpoint: settings.endpoint, offline: usedCacheOnly, files: list, fetchedBytes },
    };
  }
}

/** The token `huggingface-cli login` saved, if any. */
async function readTokenFile(path: string | undefined): Promise<string | undefined> {
  if (!path) return undefined;
  const { readFile } = await import('node:fs/promises');
  const t = await readFile(path, 'utf8').then((s) => s.trim(), () => '');
  return t && t.length < 1000 ? t : undefined;
}

/** The name the issue uses: a hub repo as a FolderAccess (plus variant and provenance). */
export const hubFolder = openHubModel;

/** Whether the snapshot entry already points at (or is a copy of) the blob with this etag. */
async function linkedTo(cache: RepoCache, commit: string, path: string, etag: string): Promise<boolean> {
  const { realpath } = await import('node:fs/promises');
  const real = await realpath(cache.snapshot(commit, path)).catch(() => null);
  if (real === null) return false;
  const blob = await realpath(cache.blob(etag)).catch(() => null);
  return real === blob || !real.includes('/blobs/');
}
