// Read access to a folder of model files, on disk (Node: folder-node.ts) or behind a base URL
// (browser), with byte progress for large downloads. Every error names the full path or URL.

import { SiloError } from '../engine/errors.js';

export type ByteProgress = (loaded: number, total: number | null) => void;

export interface FolderAccess {
  /** The folder path or base URL, for messages. */
  readonly location: string;
  bytes(name: string, onProgress?: ByteProgress): Promise<Uint8Array>;
  text(name: string): Promise<string>;
  exists(name: string): Promise<boolean>;
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
      const res = await get(name);
      const total = Number(res.headers.get('content-length')) || null;
      if (!onProgress || !res.body) return new Uint8Array(await res.arrayBuffer());
      const reader = res.body.getReader();
      const chunks: Uint8Array[] = [];
      let loaded = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        loaded += value.byteLength;
        onProgress(loaded, total);
      }
      const out = new Uint8Array(loaded);
      let o = 0;
      for (const c of chunks) {
        out.set(c, o);
        o += c.byteLength;
      }
      return out;
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

/** A folder named relative to another (a pipeline's "unet/", a case manifest's "../unet_mini"). */
export function subFolder(folder: FolderAccess, rel: string): FolderAccess {
  const prefix = rel.replace(/\/+$/, '');
  return {
    location: `${folder.location}/${prefix}`,
    bytes: (name, onProgress) => folder.bytes(`${prefix}/${name}`, onProgress),
    text: (name) => folder.text(`${prefix}/${name}`),
    exists: (name) => folder.exists(`${prefix}/${name}`),
  };
}
