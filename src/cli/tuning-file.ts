// The tuning table (engine/tuning.ts) as a JSON file, written atomically: by default `tuning.json` in
// silo-webgpu's cache directory ($SILO_CACHE, else $XDG_CACHE_HOME/silo-webgpu, else ~/.cache/silo-webgpu),
// where `silo tune` writes it and the other commands read it.

import { mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../formats/atomic-write-node.js';
import { siloCacheDir } from '../hub/silo-release-node.js';
import type { TuningStore } from '../engine/tuning.js';

export function fileTuningStore(path: string): TuningStore {
  return {
    where: path,
    read: async () => {
      try {
        return await readFile(path, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw e;
      }
    },
    write: async (text) => {
      await mkdir(dirname(path), { recursive: true });
      await writeFileAtomic(path, new TextEncoder().encode(text));
    },
  };
}

/** The default table's path for this environment ($SILO_TUNING overrides it). */
export function defaultTuningPath(env: Record<string, string | undefined> = process.env, home = homedir()): string {
  return env['SILO_TUNING'] || `${siloCacheDir(env, home)}/tuning.json`;
}

/** The store the commands use: the default path's file. */
export function cliTuningStore(env: Record<string, string | undefined> = process.env): TuningStore {
  return fileTuningStore(defaultTuningPath(env));
}
