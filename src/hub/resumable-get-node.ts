// The attempt loop of a resumable download, shared by the hub client and the release client: bytes go
// into a `.incomplete` file; after a cut or stalled connection the next attempt asks for the rest with
// `Range: bytes=<have>-` (a later run resumes the same way); each chunk restarts the stall timer and
// reports bytes, rate and ETA; the body may never pass the announced size. The caller says how to ask
// (its own redirects, headers and errors) and how to read an answer. Node only (node:fs).

import type { FileProgress } from './progress-text.js';

/** Where an answer's body goes: appended from `start` to a file of `total` bytes. */
export interface BodyPlacement {
  start: number;
  total: number;
}

export interface ResumableGetOptions {
  /** The partial file. */
  partial: string;
  /** The file's size when known beforehand (the hub's HEAD); otherwise each answer says it. */
  expectedSize?: number;
  /** Attempts in this call (default 4). */
  attempts?: number;
  /** An answer or a body that stalls this long is given up and resumed (default 30 s). */
  stallMs?: number;
  /** The name progress reports. */
  file: string;
  onProgress?: (p: FileProgress) => void;
  /** Sends the GET (with `range` when resuming); errors it throws end the download. */
  request(headers: Record<string, string>, signal: AbortSignal): Promise<Response>;
  /**
   * Reads an answer to a request made with `have` bytes on disk: where its body goes, or 'restart' to
   * delete the partial file and try again (the server disowned it, or the file changed). Throws (after
   * nothing was written) for answers that end the download.
   */
  accept(res: Response, have: number, knownTotal: number | null): BodyPlacement | 'restart';
  /** The error for a body longer than announced. */
  tooLong(total: number): Error;
  /** Errors that end the download instead of being retried (the caller's own error class). */
  isFatal(e: unknown): boolean;
}

export interface ResumableGetResult {
  /** The size the answers announced (null when none was accepted). */
  total: number | null;
  /** Bytes fetched in this call. */
  fetched: number;
  /** Whether an answer continued earlier bytes. */
  resumed: boolean;
  /** Why the last attempt failed, when the file is still incomplete. */
  lastError?: Error;
}

/** Runs the attempts; the caller checks the partial file against `total` and verifies it. */
export async function resumableGet(o: ResumableGetOptions): Promise<ResumableGetResult> {
  const { stat, rm, open } = await import('node:fs/promises');
  const attempts = o.attempts ?? 4;
  const stallMs = o.stallMs ?? 30_000;
  const startedAt = Date.now();
  let total: number | null = o.expectedSize ?? null;
  let fetched = 0;
  let resumed = false;
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < attempts; attempt++) {
    let have = (await stat(o.partial).catch(() => null))?.size ?? 0;
    if (o.expectedSize !== undefined && have > o.expectedSize) {
      await rm(o.partial, { force: true });
      have = 0;
    }
    if (total !== null && have === total) break;
    if (attempt > 0) await new Promise((r) => setTimeout(r, 200 * attempt));
    // A connection that delivers nothing for stallMs is aborted: below, a cut one.
    const stall = new AbortController();
    let timer = setTimeout(() => stall.abort(), stallMs);
    const alive = () => {
      clearTimeout(timer);
      timer = setTimeout(() => stall.abort(), stallMs);
    };
    let res: Response;
    try {
      res = await o.request(have > 0 ? { range: `bytes=${have}-` } : {}, stall.signal);
    } catch (e) {
      clearTimeout(timer);
      if (!stall.signal.aborted) throw e;
      lastError = new Error(`no answer within ${stallMs / 1000} s`);
      continue;
    }
    let place: BodyPlacement | 'restart';
    try {
      place = o.accept(res, have, total);
    } catch (e) {
      clearTimeout(timer);
      await res.body?.cancel();
      throw e;
    }
    if (place === 'restart') {
      clearTimeout(timer);
      await res.body?.cancel();
      await rm(o.partial, { force: true });
      total = o.expectedSize ?? null;
      continue;
    }
    const { start, total: size } = place;
    total = size;
    if (start > 0) resumed = true;
    const fh = await open(o.partial, start > 0 ? 'a' : 'w');
    try {
      if (!res.body) throw new Error('empty response body');
      const reader = res.body.getReader();
      let bytes = start;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (bytes + value.byteLength > size) throw o.tooLong(size);
        await fh.write(value);
        alive();
        bytes += value.byteLength;
        fetched += value.byteLength;
        const secs = (Date.now() - startedAt) / 1000;
        const rate = secs > 0 ? fetched / secs : 0;
        o.onProgress?.({ file: o.file, bytes, total: size, rate, etaSeconds: rate > 0 ? (size - bytes) / rate : null });
      }
      lastError = undefined;
    } catch (e) {
      if (o.isFatal(e)) throw e;
      // A cut or stalled connection: keep the bytes, resume on the next attempt.
      lastError = stall.signal.aborted ? new Error(`the connection stalled for ${stallMs / 1000} s`) : (e as Error);
    } finally {
      clearTimeout(timer);
      await fh.close();
    }
  }
  return { total, fetched, resumed, lastError };
}
