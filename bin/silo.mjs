#!/usr/bin/env node
// The `silo` command (package.json "bin"): runs the bundled CLI, dist/silo.mjs, in this process.
// An installed package ships dist/ built. In a clone (src/ present) dist/ comes from `npm ci` /
// `npm install` ("prepare"); when any source is newer than dist/silo.mjs, or it is missing, the CLI
// is rebuilt first and we say so, so a clone never runs stale code silently. Without esbuild (an
// install that omitted dev dependencies) that is an error naming the newer file, never a stale run.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'dist', 'silo.mjs');
/** What dist/silo.mjs is built from (src/ imports the WGSL in kernels/). */
const SOURCES = ['src', 'kernels', 'scripts/build.mjs', 'package.json'];

/** The most recently modified file under `paths`, or null when none exists. */
function newest(paths) {
  let best = null;
  const visit = (path) => {
    const st = statSync(path, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) {
      for (const name of readdirSync(path)) visit(join(path, name));
    } else if (!best || st.mtimeMs > best.mtimeMs) {
      best = { path, mtimeMs: st.mtimeMs };
    }
  };
  for (const p of paths) visit(join(ROOT, p));
  return best;
}

function fail(message) {
  console.error(`silo: ${message}`);
  process.exit(1);
}

if (existsSync(join(ROOT, 'src', 'cli', 'silo.ts'))) {
  const built = statSync(CLI, { throwIfNoEntry: false });
  const source = newest(SOURCES);
  if (!built || (source && source.mtimeMs > built.mtimeMs)) {
    const why = built ? `${relative(ROOT, source.path)} is newer than dist/silo.mjs` : 'dist/silo.mjs is missing';
    let bundle;
    try {
      ({ bundle } = await import('../scripts/build.mjs'));
    } catch (e) {
      fail(`${why} and it cannot be rebuilt here (${e.message}); run \`npm install\` (with dev dependencies) or \`npm run build\` in ${ROOT}`);
    }
    console.error(`silo: ${why}; rebuilding it`);
    try {
      await bundle('src/cli/silo.ts', CLI, 'node');
    } catch (e) {
      fail(`rebuilding dist/silo.mjs failed: ${e.message}`);
    }
  }
} else if (!existsSync(CLI)) {
  fail(`${CLI} is missing: this installation of silo-webgpu is incomplete; reinstall the package`);
}

const { main } = await import(pathToFileURL(CLI).href);
if (typeof main !== 'function') fail(`${CLI} does not export main(); rebuild it with \`npm run build\``);
process.exitCode = await main(process.argv.slice(2));
