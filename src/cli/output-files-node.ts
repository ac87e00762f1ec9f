// Checks a command's input and output paths before any work starts, so a run never ends by losing its
// result (a missing or read-only folder) or by overwriting its own input (--out equal to
// --ground-truth, also through a symlink or an ./a/../ spelling). Paths are compared as the real path
// of their folder plus their base name: what a rename into that folder would replace. Node only
// (node: modules imported lazily, as in the other *-node.ts files).

import { SiloError } from '../engine/errors.js';
import { fsReason } from '../formats/atomic-write-node.js';
import { UsageError } from './usage-error.js';

export interface InputPath {
  flag: string;
  path: string;
  /** Must be a folder (a model folder). Outputs may not be written inside any input that is a folder. */
  folder?: boolean;
}

export interface OutputPath {
  flag: string;
  path: string;
}

/** A missing input or an unusable output folder; names the flag and the path. */
export class PathError extends SiloError {}

function kindOf(s: import('node:fs').Stats): string {
  if (s.isDirectory()) return 'a folder';
  if (s.isSymbolicLink()) return 'a symbolic link';
  if (s.isFIFO()) return 'a pipe';
  if (s.isSocket()) return 'a socket';
  if (s.isCharacterDevice() || s.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

async function resolveInput(i: InputPath): Promise<{ real: string; isFolder: boolean }> {
  const { realpath, stat } = await import('node:fs/promises');
  let s;
  try {
    s = await stat(i.path);
  } catch (e) {
    throw new PathError(`--${i.flag} ${i.path}: ${fsReason(e)}`);
  }
  if (i.folder && !s.isDirectory()) throw new PathError(`--${i.flag} ${i.path}: not a folder`);
  return { real: await realpath(i.path), isFolder: s.isDirectory() };
}

/** The real path an output will be renamed to, after checking that its folder exists and is writable. */
async function resolveOutput(o: OutputPath): Promise<string> {
  const { access, lstat, realpath, stat } = await import('node:fs/promises');
  const { constants } = await import('node:fs');
  const { basename, dirname, resolve } = await import('node:path');
  const abs = resolve(o.path);
  const name = basename(abs);
  const dir = dirname(abs);
  if (o.path === '' || o.path.endsWith('/') || name === '' || abs === dir) throw new PathError(`--${o.flag} ${o.path}: expected a file name, not a folder`);
  let d;
  try {
    d = await stat(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new PathError(`--${o.flag} ${o.path}: the folder ${dir} does not exist`);
    if (code === 'ENOTDIR') throw new PathError(`--${o.flag} ${o.path}: ${dir} is not a folder (a part of it is a file)`);
    throw new PathError(`--${o.flag} ${o.path}: cannot use the folder ${dir}: ${fsReason(e)}`);
  }
  if (!d.isDirectory()) throw new PathError(`--${o.flag} ${o.path}: ${dir} is not a folder`);
  try {
    await access(dir, constants.W_OK);
  } catch (e) {
    throw new PathError(`--${o.flag} ${o.path}: the folder ${dir} is not writable (${fsReason(e)})`);
  }
  const target = resolve(await realpath(dir), name);
  const existing = await lstat(target).catch(() => undefined);
  if (existing && !existing.isFile()) throw new PathError(`--${o.flag} ${o.path}: exists and is ${kindOf(existing)}; give the path of a new or regular file`);
  return target;
}

/**
 * Inputs exist; output folders exist and are writable; an existing output is a regular file; outputs
 * differ from each other, from every input and lie outside every input folder. Missing or unusable
 * paths are a PathError (exit 1); outputs that clash are a UsageError (exit 2). Returns the real paths.
 */
export async function checkPaths(inputs: InputPath[], outputs: OutputPath[]): Promise<{ inputs: string[]; outputs: string[] }> {
  const { sep } = await import('node:path');
  const realIn: { real: string; isFolder: boolean }[] = [];
  for (const i of inputs) realIn.push(await resolveInput(i));
  const realOut: string[] = [];
  for (const o of outputs) realOut.push(await resolveOutput(o));
  outputs.forEach((o, k) => {
    const target = realOut[k]!;
    for (let j = 0; j < k; j++) {
      if (realOut[j] === target) throw new UsageError(`--${o.flag} ${o.path} and --${outputs[j]!.flag} ${outputs[j]!.path} are the same file; each output needs its own path`);
    }
    inputs.forEach((i, j) => {
      const { real: src, isFolder } = realIn[j]!;
      if (src === target) throw new UsageError(`--${o.flag} ${o.path} is the input --${i.flag} ${i.path}; writing it would destroy the input`);
      if (isFolder && target.startsWith(src.endsWith(sep) ? src : src + sep)) throw new UsageError(`--${o.flag} ${o.path} is inside the folder --${i.flag} ${i.path}; write outputs elsewhere`);
    });
  });
  return { inputs: realIn.map((r) => r.real), outputs: realOut };
}
