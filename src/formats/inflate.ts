// The one inflate helper that zip entries and PNG image data share (browser-safe: the web-standard
// DecompressionStream, in browsers and Node >= 18). The caller says exactly how many bytes the stream
// must produce; more is refused as soon as the excess arrives (never buffered), fewer is an error, and
// the output grows with what actually arrives, so a header that lies about its size cannot make us
// allocate what it claims.

import { SiloError } from '../engine/errors.js';

/** 'deflate' is a zlib stream (PNG), 'deflate-raw' a bare deflate stream (zip), 'gzip' a .gz file. */
export type InflateFormat = 'deflate' | 'deflate-raw' | 'gzip';

/**
 * Why inflating failed: 'overflow' (more output than expected), 'short' (a complete stream with too
 * little output), 'truncated' (the stream ends mid-way), 'corrupt' (invalid data). Callers usually
 * rethrow it as their own error, naming the file.
 */
export class InflateError extends SiloError {
  constructor(
    readonly reason: 'overflow' | 'short' | 'truncated' | 'corrupt',
    /** Bytes produced before the failure. */
    readonly produced: number,
    readonly expected: number,
    detail: string,
  ) {
    super(detail);
  }
}

/** The most a deflate stream can expand: 258 bytes per 2-bit code plus block overhead, about 1032:1. */
export const DEFLATE_MAX_RATIO = 1032;

/** Whether `compressed` bytes of deflate data could possibly inflate to `uncompressed` bytes. */
export function plausibleInflatedSize(compressed: number, uncompressed: number): boolean {
  return uncompressed <= compressed * DEFLATE_MAX_RATIO + 64;
}

/** First allocation: the caller's expected size if small, else what the input could fill cheaply. */
const INITIAL_CAPACITY = 1 << 20;

/** Inflates `input` (one buffer, or pieces to join) into exactly `expected` bytes. */
export async function inflateExact(input: Uint8Array | readonly Uint8Array[], expected: number, format: InflateFormat): Promise<Uint8Array> {
  if (!Number.isSafeInteger(expected) || expected < 0) throw new InflateError('corrupt', 0, expected, `expected size ${expected} is not a byte count`);
  // One write of the joined data: one write per piece costs a round trip each.
  const data = input instanceof Uint8Array ? input : join(input);
  const ds = new DecompressionStream(format);
  const writer = ds.writable.getWriter();
  // Errors surface on the reading side; keep the writer's promises from going unhandled.
  if (data.byteLength > 0) writer.write(data as Uint8Array<ArrayBuffer>).catch(() => {});
  writer.close().catch(() => {});
  const reader = ds.readable.getReader();
  let out = new Uint8Array(Math.min(expected, Math.max(INITIAL_CAPACITY, data.byteLength * 4)));
  let pos = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (value.byteLength > expected - pos) {
        await reader.cancel().catch(() => {});
        throw new InflateError('overflow', pos, expected, `inflates to more than the expected ${expected} bytes`);
      }
      if (pos + value.byteLength > out.byteLength) {
        const grown = new Uint8Array(Math.min(expected, Math.max(out.byteLength * 2, pos + value.byteLength)));
        grown.set(out.subarray(0, pos));
        out = grown;
      }
      out.set(value, pos);
      pos += value.byteLength;
    }
  } catch (e) {
    if (e instanceof InflateError) throw e;
    const msg = (e as Error)?.message ?? String(e);
    if (/end of|truncat/i.test(msg)) throw new InflateError('truncated', pos, expected, `the compressed stream ends early (${pos} of ${expected} bytes inflated)`);
    throw new InflateError('corrupt', pos, expected, `corrupt compressed data: "${msg}" (after ${pos} of ${expected} bytes)`);
  }
  if (pos !== expected) throw new InflateError('short', pos, expected, `inflates to ${pos} bytes, ${expected} expected`);
  return out.byteLength === expected ? out : out.subarray(0, expected);
}

/**
 * A single-member .gz file, sized by its trailer (ISIZE: the length mod 2^32, so files over 4 GiB are
 * refused) and checked for plausibility before anything is allocated.
 */
export async function gunzipExact(bytes: Uint8Array): Promise<Uint8Array> {
  if (bytes.byteLength < 18 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) throw new InflateError('corrupt', 0, 0, `not a gzip file (${bytes.byteLength} bytes, no 1f 8b signature)`);
  const size = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(bytes.byteLength - 4, true);
  if (!plausibleInflatedSize(bytes.byteLength, size)) {
    throw new InflateError('corrupt', 0, size, `gzip trailer declares ${size} bytes from ${bytes.byteLength} compressed: more than deflate can expand`);
  }
  return inflateExact(bytes, size, 'gzip');
}

function join(pieces: readonly Uint8Array[]): Uint8Array {
  if (pieces.length === 1) return pieces[0]!;
  const out = new Uint8Array(pieces.reduce((n, c) => n + c.byteLength, 0));
  let pos = 0;
  for (const c of pieces) {
    out.set(c, pos);
    pos += c.byteLength;
  }
  return out;
}
