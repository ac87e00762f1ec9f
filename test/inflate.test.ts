// The shared inflate helper (src/formats/inflate.ts) that zip entries and PNG image data go through:
// exact output size, refusal of output beyond it as soon as it arrives, no allocation of a size that
// only a header claims, and one error class whose reason callers map to their own wording.
import { deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { SiloError } from '../src/engine/errors.js';
import { DEFLATE_MAX_RATIO, gunzipExact, InflateError, inflateExact, plausibleInflatedSize } from '../src/formats/inflate.js';

const data = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 2654435761) >>> 27);

async function failure(p: Promise<unknown>): Promise<InflateError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(InflateError);
  expect(e).toBeInstanceOf(SiloError);
  return e as InflateError;
}

describe('inflateExact', () => {
  it('inflates zlib and raw deflate streams, whole or in pieces, to the exact bytes', async () => {
    const z = new Uint8Array(deflateSync(data));
    const r = new Uint8Array(deflateRawSync(data));
    expect(Buffer.compare(await inflateExact(z, data.length, 'deflate'), data)).toBe(0);
    expect(Buffer.compare(await inflateExact(r, data.length, 'deflate-raw'), data)).toBe(0);
    const pieces = [z.subarray(0, 7), z.subarray(7, 1000), z.subarray(1000)];
    expect(Buffer.compare(await inflateExact(pieces, data.length, 'deflate'), data)).toBe(0);
    expect((await inflateExact(new Uint8Array(deflateRawSync(new Uint8Array(0))), 0, 'deflate-raw')).length).toBe(0);
  });

  it('refuses a bomb at the expected size without inflating the rest', async () => {
    const bomb = new Uint8Array(deflateRawSync(new Uint8Array(64 << 20), { level: 9 })); // 64 MiB of zeros
    const t0 = performance.now();
    const e = await failure(inflateExact(bomb, 1000, 'deflate-raw'));
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(e.reason).toBe('overflow');
    expect(e.produced).toBeLessThanOrEqual(1000);
    expect(e.message).toMatch(/inflates to more than the expected 1000 bytes/);
  });

  it('a claimed size far beyond the data is "short", never an allocation of the claim', async () => {
    const e = await failure(inflateExact(new Uint8Array(deflateRawSync(data)), 2 ** 40, 'deflate-raw'));
    expect(e.reason).toBe('short');
    expect(e.produced).toBe(data.length);
    expect(e.message).toMatch(/inflates to 300000 bytes, 1099511627776 expected/);
  });

  it('truncated and corrupt streams, and sizes that are not byte counts', async () => {
    const z = new Uint8Array(deflateSync(data));
    expect((await failure(inflateExact(z.subarray(0, z.length >> 1), data.length, 'deflate'))).reason).toBe('truncated');
    const bad = Uint8Array.from([0x78, 0x9c, 0xff, 0xff, 0xff, 0xff, 0x00, 0x12, 0x34]);
    const c = await failure(inflateExact(bad, 10, 'deflate'));
    expect(c.reason).toBe('corrupt');
    expect(c.message).toMatch(/corrupt compressed data/);
    expect((await failure(inflateExact(z, -1, 'deflate'))).message).toMatch(/expected size -1 is not a byte count/);
    expect((await failure(inflateExact(z, 0.5, 'deflate'))).message).toMatch(/not a byte count/);
  });

  it('plausibleInflatedSize bounds what deflate can expand to', () => {
    const zeros = new Uint8Array(1 << 24);
    const packed = deflateRawSync(zeros, { level: 9 }).length;
    expect(zeros.length / packed).toBeLessThan(DEFLATE_MAX_RATIO);
    expect(plausibleInflatedSize(packed, zeros.length)).toBe(true);
    expect(plausibleInflatedSize(1000, 2 ** 40)).toBe(false);
  });

  it('gunzipExact sizes a .gz by its trailer and refuses lies and junk', async () => {
    const gz = new Uint8Array(gzipSync(data));
    expect(Buffer.compare(await gunzipExact(gz), data)).toBe(0);
    const liar = gz.slice();
    new DataView(liar.buffer).setUint32(liar.length - 4, 0xfffffff0, true);
    expect((await failure(gunzipExact(liar))).message).toMatch(/gzip trailer declares 4294967280 bytes from \d+ compressed/);
    const short = gz.slice();
    new DataView(short.buffer).setUint32(short.length - 4, 1000, true);
    expect((await failure(gunzipExact(short))).reason).toBe('overflow');
    expect((await failure(gunzipExact(new TextEncoder().encode('not gzip at all, really')))).message).toMatch(/not a gzip file/);
  });
});
