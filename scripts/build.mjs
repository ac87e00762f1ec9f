// Builds the publishable package into dist/ (npm runs this as "prepare": on `npm ci` / `npm install`
// in a clone and before `npm pack` / `npm publish`):
//   dist/silo-webgpu.js        browser ESM bundle of src/index.ts (exports conditions "browser", "import")
//   dist/silo-webgpu-node.js   Node ESM bundle of src/node.ts (condition "node"; loads `webgpu` at run time)
//   dist/silo.mjs              the `silo` command line (run through bin/silo.mjs)
//   dist/types/                .d.ts declarations of both entries (tsc, tsconfig.build.json)
// No runtime dependency is left in the bundles and WGSL is inlined as text.
// `node scripts/build.mjs [entry] [outfile] [platform]` bundles one other entry (test pages use bundle()).
import { build } from 'esbuild';
import { spawn } from 'node:child_process';
import { mkdirSync, renameSync, rmSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Bundles one entry (a path relative to the repository root, or absolute). Files are written whole
 * then renamed into place, so a `silo` started meanwhile never imports half a bundle. */
export async function bundle(entry = 'src/index.ts', outfile = 'dist/silo-webgpu.js', platform = 'browser') {
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: 'esm',
    platform,
    target: 'es2022',
    loader: { '.wgsl': 'text' },
    // The Node WebGPU binding is only imported (by computed name) when running in Node.
    external: ['webgpu'],
    // wgsl_reflect's "main" is CommonJS in a "type: module" package; take its ESM build.
    mainFields: ['module', 'main'],
    sourcemap: true,
    logLevel: 'warning',
    write: false,
  });
  for (const file of result.outputFiles) {
    mkdirSync(dirname(file.path), { recursive: true });
    const tmp = `${file.path}.${process.pid}.tmp`;
    writeFileSync(tmp, file.contents);
    renameSync(tmp, file.path);
  }
  return resolve(ROOT, outfile);
}

// The public API's types refer to WebGPU's global types (GPUDevice, ...), so the entry declarations
// say where those come from; tsc keeps no such reference by itself.
const TYPE_REFERENCES = { 'index.d.ts': ['@webgpu/types'], 'node.d.ts': ['@webgpu/types', 'node'] };

/** Emits the .d.ts files of src/index.ts and src/node.ts into `outDir` (replacing what was there). */
export async function declarations(outDir) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const staging = `${outDir}.${process.pid}.tmp`;
  rmSync(staging, { recursive: true, force: true });
  const code = await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', staging], { cwd: ROOT, stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', resolve);
  });
  if (code !== 0) {
    rmSync(staging, { recursive: true, force: true });
    throw new Error(`tsc -p tsconfig.build.json failed (exit ${code}): the declarations were not written`);
  }
  for (const [file, refs] of Object.entries(TYPE_REFERENCES)) {
    const path = join(staging, file);
    const lines = refs.map((r) => `/// <reference types="${r}" />\n`).join('');
    writeFileSync(path, lines + readFileSync(path, 'utf8'));
  }
  rmSync(outDir, { recursive: true, force: true });
  renameSync(staging, outDir);
  return outDir;
}

/** Everything package.json's "exports" and "bin" point at, in `outDir` (default dist/). */
export async function buildPackage(outDir = join(ROOT, 'dist')) {
  return Promise.all([
    bundle('src/index.ts', join(outDir, 'silo-webgpu.js'), 'browser'),
    bundle('src/node.ts', join(outDir, 'silo-webgpu-node.js'), 'node'),
    bundle('src/cli/silo.ts', join(outDir, 'silo.mjs'), 'node'),
    declarations(join(outDir, 'types')),
  ]);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [entry, outfile, platform] = process.argv.slice(2);
  if (entry) {
    console.log(`built ${await bundle(entry, outfile, platform)}`);
  } else {
    for (const out of await buildPackage()) {
      const kib = out.endsWith('types') ? '' : ` (${Math.round(statSync(out).size / 1024)} KiB)`;
      console.log(`built ${relative(process.cwd(), out) || out}${kib}`);
    }
  }
}
