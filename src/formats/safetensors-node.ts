// Node-only safetensors files on disk. `node:` modules are imported inside the functions so that
// bundling the engine for the browser never pulls them in.
//
// Reading: only the header is read at open; each tensor's bytes are read when asked for, with
// positional reads in pieces under Node's 2 GiB read limit, so weight files of any size (the fp32
// SD-1.5 UNet is 3.44 GB) load without ever holding the file in memory. The file is opened per read
// (no descriptor outlives a call, so nothing needs closing) and its size and mtime are compared
// with those seen at open: a file replaced or truncated since is an error, never mixed data.
//
// Writing: writeSafetensorsFile streams the header and then each tensor into a temporary file beside
// the output, fsyncs it and renames it over the output, so the output is either complete or untouched.

import { stageStream } from './atomic-write-node.js';
import {
  SafetensorsError,
  SafetensorsFile,
  SafetensorsIndex,
  writeSafetensors,
  type SyncByteReader,
  type WritableEntry,
} from './safetensors.js';

type NodeFs = typeof import('node:fs');

/** Largest single positional read (Node refuses reads of 2 GiB and more). */
const READ_CHUNK = 1 << 30;
/** Largest single write handed to the OS. */
const WRITE_CHUNK = 1 << 30;

/** Positional reads on `path`, checked against the size and mtime it had at open. `chunk` is for tests. */
export async function fileByteReader(path: string, chunk = READ_CHUNK): Promise<SyncByteReader> {
  const fs: NodeFs = await import('node:fs');
  let first: import('node:fs').Stats;
  try {
    first = fs.statSync(path);
  } catch (e) {
    throw new SafetensorsError(path, null, `cannot read: ${(e as Error).message}`);
  }
  if (!first.isFile()) throw new SafetensorsError(path, null, 'cannot read: not a regular file');
  return {
    size: first.size,
    read(offset, length) {
      const fd = fs.openSync(path, 'r');
      try {
        const now = fs.fstatSync(fd);
        if (now.size !== first.size || now.mtimeMs !== first.mtimeMs) {
          throw new Error(`the file changed on disk since its header was read (${first.size} -> ${now.size} bytes)`);
        }
        const out = new Uint8Array(length);
        for (let done = 0; done < length; ) {
          const n = fs.readSync(fd, out, done, Math.min(chunk, length - done), offset + done);
          if (n === 0) throw new Error(`the file ended at byte ${offset + done} (truncated?)`);
          done += n;
        }
        return out;
      } finally {
        fs.closeSync(fd);
      }
    },
  };
}

/** Opens one .safetensors file: reads and validates its header; tensors are read on demand. Errors name `path`. */
export async function readSafetensorsFile(path: string): Promise<SafetensorsFile> {
  return SafetensorsFile.open(await fileByteReader(path), path);
}

/** Reads a *.safetensors.index.json and opens the shards it names (paths relative to the index's folder). */
export async function readSafetensorsIndex(path: string): Promise<SafetensorsIndex> {
  const { dirname, resolve } = await import('node:path');
  const { readFile } = await import('node:fs/promises');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new SafetensorsError(path, null, `cannot read: ${(e as Error).message}`);
  }
  const dir = dirname(path);
  return SafetensorsIndex.load(text, path, (file) => readSafetensorsFile(resolve(dir, file)));
}

export interface WriteFileOptions {
  /**
   * Runs after the last byte is written and before the output is replaced; throwing here abandons
   * the write (e.g. a converter that found problems while streaming).
   */
  beforeCommit?: () => void | Promise<void>;
}

/**
 * Writes a safetensors file atomically and in bounded memory: header, then tensor by tensor, into a
 * temporary file in the same folder, fsynced and renamed over `path`. On any failure the temporary
 * file is removed, an existing `path` is left as it was, and the error is a SiloError naming `path`
 * (or the producer's own SiloError). Returns the bytes written.
 */
export async function writeSafetensorsFile(
  path: string,
  tensors: Record<string, WritableEntry>,
  metadata?: Record<string, string>,
  options: WriteFileOptions = {},
): Promise<number> {
  let written = 0;
  const staged = await stageStream(path, async (handle) => {
    const sink = {
      async write(bytes: Uint8Array) {
        for (let done = 0; done < bytes.byteLength; ) {
          const { bytesWritten } = await handle.write(bytes, done, Math.min(WRITE_CHUNK, bytes.byteLength - done));
          done += bytesWritten;
        }
      },
    };
    written = await writeSafetensors(sink, tensors, metadata, path);
    await options.beforeCommit?.();
  });
  await staged.commit();
  return written;
}

