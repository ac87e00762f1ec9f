// A folder the user picked in the browser (<input webkitdirectory> gives Files with relative paths;
// showDirectoryPicker() gives a FileSystemDirectoryHandle) as a FolderAccess. Weight files are read
// tensor by tensor through FileReaderSync (dedicated workers only), so a multi-GB .safetensors never
// becomes one ArrayBuffer; elsewhere a file is read whole, which only suits small ones.

import { SiloError } from '../engine/errors.js';
import { SafetensorsFile, type SyncByteReader } from './safetensors.js';
import type { FolderAccess } from './folder.js';

/** Files larger than this are refused where they would be read whole (no FileReaderSync). */
const MAX_WHOLE_BYTES = 1 << 30;

interface FileReaderSyncLike {
  readAsArrayBuffer(blob: Blob): ArrayBuffer;
}

/** Synchronous random access to a File through FileReaderSync (workers). */
export function blobByteReader(file: Blob, label: string): SyncByteReader {
  const FRS = (globalThis as { FileReaderSync?: new () => FileReaderSyncLike }).FileReaderSync;
  if (!FRS) throw new SiloError(`${label}: reading a large file tensor by tensor needs a Web Worker (FileReaderSync)`);
  const reader = new FRS();
  return {
    size: file.size,
    read(offset, length) {
      if (offset < 0 || length < 0 || offset + length > file.size) throw new Error(`read of ${length} bytes at ${offset} is outside the file's ${file.size} bytes`);
      const out = new Uint8Array(reader.readAsArrayBuffer(file.slice(offset, offset + length)));
      if (out.byteLength !== length) throw new Error(`read ${out.byteLength} of ${length} bytes at ${offset} (the file changed?)`);
      return out;
    },
  };
}

/**
 * Files from <input webkitdirectory> (or a drop), keyed by their path inside the picked folder: the
 * first segment of webkitRelativePath is the folder's own name and is dropped.
 */
export function pickedFilesFolder(files: Iterable<File>, label?: string): FolderAccess {
  const byPath = new Map<string, File>();
  let root = label;
  for (const f of files) {
    const rel = (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name;
    const parts = rel.split('/');
    if (parts.length > 1) {
      root ??= parts[0];
      parts.shift();
    }
    byPath.set(parts.join('/'), f);
  }
  const location = root ?? 'picked folder';
  return fileMapFolder(location, async (name) => byPath.get(name) ?? null);
}

/** A directory handle from showDirectoryPicker(), walked by path on demand. */
export function directoryHandleFolder(dir: FileSystemDirectoryHandle): FolderAccess {
  return fileMapFolder(dir.name, async (name) => {
    let d = dir;
    const parts = name.split('/').filter((p) => p && p !== '.');
    if (parts.includes('..')) return null;
    try {
      for (const p of parts.slice(0, -1)) d = await d.getDirectoryHandle(p);
      return await (await d.getFileHandle(parts[parts.length - 1]!)).getFile();
    } catch {
      return null;
    }
  });
}

function fileMapFolder(location: string, find: (name: string) => Promise<File | null>): FolderAccess {
  const need = async (name: string) => {
    const f = await find(name);
    if (!f) throw new SiloError(`${location}/${name}: no such file in the picked folder`);
    return f;
  };
  const whole = async (name: string) => {
    const f = await need(name);
    if (f.size > MAX_WHOLE_BYTES) return blobByteReader(f, `${location}/${name}`).read(0, f.size);
    return new Uint8Array(await f.arrayBuffer());
  };
  return {
    location,
    exists: async (name) => (await find(name)) !== null,
    bytes: whole,
    text: async (name) => (await need(name)).text(),
    async safetensors(name) {
      const f = await need(name);
      const label = `${location}/${name}`;
      const FRS = (globalThis as { FileReaderSync?: unknown }).FileReaderSync;
      if (FRS) return SafetensorsFile.open(blobByteReader(f, label), label);
      if (f.size > MAX_WHOLE_BYTES) throw new SiloError(`${label}: ${f.size} bytes is too large to read whole here; load models in a Web Worker`);
      return SafetensorsFile.open({ size: f.size, read: ((b) => (o: number, n: number) => b.slice(o, o + n))(new Uint8Array(await f.arrayBuffer())) }, label);
    },
  };
}
