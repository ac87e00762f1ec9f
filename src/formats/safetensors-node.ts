// Node-only safetensors sources: files on disk. `node:` modules are imported inside the functions so
// that bundling the engine for the browser never pulls them in.

import { parseSafetensors, SafetensorsError, SafetensorsIndex, type SafetensorsFile } from './safetensors.js';

async function readBytes(path: string, what: string): Promise<Uint8Array> {
  const { readFile } = await import('node:fs/promises');
  try {
    return await readFile(path);
  } catch (e) {
    throw new SafetensorsError(what, null, `cannot read: ${(e as Error).message}`);
  }
}

/** Reads and parses one .safetensors file; errors name `path`. */
export async function readSafetensorsFile(path: string): Promise<SafetensorsFile> {
  return parseSafetensors(await readBytes(path, path), path);
}

/** Reads a *.safetensors.index.json and the shards it names (paths relative to the index's folder). */
export async function readSafetensorsIndex(path: string): Promise<SafetensorsIndex> {
  const { dirname, resolve } = await import('node:path');
  const text = new TextDecoder().decode(await readBytes(path, path));
  const dir = dirname(path);
  return SafetensorsIndex.load(text, path, (file) => readSafetensorsFile(resolve(dir, file)));
}
