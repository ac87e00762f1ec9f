// A folder on disk (Node only; node: modules are imported lazily so bundles stay browser-safe).
import { SiloError } from '../engine/errors.js';
import type { FolderAccess } from './folder.js';
import { SafetensorsFile } from './safetensors.js';
import { fileByteReader } from './safetensors-node.js';

export function dirFolder(dir: string): FolderAccess {
  const path = (name: string) => `${dir.replace(/\/+$/, '')}/${name}`;
  return {
    location: dir,
    async bytes(name, onProgress) {
      const { readFile } = await import('node:fs/promises');
      try {
        const b = new Uint8Array(await readFile(path(name)));
        onProgress?.(b.byteLength, b.byteLength);
        return b;
      } catch (e) {
        throw new SiloError(`${path(name)}: ${(e as Error).message}`);
      }
    },
    async text(name) {
      const { readFile } = await import('node:fs/promises');
      try {
        return await readFile(path(name), 'utf8');
      } catch (e) {
        throw new SiloError(`${path(name)}: ${(e as Error).message}`);
      }
    },
    /** Header only; tensors are read from disk when asked for (never the whole file in memory). */
    async safetensors(name, onProgress) {
      const reader = await fileByteReader(path(name));
      const f = SafetensorsFile.open(reader, path(name));
      onProgress?.(reader.size, reader.size);
      return f;
    },
    async exists(name) {
      const { access } = await import('node:fs/promises');
      return access(path(name)).then(
        () => true,
        () => false,
      );
    },
  };
}
