// A browser cache for model weight files. Bodies are streamed into storage piece by piece and
// hashed on the way (never one multi-GB ArrayBuffer: Chrome caps those near 2 GiB), committed only
// once size and sha256 match, and read back by synchronous random access (SyncByteReader) so
// SafetensorsFile loads tensors on demand. Browser-safe: no node: imports, globals feature-detected.
//
// Backends, best first:
//  - 'opfs': the origin private file system through sync access handles. Those exist only in a
//    dedicated worker, which is where the page does its loading; reads go to disk, nothing is held.
//  - 'cache-api': the Cache API (window or worker). Its bodies can only be streamed, not read at an
//    offset, so open() streams the whole file into memory (ChunkedBytes): the fallback costs RAM
//    equal to the file size, in bounded chunks.
//  - 'memory': no persistence; files live in this store object for the session.

import { SiloError } from '../engine/errors.js';
import { ChunkedBytes, readStreamInto } from '../formats/chunked-bytes.js';
import type { SyncByteReader } from '../formats/safetensors.js';
import { Sha256 } from './sha256.js';

export type StoreKind = 'opfs' | 'cache-api' | 'memory';

export interface StoredFile {
  reader: SyncByteReader;
  size: number;
  sha256: string;
  /** from the cache, not fetched now */
  cached: boolean;
  close(): void;
}

export interface PutExpect {
  size?: number;
  sha256?: string;
  /** for messages */
  label: string;
}

export interface WeightStore {
  readonly kind: StoreKind;
  /** The verified file stored under key, or null when absent/incomplete. */
  open(key: string): Promise<StoredFile | null>;
  /**
   * Streams body into the store while hashing; commits the entry only when the size and sha256
   * match `expect` (when given). Throws StoreError on mismatch, quota or abort; a failed put leaves
   * no entry behind.
   */
  put(key: string, body: ReadableStream<Uint8Array>, expect: PutExpect, onProgress?: (loaded: number, total: number | null) => void, signal?: AbortSignal): Promise<StoredFile>;
  /** Small metadata blobs (JSON text) under key, e.g. a hub revision -> commit map. */
  getText(key: string): Promise<string | null>;
  putText(key: string, text: string): Promise<void>;
  /** The complete weight files (not the text entries), with their sizes in bytes. */
  list(): Promise<{ key: string; size: number }[]>;
  /** Removes every file and text entry; files this store has open are closed first. */
  clear(): Promise<void>;
}

/** Why a store operation failed, for callers that react differently (retry, ask to clear, ...). */
export type StoreErrorCode = 'mismatch' | 'quota' | 'aborted' | 'key' | 'unavailable' | 'busy' | 'io';

export class StoreError extends SiloError {
  constructor(
    message: string,
    readonly code: StoreErrorCode = 'io',
    options?: { cause?: unknown },
  ) {
    super(message);
    if (options && 'cause' in options) (this as { cause?: unknown }).cause = options.cause;
  }
}

// ---------------------------------------------------------------------------------------------
// Keys

/** Suffixes of the files a store keeps beside an entry; a key ending in one would collide. */
const RESERVED_SUFFIXES = ['.partial', '.meta.json', '.meta', '.text'];

/** The key's segments, or a StoreError: no empty, '.' or '..' segments, no '\' or NUL. */
export function keySegments(key: string): string[] {
  const segs = key.split('/');
  for (const s of segs) {
    if (s === '' || s === '.' || s === '..') throw new StoreError(`invalid weight-store key "${key}": empty, "." and ".." segments are not allowed`, 'key');
    if (/[\\\0]/.test(s)) throw new StoreError(`invalid weight-store key "${key}": "\\" and NUL are not allowed`, 'key');
  }
  const last = segs[segs.length - 1]!;
  const bad = RESERVED_SUFFIXES.find((x) => last.endsWith(x));
  if (bad) throw new StoreError(`invalid weight-store key "${key}": a name ending in "${bad}" is reserved for the store's own files`, 'key');
  return segs;
}

// ---------------------------------------------------------------------------------------------
// Errors

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);

