// The 'cache-api' weight store: the Cache API (window or worker). Its bodies can only be streamed,
// not read at an offset, so open() streams the whole file into memory in bounded chunks
// (ChunkedBytes): this fallback costs RAM equal to the file size. Browser-safe.

import { ChunkedBytes, readStreamInto } from '../formats/chunked-bytes.js';
import { type EntryMeta, type PutExpect, StoreError, type StoredFile, type Verified, type WeightStore, byKey, inMemoryFile, keySegments, parseMeta, pump, storeErrorFrom } from './weight-store-base.js';

const CACHE_NAME = 'silo-weights';
const FILE_ORIGIN = 'https://silo-weights.invalid/';
/** Text entries live under another origin so no file key can collide with them. */
const TEXT_ORIGIN = 'https://silo-weights-text.invalid/';

/** Each segment percent-encoded, so '?', '#' or '%' in a key (e.g. an encoded URL) stay in the path. */
const keyUrl = (origin: string, segs: string[], suffix = '') => origin + segs.map(encodeURIComponent).join('/') + suffix;

export class CacheApiStore implements WeightStore {
  readonly kind = 'cache-api' as const;

  constructor(private readonly chunkBytes?: number) {}

  private cache(): Promise<Cache> {
    return caches.open(CACHE_NAME);
  }

  async open(key: string): Promise<StoredFile | null> {
    const segs = keySegments(key);
    try {
      const cache = await this.cache();
      const metaRes = await cache.match(keyUrl(FILE_ORIGIN, segs, '.meta'));
      const meta = metaRes ? parseMeta(await metaRes.text()) : null;
      if (!meta) return null;
      const res = await cache.match(keyUrl(FILE_ORIGIN, segs));
      if (!res?.body) return null;
      // The Cache API has no random access: the whole body comes into memory, in bounded chunks.
      const bytes = new ChunkedBytes(this.chunkBytes);
      await readStreamInto(res.body, (piece) => {
        if (bytes.size + piece.length > meta.size) throw new StoreError(`${key}: the cached body is longer than its recorded ${meta.size} bytes`, 'io');
        bytes.append(piece);
      });
      if (bytes.size !== meta.size) return null;
      return inMemoryFile(bytes, meta.sha256, true);
    } catch (e) {
      if (e instanceof StoreError && e.code === 'io') return null; // a damaged entry counts as absent
      throw await storeErrorFrom(e, key, null);
    }
  }

  async put(key: string, body: ReadableStream<Uint8Array>, expect: PutExpect, onProgress?: (loaded: number, total: number | null) => void, signal?: AbortSignal): Promise<StoredFile> {
    const segs = keySegments(key);
    const fileUrl = keyUrl(FILE_ORIGIN, segs);
    const metaUrl = keyUrl(FILE_ORIGIN, segs, '.meta');
    let cache: Cache;
    try {
      cache = await this.cache();
      // The meta goes first, so an interrupted replacement reads as absent, not as the old file.
      await cache.delete(metaUrl);
      await cache.delete(fileUrl);
    } catch (e) {
      body.cancel(e).catch(() => {});
      throw await storeErrorFrom(e, expect.label, expect.size ?? null);
    }
    // Our own branch to cache.put rather than body.tee(): on abort or mismatch we can error it, so
    // cache.put stops and stores nothing (a tee branch would keep downloading the whole body).
    // Back-pressure: the pump waits while the cache branch has a few pieces queued.
    let ctrl!: ReadableStreamDefaultController<Uint8Array>;
    let wake: (() => void) | null = null;
    const toCache = new ReadableStream<Uint8Array>(
      {
        start(c) {
          ctrl = c;
        },
        pull() {
          wake?.();
          wake = null;
        },
      },
      new CountQueuingStrategy({ highWaterMark: 4 }),
    );
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (expect.size !== undefined) headers['content-length'] = String(expect.size);
    if (expect.sha256 !== undefined) headers['x-silo-sha256'] = expect.sha256.toLowerCase();
    const stored = cache.put(fileUrl, new Response(toCache, { headers }));
    stored.catch(() => {}); // awaited below; a failure while the pump still runs must not go unhandled
    const bytes = new ChunkedBytes(this.chunkBytes);
    let v: Verified;
    try {
      v = await pump(
        body,
        expect,
        async (piece) => {
          bytes.append(piece);
          ctrl.enqueue(piece);
          while ((ctrl.desiredSize ?? 1) <= 0) {
            await Promise.race([new Promise<void>((r) => (wake = r)), stored]);
          }
        },
        onProgress,
        signal,
      );
      ctrl.close();
      await stored;
      const meta: EntryMeta = { size: v.size, sha256: v.sha256, complete: true, storedAt: new Date().toISOString() };
      await cache.put(metaUrl, new Response(JSON.stringify(meta), { headers: { 'content-type': 'application/json' } }));
    } catch (e) {
      try {
        ctrl.error(e);
      } catch {
        // already closed
      }
      await stored.catch(() => {});
      await cache.delete(fileUrl).catch(() => {});
      await cache.delete(metaUrl).catch(() => {});
      throw await storeErrorFrom(e, expect.label, expect.size ?? null);
    }
    return inMemoryFile(bytes, v.sha256, false);
  }

  async getText(key: string): Promise<string | null> {
    const segs = keySegments(key);
    try {
      const res = await (await this.cache()).match(keyUrl(TEXT_ORIGIN, segs));
      return res ? await res.text() : null;
    } catch (e) {
      throw await storeErrorFrom(e, key, null);
    }
  }

  async putText(key: string, text: string): Promise<void> {
    const segs = keySegments(key);
    try {
      await (await this.cache()).put(keyUrl(TEXT_ORIGIN, segs), new Response(text, { headers: { 'content-type': 'application/json' } }));
    } catch (e) {
      throw await storeErrorFrom(e, key, text.length);
    }
  }

  async list(): Promise<{ key: string; size: number }[]> {
    try {
      const cache = await this.cache();
      const out: { key: string; size: number }[] = [];
      for (const req of await cache.keys()) {
        if (!req.url.startsWith(FILE_ORIGIN) || !req.url.endsWith('.meta')) continue;
        const res = await cache.match(req);
        const meta = res ? parseMeta(await res.text()) : null;
        if (!meta) continue;
        const path = req.url.slice(FILE_ORIGIN.length, -'.meta'.length);
        out.push({ key: path.split('/').map(decodeURIComponent).join('/'), size: meta.size });
      }
      return out.sort(byKey);
    } catch (e) {
      throw await storeErrorFrom(e, 'the weight cache', null);
    }
  }

  async clear(): Promise<void> {
    try {
      await caches.delete(CACHE_NAME);
    } catch (e) {
      throw await storeErrorFrom(e, 'the weight cache', null);
    }
  }
}
