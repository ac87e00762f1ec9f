// Access to a golden case folder from Node (file system) or the browser (HTTP), so the same case
// runners serve `silo check`, the Node test suite and the browser tests.

import { SiloError } from '../engine/errors.js';
import { parseSafetensors, type SafetensorsFile } from '../formats/safetensors.js';
import { subFolder, urlFolder, type FolderAccess } from '../formats/folder.js';

export { subFolder };

export type CaseFiles = FolderAccess;

export async function readJson<T = unknown>(files: CaseFiles, name: string): Promise<T> {
  const text = await files.text(name);
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new SiloError(`${files.location}/${name}: not valid JSON: ${(e as Error).message}`);
  }
}

export async function readSafetensors(files: CaseFiles, name: string): Promise<SafetensorsFile> {
  return parseSafetensors(await files.bytes(name), `${files.location}/${name}`);
}

/** A case folder served over HTTP (browser). */
export const urlCaseFiles = (baseUrl: string): CaseFiles => urlFolder(baseUrl);

/** A file path relative to a case folder, split into its folder and file name. */
export function relativeFile(files: CaseFiles, rel: string): { folder: CaseFiles; name: string } {
  const i = rel.lastIndexOf('/');
  return i < 0 ? { folder: files, name: rel } : { folder: subFolder(files, rel.slice(0, i)), name: rel.slice(i + 1) };
}
