// Talking to the hub for one file: the HEAD that learns commit, etag, size and the CDN location
// (redirects not followed, as huggingface_hub does, except a relative one for a renamed repo), and
// the resumable GET into blobs/<etag>.incomplete (Range: bytes=<have>- after a cut connection, retried
// a few times; a later run resumes too). Each GET asks the resolve URL again and follows its redirect,
// so a signed CDN URL that expired during a long download is renewed; the token goes only to the
// endpoint's own origin. Before the file becomes the blob it is verified against its etag: the sha256
// of an LFS file, the git blob id of a plain one. Node only.

import { HubError, HubUnreachableError, hubResponseError, isSha256, normalizeEtag } from './model-ref.js';
import type { RepoCache } from './cache-node.js';
import { acquireBlobLock } from './blob-lock-node.js';
import type { FileProgress } from './progress-text.js';
import { resumableGet } from './resumable-get-node.js';

export type { FileProgress };
/** The user-facing error for a failed hub response (the shared, browser-safe mapping). */
export const responseError = (ctx: HubRequestContext, path: string, res: Response): HubError => hubResponseError(ctx, path, res);

export interface HubRequestContext {
  repoId: string;
  revision: string;
  endpoint: string;
  token?: string;
  fetch?: typeof fetch;
  /** Attempts for one GET after a cut connection (default 4). */
  attempts?: number;
  /** A HEAD without an answer, or a GET whose body stalls, for this long is given up / cut and resumed (default 30 s). */
  timeoutMs?: number;
}

export interface FileMeta {
  commit: string;
  etag: string;
  size: number;
  /** The resolve URL that was asked (at the commit: what GET asks again). */
  url: string;
  /** Where the bytes are (the CDN for LFS files), else the resolve URL itself. */
  location: string;
}

const describe = (ctx: HubRequestContext, path: string) => `${ctx.repoId}@${ctx.revision}: ${path}`;

function authHeaders(ctx: HubRequestContext, url: string): Record<string, string> {
  if (!ctx.token || new URL(url).origin !== new URL(ctx.endpoint).origin) return {};
  return { authorization: `Bearer ${ctx.token}` };
}

async function send(ctx: HubRequestContext, url: string, init: RequestInit, path: string): Promise<Response> {
  // identity: sizes and hashes are of the stored bytes, never of a gzip transfer encoding.
  const headers = { ...(init.headers as Record<string, string>), 'accept-encoding': 'identity', ...authHeaders(ctx, url) };
  try {
    return await (ctx.fetch ?? fetch)(url, { ...init, redirect: 'manual', headers });
  } catch (e) {
    const cause = (e as { cause?: { message?: string } }).cause?.message;
    const why = (e as Error).name === 'TimeoutError' || (e as Error).name === 'AbortError' ? `no answer within ${(ctx.timeoutMs ?? 30_000) / 1000} s` : (cause ?? (e as Error).message);
    throw new HubUnreachableError(`${describe(ctx, path)}: cannot reach ${new URL(url).origin} (${why})`);
  }
}

/**
 * HEAD on the resolve URL. Returns null for a missing file (404 EntryNotFound) so callers can probe;
 * every other failure is a HubError.
 */
export async function headFile(ctx: HubRequestContext, url: string, path: string): Promise<FileMeta | null> {
  let target = url;
  for (let hop = 0; hop < 5; hop++) {
    const res = await send(ctx, target, { method: 'HEAD', signal: AbortSignal.timeout(ctx.timeoutMs ?? 30_000) }, path);
    const location = res.headers.get('location');
    // A relative redirect is the hub itself (a renamed repo): follow it. An absolute one is the CDN.
    if (res.status >= 300 && res.status < 400 && location?.startsWith('/')) {
      target = new URL(location, target).href;
      continue;
    }
    if (res.status === 404 && (res.headers.get('x-error-code') ?? 'EntryNotFound') === 'EntryNotFound') return null;
    if (!(res.ok || (res.status >= 300 && res.status < 400))) throw responseError(ctx, path, res);
    const commit = res.headers.get('x-repo-commit');
    const etag = normalizeEtag(res.headers.get('x-linked-etag')) ?? normalizeEtag(res.headers.get('etag'));
    const sizeText = res.headers.get('x-linked-size') ?? res.headers.get('content-length');
    if (!commit || !/^[0-9a-f]{40}$/.test(commit)) throw new HubError(`${describe(ctx, path)}: the server sent no commit hash (X-Repo-Commit); is ${ctx.endpoint} a Hugging Face hub?`);
    // The etag names a file in blobs/: a plain name, never a path.
    if (!etag || !/^[\w-][\w.-]{0,127}$/.test(etag) || etag.includes('..')) throw new HubError(`${describe(ctx, path)}: the server sent no usable ETag`);
    if (!sizeText || !/^\d+$/.test(sizeText)) throw new HubError(`${describe(ctx, path)}: the server sent no file size`);
    return { commit, etag, size: Number(sizeText), url: target, location: location ? new URL(location, target).href : target };
  }
  throw new HubError(`${describe(ctx, path)}: too many redirects`);
}