function errorName(e: unknown): string {
  return typeof e === 'object' && e !== null && 'name' in e ? String((e as { name: unknown }).name) : '';
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A StoreError for an error thrown by a storage call on `file`. A QuotaExceededError names the
 * size needed (when known) and the origin's usage and quota from navigator.storage.estimate().
 * `estimate` is injectable for tests.
 */
export async function storeErrorFrom(
  e: unknown,
  file: string,
  neededBytes: number | null,
  estimate: () => Promise<StorageEstimate> = () => navigator.storage.estimate(),
): Promise<StoreError> {
  if (e instanceof StoreError) return e;
  const name = errorName(e);
  if (name === 'QuotaExceededError') {
    let usage = '';
    try {
      const est = await estimate();
      usage = `; this site uses ${mb(est.usage ?? 0)} MB of its ${mb(est.quota ?? 0)} MB storage quota`;
    } catch {
      // estimate() unavailable: say what we know.
    }
    const needed = neededBytes !== null ? ` (${mb(neededBytes)} MB needed${usage})` : usage ? ` (${usage.slice(2)})` : '';
    return new StoreError(`not enough browser storage to store ${file}${needed}: clear the weight cache or pick a local folder instead`, 'quota', { cause: e });
  }
  if (name === 'NoModificationAllowedError') {
    return new StoreError(`${file} is open elsewhere (another tab or worker holds it): ${errorMessage(e)}`, 'busy', { cause: e });
  }
  if (name === 'AbortError') return new StoreError(`storing ${file} was aborted`, 'aborted', { cause: e });
  return new StoreError(`weight store: ${file}: ${errorMessage(e)}`, 'io', { cause: e });
}

// ---------------------------------------------------------------------------------------------
// Streaming with verification (shared by every backend)

interface Verified {
  size: number;
  sha256: string;
}

/**
 * Reads body to its end, handing each piece and its offset to `write`, hashing and counting as it
 * goes; then checks size and sha256 against `expect`. A body longer than expect.size stops early.
 */
async function pump(
  body: ReadableStream<Uint8Array>,
  expect: PutExpect,
  write: (piece: Uint8Array, at: number) => void | Promise<void>,
  onProgress?: (loaded: number, total: number | null) => void,
  signal?: AbortSignal,
): Promise<Verified> {
  const hash = new Sha256();
  const total = expect.size ?? null;
  let loaded = 0;
  try {
    await readStreamInto(
      body,
      async (piece) => {
        if (total !== null && loaded + piece.length > total) {
          throw new StoreError(`${expect.label}: the download is longer than the expected ${total} bytes`, 'mismatch');
        }
        await write(piece, loaded);
        hash.update(piece);
        loaded += piece.length;
        onProgress?.(loaded, total);
      },
      signal,
    );
  } catch (e) {
    if (signal?.aborted) throw new StoreError(`${expect.label}: the download was aborted after ${loaded} bytes`, 'aborted', { cause: e });
    throw e;
  }
  if (total !== null && loaded !== total) {
    throw new StoreError(`${expect.label}: expected ${total} bytes, got ${loaded} (the download ended early)`, 'mismatch');
  }
  const sha256 = hash.hex();
  if (expect.sha256 !== undefined && expect.sha256.toLowerCase() !== sha256) {
    throw new StoreError(`${expect.label}: sha256 mismatch: expected ${expect.sha256.toLowerCase()}, got ${sha256}`, 'mismatch');
  }
  return { size: loaded, sha256 };
}

/** The sidecar that marks an entry complete; written last. */
interface EntryMeta {
  size: number;
  sha256: string;
  complete: true;
  storedAt: string;
}

function parseMeta(text: string): EntryMeta | null {
  try {
    const m = JSON.parse(text) as Partial<EntryMeta>;
    if (m.complete === true && Number.isSafeInteger(m.size) && typeof m.sha256 === 'string') return m as EntryMeta;
  } catch {
    // A torn or foreign file: treat the entry as incomplete.
  }
  return null;
}

const byKey = (a: { key: string }, b: { key: string }) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

function inMemoryFile(bytes: ChunkedBytes, sha256: string, cached: boolean): StoredFile {
  return { reader: bytes, size: bytes.size, sha256, cached, close() {} };
}

// ---------------------------------------------------------------------------------------------
// Memory

class MemoryStore implements WeightStore {
  readonly kind = 'memory' as const;
  private readonly files = new Map<string, { bytes: ChunkedBytes; sha256: string }>();
  private readonly texts = new Map<string, string>();

  constructor(private readonly chunkBytes?: number) {}

  async open(key: string): Promise<StoredFile | null> {
    keySegments(key);
    const f = this.files.get(key);
    return f ? inMemoryFile(f.bytes, f.sha256, true) : null;
  }

  async put(key: string, body: ReadableStream<Uint8Array>, expect: PutExpect, onProgress?: (loaded: number, total: number | null) => void, signal?: AbortSignal): Promise<StoredFile> {
    keySegments(key);
    this.files.delete(key);
    const bytes = new ChunkedBytes(this.chunkBytes);
    const v = await pump(body, expect, (piece) => bytes.append(piece), onProgress, signal);
    this.files.set(key, { bytes, sha256: v.sha256 });
    return inMemoryFile(bytes, v.sha256, false);
  }

  async getText(key: string): Promise<string | null> {
    keySegments(key);
    return this.texts.get(key) ?? null;
  }

  async putText(key: string, text: string): Promise<void> {
    keySegments(key);
    this.texts.set(key, text);
  }

  async list(): Promise<{ key: string; size: number }[]> {
    return [...this.files].map(([key, f]) => ({ key, size: f.bytes.size })).sort(byKey);
  }

  async clear(): Promise<void> {
    this.files.clear();
    this.texts.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// Cache API

const CACHE_NAME = 'silo-weights';
const FILE_ORIGIN = 'https://silo-weights.invalid/';
/** Text entries live under another origin so no file key can collide with them. */
const TEXT_ORIGIN = 'https://silo-weights-text.invalid/';

/** Each segment percent-encoded, so '?', '#' or '%' in a key (e.g. an encoded URL) stay in the path. */
const keyUrl = (origin: string, segs: string[], suffix = '') => origin + segs.map(encodeURIComponent).join('/') + suffix;

class CacheApiStore implements WeightStore {
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

// ---------------------------------------------------------------------------------------------
// OPFS (dedicated worker only)

// The parts of the File System Access API used here. TypeScript's "dom" lib lacks the worker-only
// sync access handle, async iteration of directories and move().
interface SyncAccessHandle {
  read(buffer: Uint8Array, options?: { at?: number }): number;
  write(buffer: Uint8Array, options?: { at?: number }): number;
  truncate(size: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}
interface FileHandle extends FileSystemFileHandle {
  createSyncAccessHandle(options?: { mode?: 'readwrite' | 'read-only' | 'readwrite-unsafe' }): Promise<SyncAccessHandle>;
  move?(newName: string): Promise<void>;
}
interface DirHandle extends FileSystemDirectoryHandle {
  entries(): AsyncIterableIterator<[string, FileSystemHandle]>;
}

const OPFS_ROOT = 'silo-weights';

/** One open data file, shared by every StoredFile of this store that reads it. */
interface OpenHandle {
  handle: SyncAccessHandle;
  refs: number;
  size: number;
  sha256: string;
  closed: boolean;
}

function isNotFound(e: unknown): boolean {
  const n = errorName(e);
  return n === 'NotFoundError' || n === 'TypeMismatchError';
}

class OpfsStore implements WeightStore {
  readonly kind = 'opfs' as const;
  /** Open data files by key: a file admits one sync access handle at a time (per mode), so open()
   * on an open key shares the handle, counting references. */
  private readonly handles = new Map<string, OpenHandle>();
  /** open() calls in flight, so two concurrent opens of one key share one handle. */
  private readonly opening = new Map<string, Promise<OpenHandle | null>>();

  /** Whether handle.move() worked here (null: not tried yet), reported for diagnostics. */
  static moveWorks: boolean | null = null;

  private rootDir(): Promise<DirHandle> {
    return navigator.storage.getDirectory().then((r) => r.getDirectoryHandle(OPFS_ROOT, { create: true })) as Promise<DirHandle>;
  }

  /** The directory holding the key's last segment, or null when absent and not created. */
  private async dirOf(segs: string[], create: boolean): Promise<DirHandle | null> {
    let dir = await this.rootDir();
    for (const s of segs.slice(0, -1)) {
      try {
        dir = (await dir.getDirectoryHandle(s, { create })) as DirHandle;
      } catch (e) {
        if (!create && isNotFound(e)) return null;
        throw e;
      }
    }
    return dir;
  }

  private async fileIn(dir: DirHandle, name: string): Promise<FileHandle | null> {
    try {
      return (await dir.getFileHandle(name)) as FileHandle;
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
  }

  private async readTextFile(dir: DirHandle, name: string): Promise<string | null> {
    const f = await this.fileIn(dir, name);
    return f ? (await f.getFile()).text() : null;
  }

  private async writeTextFile(dir: DirHandle, name: string, text: string): Promise<void> {
    const f = (await dir.getFileHandle(name, { create: true })) as FileHandle;
    const h = await f.createSyncAccessHandle();
    try {
      const data = new TextEncoder().encode(text);
      h.truncate(0);
      writeAll(h, data, 0);
      h.flush();
    } finally {
      h.close();
    }
  }

  private async remove(dir: DirHandle, name: string): Promise<void> {
    try {
      await dir.removeEntry(name);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  private fileFor(key: string, shared: OpenHandle, cached: boolean): StoredFile {
    let closed = false;
    const reader: SyncByteReader = {
      size: shared.size,
      read(offset: number, length: number): Uint8Array {
        if (closed || shared.closed) throw new Error(`${key} is closed`);
        if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > shared.size) {
          throw new Error(`read of ${length} bytes at offset ${offset} is outside the ${shared.size}-byte file ${key}`);
        }
        const out = new Uint8Array(length);
        let done = 0;
        // A sync read may return fewer bytes than asked; loop until full.
        while (done < length) {
          const n = shared.handle.read(out.subarray(done), { at: offset + done });
          if (n <= 0) throw new Error(`${key}: short read, ${done} of ${length} bytes at offset ${offset} (the file changed on disk?)`);
          done += n;
        }
        return out;
      },
    };
    return {
      reader,
      size: shared.size,
      sha256: shared.sha256,
      cached,
      close: () => {
        if (closed) return;
        closed = true;
        if (--shared.refs === 0 && !shared.closed) {
          shared.closed = true;
          shared.handle.close();
          if (this.handles.get(key) === shared) this.handles.delete(key);
        }
      },
    };
  }

  private async openShared(key: string, segs: string[]): Promise<OpenHandle | null> {
    const open = this.handles.get(key);
    if (open) return open;
    const pending = this.opening.get(key);
    if (pending) return pending;
    const p = (async (): Promise<OpenHandle | null> => {
      const dir = await this.dirOf(segs, false);
      if (!dir) return null;
      const name = segs[segs.length - 1]!;
      const meta = parseMeta((await this.readTextFile(dir, `${name}.meta.json`)) ?? '');
      if (!meta) return null;
      const file = await this.fileIn(dir, name);
      if (!file) return null;
      // read-only handles may be open in several workers at once (Chrome 121+); older browsers
      // ignore the option and give an exclusive handle.
      const handle = await file.createSyncAccessHandle({ mode: 'read-only' });
      if (handle.getSize() !== meta.size) {
        handle.close();
        return null;
      }
      const shared: OpenHandle = { handle, refs: 0, size: meta.size, sha256: meta.sha256, closed: false };
      this.handles.set(key, shared);
      return shared;
    })();
    this.opening.set(key, p);
    try {
      return await p;
    } finally {
      this.opening.delete(key);
    }
  }

  async open(key: string, cached = true): Promise<StoredFile | null> {
    const segs = keySegments(key);
    try {
      const shared = await this.openShared(key, segs);
      if (!shared) return null;
      shared.refs++;
      return this.fileFor(key, shared, cached);
    } catch (e) {
      throw await storeErrorFrom(e, key, null);
    }
  }

  async put(key: string, body: ReadableStream<Uint8Array>, expect: PutExpect, onProgress?: (loaded: number, total: number | null) => void, signal?: AbortSignal): Promise<StoredFile> {
    const segs = keySegments(key);
    if (this.handles.has(key) || this.opening.has(key)) {
      await body.cancel().catch(() => {});
      throw new StoreError(`${expect.label}: ${key} is open for reading; close it before replacing it`, 'busy');
    }
    const name = segs[segs.length - 1]!;
    let dir: DirHandle | null = null;
    let tmpName = `${name}.partial`;
    let handle: SyncAccessHandle | null = null;
    /** Set once the old entry is gone: only then is there anything of ours to clean up. */
    let started = false;
    try {
      dir = (await this.dirOf(segs, true))!;
      // The data goes first: if another worker holds it open, removal fails and the old entry
      // stays whole. Either file missing reads as absent, so an interruption between is safe.
      await this.remove(dir, name);
      await this.remove(dir, `${name}.meta.json`);
      started = true;
      let file = (await dir.getFileHandle(tmpName, { create: true })) as FileHandle;
      if (typeof file.move !== 'function') {
        // No rename: write the final name directly; the meta written last marks it complete.
        await this.remove(dir, tmpName);
        tmpName = name;
        file = (await dir.getFileHandle(name, { create: true })) as FileHandle;
      }
      handle = await file.createSyncAccessHandle();
      handle.truncate(0);
      const h = handle;
      const v = await pump(body, expect, (piece, at) => writeAll(h, piece, at), onProgress, signal);
      h.flush();
      h.close();
      handle = null;
      if (tmpName !== name) {
        try {
          await file.move!(name);
          OpfsStore.moveWorks = true;
        } catch (e) {
          OpfsStore.moveWorks = false;
          throw e;
        }
        tmpName = name;
      }
      const meta: EntryMeta = { size: v.size, sha256: v.sha256, complete: true, storedAt: new Date().toISOString() };
      await this.writeTextFile(dir, `${name}.meta.json`, JSON.stringify(meta));
    } catch (e) {
      body.cancel(e).catch(() => {}); // a body never read (busy, quota before the first write) must not hang the download
      try {
        handle?.close();
      } catch {
        // already closed
      }
      if (dir && started) {
        await this.remove(dir, `${name}.meta.json`).catch(() => {});
        await this.remove(dir, tmpName).catch(() => {});
      }
      throw await storeErrorFrom(e, expect.label, expect.size ?? null);
    }
    const stored = await this.open(key, false);
    if (!stored) throw new StoreError(`${expect.label}: ${key} was stored but cannot be opened again`, 'io');
    return stored;
  }

  async getText(key: string): Promise<string | null> {
    const segs = keySegments(key);
    try {
      const dir = await this.dirOf(segs, false);
      return dir ? await this.readTextFile(dir, `${segs[segs.length - 1]}.text`) : null;
    } catch (e) {
      throw await storeErrorFrom(e, key, null);
    }
  }

  async putText(key: string, text: string): Promise<void> {
    const segs = keySegments(key);
    try {
      const dir = (await this.dirOf(segs, true))!;
      await this.writeTextFile(dir, `${segs[segs.length - 1]}.text`, text);
    } catch (e) {
      throw await storeErrorFrom(e, key, text.length);
    }
  }

  async list(): Promise<{ key: string; size: number }[]> {
    const out: { key: string; size: number }[] = [];
    const walk = async (dir: DirHandle, prefix: string): Promise<void> => {
      for await (const [name, h] of dir.entries()) {
        if (h.kind === 'directory') {
          await walk(h as DirHandle, `${prefix}${name}/`);
        } else if (name.endsWith('.meta.json')) {
          const meta = parseMeta(await (await (h as FileHandle).getFile()).text());
          const base = name.slice(0, -'.meta.json'.length);
          const data = await this.fileIn(dir, base);
          if (meta && data && (await data.getFile()).size === meta.size) out.push({ key: prefix + base, size: meta.size });
        }
      }
    };
    try {
      await walk(await this.rootDir(), '');
    } catch (e) {
      throw await storeErrorFrom(e, 'the weight cache', null);
    }
    return out.sort(byKey);
  }

  async clear(): Promise<void> {
    // Open handles would block the removal; the StoredFiles they back read as closed afterwards.
    for (const h of this.handles.values()) {
      h.closed = true;
      h.handle.close();
    }
    this.handles.clear();
    try {
      const root = await navigator.storage.getDirectory();
      await root.removeEntry(OPFS_ROOT, { recursive: true });
    } catch (e) {
      if (!isNotFound(e)) throw await storeErrorFrom(e, 'the weight cache', null);
    }
  }
}

/** Writes all of `data` at `at` (a sync write may write fewer bytes than given). */
function writeAll(h: SyncAccessHandle, data: Uint8Array, at: number): void {
  let done = 0;
  while (done < data.length) {
    const n = h.write(data.subarray(done), { at: at + done });
    if (n <= 0) throw new StoreError(`short write at offset ${at + done}`, 'io');
    done += n;
  }
}

// ---------------------------------------------------------------------------------------------
// Choosing a backend

/** Why `kind` cannot be used in this context, or null when it can. */
export function storeUnavailable(kind: StoreKind): string | null {
  const g = globalThis as { navigator?: Navigator; FileSystemFileHandle?: { prototype: object }; caches?: unknown };
  if (kind === 'opfs') {
    if (typeof g.navigator?.storage?.getDirectory !== 'function') return 'navigator.storage.getDirectory() is missing (OPFS needs a secure context in a recent browser)';
    if (typeof (g.FileSystemFileHandle?.prototype as { createSyncAccessHandle?: unknown } | undefined)?.createSyncAccessHandle !== 'function') {
      return 'FileSystemFileHandle.createSyncAccessHandle() is missing: OPFS sync access handles exist only in a dedicated worker';
    }
    return null;
  }
  if (kind === 'cache-api') return g.caches === undefined ? 'the Cache API (caches) is missing (it needs a secure context: https or localhost)' : null;
  return null;
}

let persistAsked = false;

export interface WeightStoreOptions {
  /** Chunk size of the in-memory copies (cache-api, memory); default 64 MiB. */
  chunkBytes?: number;
}

/** The best available store ('auto': opfs, then cache-api, then memory), or the one asked for. */
export async function openWeightStore(prefer: StoreKind | 'auto' = 'auto', options: WeightStoreOptions = {}): Promise<WeightStore> {
  let kind: StoreKind;
  if (prefer === 'auto') {
    kind = storeUnavailable('opfs') === null ? 'opfs' : storeUnavailable('cache-api') === null ? 'cache-api' : 'memory';
  } else {
    const why = storeUnavailable(prefer);
    if (why !== null) throw new StoreError(`the '${prefer}' weight store is unavailable here: ${why}`, 'unavailable');
    kind = prefer;
  }
  if (kind !== 'memory' && !persistAsked) {
    persistAsked = true;
    // Ask once that the browser not evict multi-GB weights under storage pressure; the answer
    // does not change what we do (persist() is window-only, hence the feature test).
    const storage = navigator.storage as StorageManager & { persist?: () => Promise<boolean> };
    storage.persist?.().catch(() => {});
  }
  if (kind === 'opfs') return new OpfsStore();
  if (kind === 'cache-api') return new CacheApiStore(options.chunkBytes);
  return new MemoryStore(options.chunkBytes);
}

/** Whether OPFS renames (FileSystemFileHandle.move) worked in the last put, null if not tried. */
export function opfsMoveWorked(): boolean | null {
  return OpfsStore.moveWorks;
}
