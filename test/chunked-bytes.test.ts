import { describe, it, expect } from 'vitest';
import { ChunkedBytes, readStreamInto } from '../src/formats/chunked-bytes.js';

function bytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) out[i] = x = (x * 31 + 17) & 0xff;
  return out;
}

function streamOf(data: Uint8Array, pieces: number[]): ReadableStream<Uint8Array> {
  let pos = 0;
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (pos >= data.length) return c.close();
      const len = pieces[i++ % pieces.length]!;
      c.enqueue(data.slice(pos, pos + len));
      pos += len;
    },
  });
}

describe('ChunkedBytes', () => {
  it('reads every range across 7-byte chunk boundaries like the concatenated array', () => {
    const src = bytes(100);
    const cb = new ChunkedBytes(7);
    // Odd append sizes: empty, smaller, equal and larger than a chunk.
    const sizes = [0, 3, 7, 1, 15, 2, 0, 30, 42];
    let pos = 0;
    for (const s of sizes) {
      cb.append(src.subarray(pos, pos + s));
      pos += s;
    }
    expect(pos).toBe(100);
    expect(cb.size).toBe(100);
    for (let off = 0; off <= 100; off++) {
      for (let len = 0; off + len <= 100; len += 1 + (len >> 2)) {
        const got = cb.read(off, len);
        expect(got.length).toBe(len);
        expect(Array.from(got)).toEqual(Array.from(src.subarray(off, off + len)));
      }
    }
  });

  it('returns a fresh array and copies appended bytes', () => {
    const cb = new ChunkedBytes(4);
    const buf = new Uint8Array([1, 2, 3, 4, 5]);
    cb.append(buf);
    buf.fill(9); // the caller reusing its buffer must not change what was stored
    const a = cb.read(1, 3);
    a.fill(0);
    expect(Array.from(cb.read(0, 5))).toEqual([1, 2, 3, 4, 5]);
  });

  it('grows a small first chunk into full chunks', () => {
    const src = bytes(200_000, 3);
    const cb = new ChunkedBytes(150_000);
    cb.append(src.subarray(0, 10)); // first chunk sized for a small file
    cb.append(src.subarray(10));
    expect(Array.from(cb.read(149_990, 20))).toEqual(Array.from(src.subarray(149_990, 150_010)));
    expect(Array.from(cb.read(0, 200_000).subarray(0, 50))).toEqual(Array.from(src.subarray(0, 50)));
  });

  it('names offset, length and size on out-of-range reads', () => {
    const cb = new ChunkedBytes(7);
    cb.append(bytes(20));
    expect(() => cb.read(15, 6)).toThrow(/6 bytes at offset 15 .*20-byte/);
    expect(() => cb.read(-1, 1)).toThrow(/offset -1/);
    expect(() => cb.read(0, 1.5)).toThrow(/1.5 bytes/);
    expect(cb.read(20, 0).length).toBe(0);
  });
});

describe('readStreamInto', () => {
  it('feeds every piece in order, awaiting an async sink', async () => {
    const src = bytes(1000, 5);
    const cb = new ChunkedBytes(7);
    await readStreamInto(streamOf(src, [1, 13, 64, 5]), async (c) => {
      await new Promise((r) => setTimeout(r, 0));
      cb.append(c);
    });
    expect(Array.from(cb.read(0, 1000))).toEqual(Array.from(src));
  });

  it('rejects and cancels the stream on abort, also while a read is pending', async () => {
    let cancelled: unknown = null;
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new Uint8Array(3)); // then never more: the next read hangs
      },
      cancel(reason) {
        cancelled = reason;
      },
    });
    const ac = new AbortController();
    let seen = 0;
    const p = readStreamInto(stream, (c) => {
      seen += c.length;
      setTimeout(() => ac.abort(new Error('user stop')), 5);
    }, ac.signal);
    await expect(p).rejects.toThrow(/user stop/);
    expect(seen).toBe(3);
    expect(String(cancelled)).toMatch(/user stop/);
  });

  it('propagates a sink error and cancels the stream', async () => {
    let cancelled = false;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(new Uint8Array(2));
      },
      cancel() {
        cancelled = true;
      },
    });
    await expect(readStreamInto(stream, () => { throw new Error('disk full'); })).rejects.toThrow(/disk full/);
    expect(cancelled).toBe(true);
  });
});
