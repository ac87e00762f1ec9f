// The inner loop of a resumable download, shared by the hub client and the release client: a response
// body appended to the partial file chunk by chunk, never past the announced size, keeping the stall
// timer alive and reporting bytes, rate and ETA. Node only (a node:fs FileHandle).

import type { FileProgress } from './progress-text.js';

export interface AppendBodyOptions {
  /** Bytes already in the file (the Range start) and the file's whole size. */
  start: number;
  total: number;
  /** The name progress reports. */
  file: string;
  /** Bytes this download has fetched over all its responses (updated per chunk, so a cut keeps the count), and when it started. */
  counter: { fetched: number };
  startedAt: number;
  /** Called on every chunk (restarts the stall timer). */
  alive(): void;
  onProgress?: (p: FileProgress) => void;
  /** The error for a body longer than announced. */
  tooLong(): Error;
}

/** Appends `body` to `fh` until it ends; a cut connection rejects, with every byte read so far written. */
export async function appendBody(body: ReadableStream<Uint8Array>, fh: import('node:fs/promises').FileHandle, o: AppendBodyOptions): Promise<void> {
  const reader = body.getReader();
  let bytes = o.start;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    if (bytes + value.byteLength > o.total) throw o.tooLong();
    await fh.write(value);
    o.alive();
    bytes += value.byteLength;
    o.counter.fetched += value.byteLength;
    const secs = (Date.now() - o.startedAt) / 1000;
    const rate = secs > 0 ? o.counter.fetched / secs : 0;
    o.onProgress?.({ file: o.file, bytes, total: o.total, rate, etaSeconds: rate > 0 ? (o.total - bytes) / rate : null });
  }
}
