// One file from a plain HTTPS URL (a GitHub release asset, which redirects to its CDN), with the hub's
// download rules: a lock so two processes never write it, bytes into <dest>.incomplete resumed with
// Range after a cut or stalled connection (a few attempts here, later runs resume too), the size checked
// against Content-Length / Content-Range, the sha256 computed and, where one is expected, compared (a
// mismatch deletes the partial file). GitHub sends no hash header, so without an expected sha256 only
// the size is verified. Node only.

import { SiloError } from '../engine/errors.js';
import { acquireBlobLock } from './blob-lock-node.js';
import { sha256File } from './download-node.js';
import type { FileProgress } from './progress-text.js';
import { resumableGet } from './resumable-get-node.js';

export class ReleaseDownloadError extends SiloError {}

export interface AssetDownloadOptions {
  url: string;
  /** Where the file lands, complete and verified. */
  dest: string;
  /** The name progress lines and messages use. */
  label: string;
  expectedSha256?: string;
  fetch?: typeof fetch;
  /** Attempts for one run after cut connections (default 4). */
  attempts?: number;
  /** A request without an answer, or a body that stalls, for this long is given up / resumed (default 30 s). */
  timeoutMs?: number;
  onProgress?: (p: FileProgress) => void;
}

export interface AssetDownload {
  path: string;
  sha256: string;
  bytes: number;
  /** Bytes fetched in this call (0 when none were needed). */
  fetched: number;
  /** Whether a Range request resumed earlier bytes. */
  resumed: boolean;
}

/** GET with redirects followed by hand (up to 5), the Range header kept on each hop. */
async function get(o: AssetDownloadOptions, headers: Record<string, string>, signal: AbortSignal): Promise<Response> {
  let target = o.url;
  for (let hop = 0; hop < 6; hop++) {
    let res: Response;
    try {
      res = await (o.fetch ?? fetch)(target, { headers: { ...headers, 'accept-encoding': 'identity' }, redirect: 'manual', signal });
    } catch (e) {
      if (signal.aborted) throw e;
      const cause = (e as { cause?: { message?: string } }).cause?.message;
      throw new ReleaseDownloadError(`${o.label}: cannot reach ${new URL(target).origin} (${cause ?? (e as Error).message}); check the network, or see --offline`);
    }
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel();
      target = new URL(location, target).href;
      continue;
    }
    return res;
  }
  throw new ReleaseDownloadError(`${o.label}: too many redirects from ${o.url}`);
}

/** "bytes 10-99/100" -> { start: 10, total: 100 }. */
function contentRange(v: string | null): { start: number; total: number } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(v?.trim() ?? '');
  return m ? { start: Number(m[1]), total: Number(m[3]) } : null;
}

/** Downloads `url` to `dest` (see the file comment); the caller holds no lock, this takes `${dest}.lock`. */
export async function downloadAsset(o: AssetDownloadOptions): Promise<AssetDownload> {
  const { stat, rename, rm, mkdir } = await import('node:fs/promises');
  const { dirname } = await import('node:path');
  await mkdir(dirname(o.dest), { recursive: true });
  const lock = await acquireBlobLock(`${o.dest}.lock`);
  try {
    const partial = `${o.dest}.incomplete`;
    const attempts = o.attempts ?? 4;
    const got = await resumableGet({
      partial,
      attempts,
      stallMs: o.timeoutMs,
      file: o.label,
      onProgress: o.onProgress,
      request: (headers, signal) => get(o, headers, signal),
      accept: (res, have, knownTotal) => {
        if (res.status === 416 && have > 0) return 'restart'; // the server disowns our partial bytes
        if (!res.ok) {
          const why = res.status === 404 ? 'no such release asset' : `HTTP ${res.status} ${res.statusText}`.trim();
          throw new ReleaseDownloadError(`${o.label}: ${why} at ${o.url}`);
        }
        // The size: Content-Range's total on a 206, Content-Length on a 200 (the whole file, from byte 0).
        let start = 0;
        let size: number | null;
        if (res.status === 206) {
          const cr = contentRange(res.headers.get('content-range'));
          if (!cr || cr.start !== have) {
            throw new ReleaseDownloadError(`${o.label}: the server answered the range request from byte ${have} with Content-Range ${JSON.stringify(res.headers.get('content-range'))}`);
          }
          start = have;
          size = cr.total;
        } else {
          const len = res.headers.get('content-length');
          size = len && /^\d+$/.test(len) ? Number(len) : null;
        }
        if (size === null) throw new ReleaseDownloadError(`${o.label}: the server sent no size (Content-Length), so the download cannot be verified`);
        // The file changed on the server between attempts: what we have belongs to another version.
        if (knownTotal !== null && size !== knownTotal) return 'restart';
        return { start, total: size };
      },
      tooLong: (total) => new ReleaseDownloadError(`${o.label}: the server sent more than the ${total} bytes it announced`),
      isFatal: (e) => e instanceof ReleaseDownloadError,
    });
    const { total, lastError } = got;
    const have = (await stat(partial).catch(() => null))?.size ?? 0;
    if (total === null || have !== total) {
      throw new ReleaseDownloadError(
        `${o.label}: download incomplete after ${attempts} attempts (${have}${total === null ? '' : ` of ${total}`} bytes in ${partial}${lastError ? `; ${lastError.message}` : ''}); run again to resume`,
      );
    }
    const sha256 = await sha256File(partial);
    if (o.expectedSha256 && sha256 !== o.expectedSha256.toLowerCase()) {
      await rm(partial, { force: true });
      throw new ReleaseDownloadError(`${o.label}: downloaded bytes have sha256 ${sha256}, expected ${o.expectedSha256.toLowerCase()}; the partial file ${partial} was deleted, run again`);
    }
    await rename(partial, o.dest);
    return { path: o.dest, sha256, bytes: total, fetched: got.fetched, resumed: got.resumed };
  } finally {
    await lock.release();
  }
}
