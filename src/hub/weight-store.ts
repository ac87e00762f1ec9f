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

import { StoreError, type StoreKind, type WeightStore } from './weight-store-base.js';
import { MemoryStore } from './weight-store-memory.js';
import { CacheApiStore } from './weight-store-cache-api.js';
import { OpfsStore } from './weight-store-opfs.js';

export { StoreError, keySegments, storeErrorFrom, type StoreKind, type StoredFile, type PutExpect, type WeightStore, type StoreErrorCode } from './weight-store-base.js';

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
