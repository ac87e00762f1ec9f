// A file held in memory as a list of bounded chunks, read by SafetensorsFile through SyncByteReader.
// One multi-GB ArrayBuffer is not an option in browsers (Chrome caps them near 2 GiB, and SD-1.5's
// fp16 UNet alone is ~1.7 GB), and growing one by doubling would need twice the memory anyway.

import type { SyncByteReader } from './safetensors.js';

export const DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024;

export class ChunkedBytes implements SyncByteReader {
  private readonly chunks: Uint8Array[] = [];
  /** Bytes used in the last chunk. */
  private fill = 0;
  private total = 0;

  constructor(readonly chunkBytes = DEFAULT_CHUNK_BYTES) {
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) throw new Error(`ChunkedBytes: chunkBytes must be a positive integer, got ${chunkBytes}`);
  }

  get size(): number {
    return this.total;
  }

  /** Copies `bytes` in (the caller may reuse its buffer), opening a new chunk when the last is full. */
  append(bytes: Uint8Array): void {
    let pos = 0;
    while (pos < bytes.length) {
      let last = this.chunks[this.chunks.length - 1];
      if (last === undefined || this.fill === this.chunkBytes) {
        // Small files get a chunk of their own size, not a whole chunkBytes, when the first
        // append already holds everything; later appends fill chunkBytes-sized chunks.
        const want = this.chunks.length === 0 ? Math.min(this.chunkBytes, Math.max(bytes.length, 1 << 16)) : this.chunkBytes;
        last = new Uint8Array(want);
        this.chunks.push(last);
        this.fill = 0;
      } else if (this.fill === last.length) {
        // A first chunk sized for a small file that keeps growing: widen it to a full chunk.
        const wider = new Uint8Array(this.chunkBytes);
        wider.set(last);
        this.chunks[this.chunks.length - 1] = last = wider;
      }
      const take = Math.min(last.length - this.fill, bytes.length - pos);
      last.set(bytes.subarray(pos, pos + take), this.fill);
      this.fill += take;
      pos += take;
      this.total += take;
    }
  }

  read(offset: number, length: number): Uint8Array {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.total) {
      throw new Error(`read of ${length} bytes at offset ${offset} is outside the ${this.total}-byte file`);
    }
    const out = new Uint8Array(length);
    let done = 0;
    let chunk = Math.floor(offset / this.chunkBytes);
    let at = offset - chunk * this.chunkBytes;
    while (done < length) {
      const c = this.chunks[chunk]!;
      const take = Math.min(c.length - at, length - done);
      out.set(c.subarray(at, at + take), done);
      done += take;
      chunk++;
      at = 0;
    }
    return out;
  }
}

/**
 * Feeds every chunk of `stream` to `sink` in order (awaiting it, so a slow sink applies
 * back-pressure). On abort the stream is cancelled and the signal's reason (or an AbortError) is
 * thrown; if the sink throws, the stream is cancelled too and the sink's error propagates.
 */
export async function readStreamInto(stream: ReadableStream<Uint8Array>, sink: (chunk: Uint8Array) => void | Promise<void>, signal?: AbortSignal): Promise<void> {
  const reader = stream.getReader();
  const abortError = () => (signal?.reason instanceof Error ? signal.reason : new DOMException('the read was aborted', 'AbortError'));
  // A pending read() only settles when the network delivers; cancelling on abort settles it now.
  const onAbort = () => {
    reader.cancel(abortError()).catch(() => {});
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      if (signal?.aborted) throw abortError();
      const { done, value } = await reader.read();
      if (signal?.aborted) throw abortError();
      if (done) return;
      await sink(value);
    }
  } catch (e) {
    reader.cancel(e).catch(() => {});
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    reader.releaseLock();
  }
}