/** GET with redirects followed by hand, so the token never leaves the endpoint's origin. */
async function getFollowing(ctx: HubRequestContext, url: string, headers: Record<string, string>, path: string, signal: AbortSignal): Promise<Response> {
  let target = url;
  for (let hop = 0; hop < 5; hop++) {
    const res = await send(ctx, target, { headers, signal }, path);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel();
      target = new URL(location, target).href;
      continue;
    }
    return res;
  }
  throw new HubError(`${describe(ctx, path)}: too many redirects`);
}

/** sha256 of a file, or with `gitBlob` its git blob id (sha1 of "blob <size>\0" + bytes), streamed. */
export async function sha256File(path: string, gitBlob = false): Promise<string> {
  const { createHash } = await import('node:crypto');
  const { createReadStream } = await import('node:fs');
  const { stat } = await import('node:fs/promises');
  const h = createHash(gitBlob ? 'sha1' : 'sha256');
  if (gitBlob) h.update(`blob ${(await stat(path)).size}\0`);
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Makes sure blobs/<etag> holds the file: under the blob's lock, resumes or starts
 * blobs/<etag>.incomplete, verifies it (size; sha256 for LFS etags) and renames it into place.
 * Returns the number of bytes fetched (0 when the blob was already there).
 */
export async function downloadBlob(ctx: HubRequestContext, cache: RepoCache, meta: FileMeta, path: string, onProgress?: (p: FileProgress) => void): Promise<number> {
  const { stat, rename, rm, mkdir } = await import('node:fs/promises');
  const { dirname } = await import('node:path');
  const blob = cache.blob(meta.etag);
  const done = async () => (await stat(blob).catch(() => null))?.isFile() ?? false;
  if (await done()) return 0;
  const lock = await acquireBlobLock(cache.lock(meta.etag));
  try {
    if (await done()) return 0; // another writer finished while we waited
    await mkdir(dirname(blob), { recursive: true });
    const partial = `${blob}.incomplete`;
    const attempts = ctx.attempts ?? 4;
    const got = await resumableGet({
      partial,
      expectedSize: meta.size,
      attempts,
      stallMs: ctx.timeoutMs,
      file: path,
      onProgress,
      // Each GET asks the resolve URL again: a signed CDN URL that expired meanwhile is renewed.
      request: (headers, signal) => getFollowing(ctx, meta.url, headers, path, signal),
      accept: (res, have) => {
        if (res.status === 416 && have > 0) return 'restart'; // the server disowns our partial bytes
        if (!res.ok) throw responseError(ctx, path, res);
        // A 200 to a Range request ignored it: the body is the whole file.
        return { start: have > 0 && res.status === 206 ? have : 0, total: meta.size };
      },
      tooLong: (total) => new HubError(`${describe(ctx, path)}: the server sent more than the ${total} bytes it announced`),
      isFatal: (e) => e instanceof HubError,
    });
    const lastError = got.lastError;
    const have = (await stat(partial).catch(() => null))?.size ?? 0;
    if (have !== meta.size) {
      throw new HubError(`${describe(ctx, path)}: download incomplete after ${attempts} attempts (${have} of ${meta.size} bytes${lastError ? `; ${lastError.message}` : ''}); run again to resume`);
    }
    const kind = isSha256(meta.etag) ? 'sha256' : /^[0-9a-f]{40}$/.test(meta.etag) ? 'git blob id' : null;
    if (kind) {
      const got = await sha256File(partial, kind === 'git blob id');
      if (got !== meta.etag) {
        await rm(partial, { force: true });
        throw new HubError(`${describe(ctx, path)}: downloaded bytes have ${kind} ${got}, the hub says ${meta.etag}; the partial file was deleted, run again`);
      }
    }
    await rename(partial, blob);
    return got.fetched;
  } finally {
    await lock.release();
  }
}
