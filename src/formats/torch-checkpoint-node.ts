// Node-only: torch checkpoints read from disk through a file handle, so only the central directory,
// data.pkl and the storages asked for are read (never the whole file at once; checkpoints can exceed
// the 4 GiB a single Node buffer holds). `node:` modules are imported inside the functions so that
// bundling the engine for the browser never pulls them in.

import type { ByteSource } from './zip.js';
import { TorchCheckpoint, TorchCheckpointError, type TorchCheckpointOptions } from './torch-checkpoint.js';

/** Largest single read; Node refuses reads over 2 GiB. */
const CHUNK = 1 << 30;

/** A random-access source over a file on disk; close() it when done. */
export async function fileSource(path: string): Promise<ByteSource> {
  const { open } = await import('node:fs/promises');
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    throw new TorchCheckpointError(path, `cannot open: ${(e as Error).message}`);
  }
  const { size } = await handle.stat();
  return {
    name: path,
    size,
    async read(offset, length) {
      const out = new Uint8Array(length);
      for (let done = 0; done < length; ) {
        const { bytesRead } = await handle.read(out, done, Math.min(CHUNK, length - done), offset + done);
        if (bytesRead === 0) throw new TorchCheckpointError(path, `file ended at byte ${offset + done} while reading ${length} bytes at ${offset} (changed on disk?)`);
        done += bytesRead;
      }
      return out;
    },
    close: () => handle.close(),
  };
}

/** Opens a torch checkpoint file; call close() on the result when done reading tensors. */
export async function readTorchCheckpointFile(path: string, options?: TorchCheckpointOptions): Promise<TorchCheckpoint> {
  const source = await fileSource(path);
  try {
    return await TorchCheckpoint.open(source, path, options);
  } catch (e) {
    await source.close?.();
    throw e;
  }
}
