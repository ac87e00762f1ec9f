// Read access to a folder of model files, on disk (Node: folder-node.ts) or behind a base URL
// (browser), with byte progress for large downloads. Every error names the full path or URL.

import { SiloError } from '../engine/errors.js';
import { parseSafetensors, type SafetensorsFile } from './safetensors.js';

export type ByteProgress = (loaded: number, total: number | null) => void;

export interface FolderAccess {
  /** The folder path or base URL, for messages. */
  readonly location: string;
  bytes(name: string, onProgress?: ByteProgress): Promise<Uint8Array>;
  text(name: string): Promise<string>;
  exists(name: string): Promise<boolean>;
  /**
   * Opens a .safetensors file. On disk only the header is read and tensors are read on demand (files
   * of any size); over HTTP the file is fetched as its own buffer. Optional: openSafetensorsIn falls
   * back to bytes() + parse for folders that lack it.
   */
  safetensors?(name: string, onProgress?: ByteProgress): Promise<SafetensorsFile>;
}

/** A .safetensors file in `folder`, through its own opener when it has one; errors name the full path. */
export async function openSafetensorsIn(folder: FolderAccess, name: string, onProgress?: ByteProgress): Promise<SafetensorsFile> {
  if (folder.safetensors) return folder.safetensors(name, onProgress);
  return parseSafetensors(await folder.bytes(name, onProgress), `${folder.location}/${name}`);
}

/** A folder served over HTTP. Streams bodies so progress can be reported. */
export function urlFolder(baseUrl: string, init?: RequestInit): FolderAccess {
  const base = baseUrl.replace(/\/+$/, '');
  const get = async (name: string) => {
    const url = `${base}/${name}`;
    let res: Response;
    try {
      res = await fetch(url, init);
    } catch (e) {
      throw new SiloError(`${url}: ${(e as Error).message}`);
    }
    if (!res.ok) throw new SiloError(`${url}: HTTP ${res.status} ${res.statusText}`.trim());
    return res;
  };
  return {
    location: base,
    async bytes(name, onProgress) {
      return readBody(await get(name), `${base}/${name}`, onProgress);
    },
    async safetensors(name, onProgress) {
      return parseSafetensors(await readBody(await get(name), `${base}/${name}`, onProgress), `${base}/${name}`);
    },
    text: async (name) => (await get(name)).text(),
    exists: async (name) => {
      try {
        return (await fetch(`${base}/${name}`, { ...init, method: 'HEAD' })).ok;
      } catch {
        return false;
      }
    },
  };
}

/**
 * A response body as one buffer, streamed with progress. With a trustworthy Content-Length (no
 * content encoding) the buffer is allocated once at that size and a body that ends short or runs
 * long is an error naming the URL, as is a connection that drops mid-body.
 */
async function readBody(res: Response, url: string, onProgress?: ByteProgress): Promise<Uint8Array> {
  const encoded = (res.headers.get('content-encoding') ?? 'identity') !== 'identity';
  const declared = res.headers.get('content-length');
  const total = !encoded && declared !== null && /^\d+$/.test(declared) ? Number(declared) : null;
  const fail = (detail: string) => new SiloError(`${url}: ${detail}`);
  try {
    if (!res.body) {
      const b = new Uint8Array(await res.arrayBuffer());
      if (total !== null && b.byteLength !== total) throw fail(`received ${b.byteLength} of ${total} bytes`);
      onProgress?.(b.byteLength, total);
      return b;
    }
    const reader = res.body.getReader();
    let out: Uint8Array | null = null;
    if (total !== null) {
      try {
        out = new Uint8Array(total);
      } catch {
        throw fail(`${total} bytes do not fit in one array in this runtime`);
      }
    }
    const chunks: Uint8Array[] = [];
    let loaded = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (out) {
        if (loaded + value.byteLength > out.byteLength) throw fail(`the body runs past its Content-Length of ${total} bytes`);
        out.set(value, loaded);
      } else chunks.push(value);
      loaded += value.byteLength;
      onProgress?.(loaded, total);
    }
    if (out) {
      if (loaded !== out.byteLength) throw fail(`received ${loaded} of ${total} bytes (connection closed early?)`);
      return out;
    }
    const joined = new Uint8Array(loaded);
    let o = 0;
    for (const c of chunks) {
      joined.set(c, o);
      o += c.byteLength;
    }
    return joined;
  } catch (e) {
    if (e instanceof SiloError) throw e;
    throw fail(`download failed: ${(e as Error).message}`);
  }
}

/** A folder named relative to another (a pipeline's "unet/", a case manifest's "../unet_mini"). */
export function subFolder(folder: FolderAccess, rel: string): FolderAccess {
  const prefix = rel.replace(/\/+$/, '');
  return {
    location: `${folder.location}/${prefix}`,
    bytes: (name, onProgress) => folder.bytes(`${prefix}/${name}`, onProgress),
    text: (name) => folder.text(`${prefix}/${name}`),
    exists: (name) => folder.exists(`${prefix}/${name}`),
    safetensors: (name, onProgress) => openSafetensorsIn(folder, `${prefix}/${name}`, onProgress),
  };
}
