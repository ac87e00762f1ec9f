// The 'opfs' weight store: the origin private file system through sync access handles, which exist
// only in a dedicated worker (where the page loads models); reads go to disk, nothing is held.

import type { SyncByteReader } from '../formats/safetensors.js';
import { type EntryMeta, type PutExpect, StoreError, type StoredFile, type WeightStore, byKey, errorName, keySegments, parseMeta, pump, storeErrorFrom } from './weight-store-base.js';

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

export class OpfsStore implements WeightStore {
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
