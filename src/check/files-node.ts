// A golden case folder on disk (Node only).
import type { CaseFiles } from './files.js';

export function dirCaseFiles(dir: string): CaseFiles {
  const path = (name: string) => `${dir.replace(/\/+$/, '')}/${name}`;
  return {
    location: dir,
    bytes: async (name) => {
      const { readFile } = await import('node:fs/promises');
      try {
        return new Uint8Array(await readFile(path(name)));
      } catch (e) {
        throw new Error(`${path(name)}: ${(e as Error).message}`);
      }
    },
    text: async (name) => {
      const { readFile } = await import('node:fs/promises');
      try {
        return await readFile(path(name), 'utf8');
      } catch (e) {
        throw new Error(`${path(name)}: ${(e as Error).message}`);
      }
    },
    exists: async (name) => {
      const { access } = await import('node:fs/promises');
      return access(path(name)).then(
        () => true,
        () => false,
      );
    },
  };
}
