// Access to a golden case folder from Node (file system) or the browser (HTTP), so the same case
// runners serve `silo check`, the Node test suite and the browser tests.

import { parseSafetensors, type SafetensorsFile } from '../engine/safetensors.js';

export interface CaseFiles {
  /** Where the case lives (a folder path or a base URL), for messages. */
  readonly location: string;
  bytes(name: string): Promise<Uint8Array>;
  text(name: string): Promise<string>;
  exists(name: string): Promise<boolean>;
}

export async function readJson<T = unknown>(files: CaseFiles, name: string): Promise<T> {
  const text = await files.text(name);
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new Error(`${files.location}/${name}: not valid JSON: ${(e as Error).message}`);
  }
}

export async function readSafetensors(files: CaseFiles, name: string): Promise<SafetensorsFile> {
  return parseSafetensors(await files.bytes(name), `${files.location}/${name}`);
}

/** A case folder served over HTTP (browser). */
export function urlCaseFiles(baseUrl: string): CaseFiles {
  const base = baseUrl.replace(/\/+$/, '');
  const get = async (name: string) => {
    const res = await fetch(`${base}/${name}`);
    if (!res.ok) throw new Error(`${base}/${name}: HTTP ${res.status}`);
    return res;
  };
  return {
    location: base,
    bytes: async (name) => new Uint8Array(await (await get(name)).arrayBuffer()),
    text: async (name) => (await get(name)).text(),
    exists: async (name) => (await fetch(`${base}/${name}`, { method: 'HEAD' })).ok,
  };
}
