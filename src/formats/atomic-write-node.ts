// Writing output files without ever leaving a half-written one: the bytes go to a temporary file in
// the same folder (so the rename cannot cross file systems), are flushed, and only then renamed over
// the target. A full disk, a read-only folder or a missing one leaves any existing file as it was and
// no temporary file behind; the error is an OutputFileError naming the path. Node only.

import type { FileHandle } from 'node:fs/promises';
import { SiloError } from '../engine/errors.js';

/** A file-system failure writing an output; `path` is the output the user asked for. */
export class OutputFileError extends SiloError {
  constructor(
    readonly path: string,
    detail: string,
  ) {
    super(`cannot write ${path}: ${detail}`);
  }
}

/** What an fs error says, without a stack: "no space left on device (ENOSPC)". */
export function fsReason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string') {
    const text = err.message.replace(/^[A-Z]+: /, '').replace(/, \w+( '.*')?$/, '');
    return `${text} (${err.code})`;
  }
  return e instanceof Error ? e.message : String(e);
}

/** Temporary files not yet renamed or removed, and the sync unlink to remove them on an early exit. */
const pending = new Set<string>();
let unlinkSyncRef: ((p: string) => void) | undefined;

/** Removes every temporary file still pending, synchronously (for exits that skip finally blocks, e.g. a second Ctrl-C). */
export function removePendingTempFiles(): void {
  for (const p of pending) {
    try {
      unlinkSyncRef?.(p);
    } catch {
      // already gone
    }
    pending.delete(p);
  }
}

export interface StagedFile {
  /** The output path as given. */
  path: string;
  /** The temporary file holding the complete bytes. */
  temp: string;
  /** Renames the temporary file over `path`. */
  commit(): Promise<void>;
  /** Removes the temporary file (no-op after commit). */
  discard(): Promise<void>;
}

/** How the bytes reach the temporary file; replaceable so tests can fail a write midway. */
export type ChunkWriter = (handle: FileHandle, bytes: Uint8Array) => Promise<void>;

const defaultWriter: ChunkWriter = async (handle, bytes) => {
  await handle.writeFile(bytes);
};

/**
 * Runs `produce` on a new temporary file beside `path` and returns it staged: nothing at `path` changes
 * until commit(). On any failure the temporary file is removed; a SiloError from `produce` (a content
 * problem found while streaming) is rethrown as it is, anything else becomes an OutputFileError.
 */
export async function stageStream(path: string, produce: (handle: FileHandle) => Promise<void>): Promise<StagedFile> {
  const { open, rename, unlink } = await import('node:fs/promises');
  const { dirname, basename, join } = await import('node:path');
  unlinkSyncRef ??= (await import('node:fs')).unlinkSync;
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`);
  const remove = async () => {
    pending.delete(temp);
    await unlink(temp).catch(() => undefined);
  };
  let handle: FileHandle | undefined;
  try {
    // 'wx': never follow or reuse an existing file at the temporary name.
    handle = await open(temp, 'wx', 0o644);
    pending.add(temp);
    await produce(handle);
    await handle.sync();
    await handle.close();
    handle = undefined;
  } catch (e) {
    await handle?.close().catch(() => undefined);
    await remove();
    throw e instanceof SiloError ? e : new OutputFileError(path, fsReason(e));
  }
  let done = false;
  return {
    path,
    temp,
    async commit() {
      if (done) return;
      try {
        await rename(temp, path);
        pending.delete(temp);
        done = true;
      } catch (e) {
        await remove();
        throw new OutputFileError(path, fsReason(e));
      }
      await syncDir(dirname(path));
    },
    async discard() {
      if (done) return;
      done = true;
      await remove();
    },
  };
}

/** Makes a rename durable where the platform allows fsync on a directory (best effort: not on Windows). */
async function syncDir(dir: string): Promise<void> {
  const { open } = await import('node:fs/promises');
  try {
    const h = await open(dir, 'r');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
  } catch {
    // The data itself is already fsynced.
  }
}

/** Writes `bytes` to a temporary file beside `path` and returns it staged (see stageStream). */
export function stageFile(path: string, bytes: Uint8Array, writer: ChunkWriter = defaultWriter): Promise<StagedFile> {
  return stageStream(path, (handle) => writer(handle, bytes));
}

/** stageFile + commit: `path` holds either its old content or all of `bytes`, never a part. */
export async function writeFileAtomic(path: string, bytes: Uint8Array, writer?: ChunkWriter): Promise<void> {
  await (await stageFile(path, bytes, writer)).commit();
}

/**
 * Stages every file first and renames them only when all are complete, so a failure on any of them
 * (a full disk on the last) leaves every target untouched.
 */
export async function writeFilesAtomic(files: { path: string; bytes: Uint8Array }[], writer?: ChunkWriter): Promise<void> {
  const staged: StagedFile[] = [];
  try {
    for (const f of files) staged.push(await stageFile(f.path, f.bytes, writer));
  } catch (e) {
    await Promise.all(staged.map((s) => s.discard()));
    throw e;
  }
  for (let i = 0; i < staged.length; i++) {
    try {
      await staged[i]!.commit();
    } catch (e) {
      await Promise.all(staged.slice(i + 1).map((s) => s.discard()));
      throw e;
    }
  }
}
