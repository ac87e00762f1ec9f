// Training images from the file system: each argument is an image file, a folder (searched recursively
// for .png / .jpg / .jpeg, sorted, so the same folder always gives the same order) or a list file (.txt:
// one path per line, relative to the list; blank lines and # comments skipped). Names are the paths as
// given (resolved against the list for list entries), so held-out images are matched by their path.

import { readdir, readFile, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, extname } from 'node:path';
import { ArgumentError } from '../../engine/errors.js';
import { readImageFile } from '../../io/image-node.js';
import type { NamedImage } from './data.js';

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg']);

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (e.isFile() && IMAGE_EXT.has(extname(e.name).toLowerCase())) out.push(p);
  }
  return out;
}

/** The image paths the arguments name, in order, each once. */
export async function listImagePaths(args: readonly string[], what = '--data'): Promise<string[]> {
  const out: string[] = [];
  for (const a of args) {
    let st;
    try {
      st = await stat(a);
    } catch {
      throw new ArgumentError(`${what} ${a}: no such file or folder`);
    }
    if (st.isDirectory()) {
      const found = await walk(a);
      if (!found.length) throw new ArgumentError(`${what} ${a}: the folder holds no .png / .jpg images`);
      out.push(...found);
    } else if (extname(a).toLowerCase() === '.txt') {
      const lines = (await readFile(a, 'utf8')).split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
      if (!lines.length) throw new ArgumentError(`${what} ${a}: the list names no images`);
      for (const l of lines) {
        const p = relative(process.cwd(), resolve(dirname(a), l)) || l;
        if (!IMAGE_EXT.has(extname(p).toLowerCase())) throw new ArgumentError(`${what} ${a}: "${l}" is not a .png / .jpg image`);
        out.push(p);
      }
    } else if (IMAGE_EXT.has(extname(a).toLowerCase())) out.push(a);
    else throw new ArgumentError(`${what} ${a}: not an image (.png, .jpg), a folder or a .txt list`);
  }
  const seen = new Set<string>();
  return out.filter((p) => {
    const key = resolve(p);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Decodes every image the arguments name (errors name the file). */
export async function readTrainingImages(args: readonly string[], what = '--data'): Promise<NamedImage[]> {
  const paths = await listImagePaths(args, what);
  const out: NamedImage[] = [];
  for (const p of paths) out.push({ name: relative(process.cwd(), resolve(p)) || p, image: await readImageFile(p) });
  return out;
}
