// The Hugging Face hub cache, laid out exactly as huggingface_hub writes it, so files a user already
// downloaded with diffusers are found and ours are found by diffusers:
//   <root>/models--org--name/blobs/<etag>                 file contents (LFS: etag = sha256)
//   <root>/models--org--name/blobs/<etag>.incomplete      a download in progress (resumed with Range)
//   <root>/models--org--name/snapshots/<commit>/<path>    relative symlink to ../../blobs/<etag> (copy where symlinks fail)
//   <root>/models--org--name/refs/<revision>              the commit hash the revision pointed to
//   <root>/models--org--name/.no_exist/<commit>/<path>    empty: the file is known to be absent at that commit
//   <root>/.locks/models--org--name/<etag>.lock           held while one process writes that blob
// Node only (node: modules imported lazily).

import { HubError, repoFolderName } from './model-ref.js';

export interface RepoCache {
  root: string;
  repoDir: string;
  blob(etag: string): string;
  snapshot(commit: string, path: string): string;
  ref(revision: string): string;
  noExist(commit: string, path: string): string;
  lock(etag: string): string;
}

export function repoCache(root: string, repoId: string): RepoCache {
  const name = repoFolderName(repoId);
  const repoDir = `${root}/${name}`;
  return {
    root,
    repoDir,
    blob: (etag) => `${repoDir}/blobs/${etag}`,
    snapshot: (commit, path) => `${repoDir}/snapshots/${commit}/${path}`,
    ref: (revision) => `${repoDir}/refs/${revision}`,
    noExist: (commit, path) => `${repoDir}/.no_exist/${commit}/${path}`,
    lock: (etag) => `${root}/.locks/${name}/${etag}.lock`,
  };
}

const fs = () => import('node:fs/promises');

export async function fileExists(path: string): Promise<boolean> {
  return (await fs()).stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}

/** The commit a revision resolved to last time (refs/<revision>), or null. */
export async function readRef(cache: RepoCache, revision: string): Promise<string | null> {
  try {
    const s = (await (await fs()).readFile(cache.ref(revision), 'utf8')).trim();
    return /^[0-9a-f]{40}$/.test(s) ? s : null;
  } catch {
    return null;
  }
}

/** refs/<revision> = commit (no newline, as huggingface_hub writes it); skipped when unchanged or when the revision is the commit. */
export async function writeRef(cache: RepoCache, revision: string, commit: string): Promise<void> {
  if (revision === commit || (await readRef(cache, revision)) === commit) return;
  const { mkdir, writeFile, rename } = await fs();
  const path = cache.ref(revision);
  const { dirname } = await import('node:path');
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  await writeFile(tmp, commit);
  await rename(tmp, path);
}

/**
 * snapshots/<commit>/<path> -> the blob: a relative symlink, or a copy where the file system refuses
 * links (Windows without developer mode, some network drives). `symlink` is replaceable for tests.
 */
export async function linkSnapshot(cache: RepoCache, commit: string, path: string, etag: string, symlink?: (target: string, path: string) => Promise<void>): Promise<void> {
  const { mkdir, rm, copyFile, rename } = await fs();
  symlink ??= (await fs()).symlink;
  const { dirname, relative } = await import('node:path');
  const dst = cache.snapshot(commit, path);
  const blob = cache.blob(etag);
  await mkdir(dirname(dst), { recursive: true });
  const tmp = `${dst}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    await symlink(relative(dirname(dst), blob), tmp);
  } catch {
    await copyFile(blob, tmp);
  }
  try {
    await rename(tmp, dst); // replaces an older link atomically
  } catch (e) {
    await rm(tmp, { force: true });
    throw new HubError(`${dst}: cannot write the snapshot entry (${(e as Error).message})`);
  }
}

/** Records that `path` does not exist at `commit` (huggingface_hub's .no_exist marker). */
export async function markNoExist(cache: RepoCache, commit: string, path: string): Promise<void> {
  const { mkdir, writeFile } = await fs();
  const { dirname } = await import('node:path');
  const p = cache.noExist(commit, path);
  try {
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, '');
  } catch {
    // Only an optimisation for later offline runs.
  }
}
