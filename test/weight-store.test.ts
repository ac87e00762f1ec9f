// The weight store's browser-independent parts in Node: the memory backend (the same pump that
// verifies OPFS and Cache API puts), key rules, backend choice and the quota message. The OPFS and
// Cache API backends run in test/browser/weight-store.test.ts.
import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { openWeightStore, storeErrorFrom, keySegments, StoreError } from '../src/hub/weight-store.js';
import { SafetensorsFile, serializeSafetensors, f32Entry } from '../src/formats/safetensors.js';

const data = Uint8Array.from({ length: 300_001 }, (_, i) => (i * 7 + (i >> 9)) & 0xff);
const hash = createHash('sha256').update(data).digest('hex');

function streamOf(bytes: Uint8Array, piece = 4093): ReadableStream<Uint8Array> {
  let pos = 0;
  return new ReadableStream({
    pull(c) {
      if (pos >= bytes.length) return c.close();
      c.enqueue(bytes.slice(pos, (pos += piece)));
    },
  });
}

describe('weight store (memory backend, Node)', () => {
  it('auto picks memory where there is neither OPFS nor the Cache API; explicit unavailable kinds throw', async () => {
    expect((await openWeightStore('auto')).kind).toBe('memory');
    await expect(openWeightStore('cache-api')).rejects.toThrow(StoreError);
    await expect(openWeightStore('opfs')).rejects.toThrow(/unavailable/);
  });

  it('stores, verifies and reads back across 64 KiB chunks', async () => {
    const store = await openWeightStore('memory', { chunkBytes: 65536 });
    const seen: number[] = [];
    const f = await store.put('a/b.bin', streamOf(data), { size: data.length, sha256: hash, label: 'b' }, (l, t) => {
      expect(t).toBe(data.length);
      seen.push(l);
    });
    expect([f.size, f.sha256, f.cached]).toEqual([data.length, hash, false]);
    expect(seen.at(-1)).toBe(data.length);
    expect(Buffer.from(f.reader.read(65530, 20))).toEqual(Buffer.from(data.subarray(65530, 65550)));
    const again = await store.open('a/b.bin');
    expect(again?.cached).toBe(true);
    expect(await store.list()).toEqual([{ key: 'a/b.bin', size: data.length }]);
    await store.clear();
    expect(await store.open('a/b.bin')).toBeNull();
  });

  it('rejects a wrong sha256 naming both, a short body, and leaves nothing', async () => {
    const store = await openWeightStore('memory');
    const wrong = '0'.repeat(64);
    const e = await store.put('k', streamOf(data), { sha256: wrong, label: 'unet' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(StoreError);
    expect((e as StoreError).message).toContain(wrong);
    expect((e as StoreError).message).toContain(hash);
    expect((e as StoreError).message).toContain('unet');
    await expect(store.put('k', streamOf(data), { size: data.length + 1, label: 'unet' })).rejects.toThrow(/expected 300002 bytes, got 300001/);
    expect(await store.open('k')).toBeNull();
    expect(await store.list()).toEqual([]);
  });

  it('rejects on abort', async () => {
    const store = await openWeightStore('memory');
    const ac = new AbortController();
    const p = store.put('k', streamOf(data, 1000), { label: 'vae' }, (l) => l >= 50_000 && ac.abort(), ac.signal);
    await expect(p).rejects.toMatchObject({ code: 'aborted' });
    expect(await store.open('k')).toBeNull();
  });

  it('serves SafetensorsFile.open', async () => {
    const store = await openWeightStore('memory', { chunkBytes: 16 });
    const bytes = serializeSafetensors({ w: f32Entry([1, -2, 3.5, 4], [2, 2]) });
    const f = await store.put('m.safetensors', streamOf(bytes, 5), { size: bytes.length, label: 'm' });
    expect(Array.from(SafetensorsFile.open(f.reader, 'm').getF32('w'))).toEqual([1, -2, 3.5, 4]);
  });

  it('rejects unsafe keys', () => {
    expect(keySegments('hub/org--name/abc/unet/x.safetensors')).toHaveLength(5);
    expect(keySegments('url/https%3A%2F%2Fe.org%2Fa%3Fb')).toHaveLength(2);
    for (const k of ['', 'a//b', 'a/..', './a', 'a\\b', 'x.partial', 'x.meta.json']) expect(() => keySegments(k), k).toThrow(StoreError);
  });

  it('turns a QuotaExceededError into advice naming the file and the numbers', async () => {
    const e = await storeErrorFrom(new DOMException('full', 'QuotaExceededError'), 'unet.safetensors', 1_720_000_000, async () => ({ usage: 9e9, quota: 10e9 }));
    expect(e.code).toBe('quota');
    expect(e.message).toBe('not enough browser storage to store unet.safetensors (1720.0 MB needed; this site uses 9000.0 MB of its 10000.0 MB storage quota): clear the weight cache or pick a local folder instead');
    // Without estimate() (Node has no navigator.storage) it still says what it knows.
    const f = await storeErrorFrom(new DOMException('full', 'QuotaExceededError'), 'vae', 5e6);
    expect(f.message).toMatch(/^not enough browser storage to store vae \(5\.0 MB needed\): clear/);
  });
});
