// One writer per blob: an exclusive-create lock file at .locks/models--org--name/<etag>.lock holding
// "pid host time". A waiting process polls; a lock whose holder is gone (same host, dead pid) or
// that has not been refreshed for `staleMs` (the holder refreshes it while it downloads) is broken.
// Node only.

import { HubError } from './model-ref.js';

export interface BlobLock {
  release(): Promise<void>;
}

export interface LockOptions {
  staleMs?: number;
  pollMs?: number;
  /** Gives up after this long (default: an hour, more than any sane download needs to start). */
  timeoutMs?: number;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function acquireBlobLock(path: string, opts: LockOptions = {}): Promise<BlobLock> {
  const { open, mkdir, stat, readFile, rm, utimes } = await import('node:fs/promises');
  const { dirname } = await import('node:path');
  const { hostname } = await import('node:os');
  const staleMs = opts.staleMs ?? 120_000;
  const pollMs = opts.pollMs ?? 100;
  const deadline = Date.now() + (opts.timeoutMs ?? 3_600_000);
  await mkdir(dirname(path), { recursive: true });
  const host = hostname();
  for (;;) {
    try {
      const fh = await open(path, 'wx');
      await fh.writeFile(`${process.pid} ${host} ${Date.now()}\n`);
      await fh.close();
      const refresh = setInterval(() => {
        const now = new Date();
        utimes(path, now, now).catch(() => {});
      }, Math.max(1000, staleMs / 4));
      refresh.unref();
      return {
        release: async () => {
          clearInterval(refresh);
          await rm(path, { force: true });
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new HubError(`${path}: cannot create the download lock (${(e as Error).message})`);
    }
    // Held: is the holder still there?
    try {
      const [info, text] = await Promise.all([stat(path), readFile(path, 'utf8')]);
      const [pid, lockHost] = text.trim().split(' ');
      const deadHolder = lockHost === host && pid !== undefined && /^\d+$/.test(pid) && !alive(Number(pid));
      if (deadHolder || Date.now() - info.mtimeMs > staleMs) await rm(path, { force: true });
    } catch {
      // Released (or half-written) between our attempts: try again.
    }
    if (Date.now() > deadline) throw new HubError(`${path}: another download of this file holds the lock; gave up waiting (delete the file if no download is running)`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
