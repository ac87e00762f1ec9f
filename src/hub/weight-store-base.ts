// What the weight store's backends share: the public types, StoreError, keys, the translation of
// storage errors (quota included) and the verified streaming of a body. Browser-safe.

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

export function errorName(e: unknown): string {
  return typeof e === 'object' && e !== null && 'name' in e ? String((e as { name: unknown }).name) : '';
}

export function errorMessage(e: unknown): string {
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

export interface Verified {
  size: number;
  sha256: string;
}

/**
 * Reads body to its end, handing each piece and its offset to `write`, hashing and counting as it
 * goes; then checks size and sha256 against `expect`. A body longer than expect.size stops early.
 */
export async function pump(
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
export interface EntryMeta {
  size: number;
  sha256: string;
  complete: true;
  storedAt: string;
}

export function parseMeta(text: string): EntryMeta | null {
  try {
    const m = JSON.parse(text) as Partial<EntryMeta>;
    if (m.complete === true && Number.isSafeInteger(m.size) && typeof m.sha256 === 'string') return m as EntryMeta;
  } catch {
    // A torn or foreign file: treat the entry as incomplete.
  }
  return null;
}

export const byKey = (a: { key: string }, b: { key: string }) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

export function inMemoryFile(bytes: ChunkedBytes, sha256: string, cached: boolean): StoredFile {
  return { reader: bytes, size: bytes.size, sha256, cached, close() {} };
}
