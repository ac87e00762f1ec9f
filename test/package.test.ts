// The published package: `npm pack` of this repo holds the browser bundle, the Node entry, the bin and
// the .d.ts files and nothing from tests, benchmarks or data; installed into a scratch project it is
// imported through its "exports" map, runs a matmul on the adapter VK_ICD_FILENAMES selects, runs
// `silo --help` with no build step, and typechecks as a Node and as a browser (bundler) consumer.
// The same tarball in headless Chromium: test/browser/package.test.ts.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { DIST_DECOYS, EXPECTED, MATMUL, ROOT, linkFromRepo, packAndInstall, readJson, run, type PackedPackage } from './helpers/packed-package.js';

let pkg: PackedPackage;
beforeAll(async () => {
  pkg = await packAndInstall();
}, 180_000);
afterAll(() => pkg?.cleanup());


/** Every path package.json points at (exports, main, module, types, bin), relative, without ./ */
function pointedAt(manifest: Record<string, unknown>): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (typeof v === 'string') out.push(v.replace(/^\.\//, ''));
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk([manifest['exports'], manifest['main'], manifest['module'], manifest['types'], manifest['bin']]);
  return [...new Set(out)];
}

describe('npm pack', () => {
  it('holds the browser bundle, the Node entry, the bin, the CLI and the declarations', () => {
    const kib = (b: number) => `${(b / 1024).toFixed(0)} KiB`;
    console.log(`[package] ${pkg.tarball.split('/').pop()}: ${pkg.files.length} files, ${kib(pkg.packedBytes)} packed, ${kib(pkg.unpackedBytes)} unpacked`);
    for (const f of ['package.json', 'README.md', 'bin/silo.mjs', 'dist/silo-webgpu.js', 'dist/silo-webgpu-node.js', 'dist/silo.mjs', 'dist/types/index.d.ts', 'dist/types/node.d.ts']) {
      expect(pkg.files, f).toContain(f);
    }
    const manifest = readJson(join(pkg.installed, 'package.json'));
    const targets = pointedAt(manifest);
    expect(targets).toEqual(expect.arrayContaining(['dist/silo-webgpu.js', 'dist/silo-webgpu-node.js', 'dist/types/index.d.ts', 'bin/silo.mjs']));
    for (const t of targets) expect(pkg.files, `package.json points at ${t}`).toContain(t);
  });

  it('holds no tests, sources, benchmarks, results, test data or stray dist/ files', () => {
    const stray = pkg.files.filter(
      (f) =>
        /^(test|bench|src|kernels|scripts|docs|web|\.ci|node_modules)\//.test(f) ||
        /\.(safetensors|pt|pth|ckpt|bin|png|jpe?g|npy|zip|tgz|log|tmp)$/.test(f) ||
        (f.endsWith('.json') && f !== 'package.json') ||
        DIST_DECOYS.includes(f),
    );
    expect(stray).toEqual([]);
    // Only the bundles, their maps, the declarations and the launcher: nothing else can sneak in.
    expect(pkg.files.filter((f) => !/^(dist\/[\w.-]+\.(js|mjs|js\.map)|dist\/types\/.+\.d\.ts|bin\/silo\.mjs|package\.json|README\.md|LICENSE(\.md)?)$/.test(f))).toEqual([]);
  });

  it('the declarations carry no .wgsl module and name where the WebGPU types come from', () => {
    const dts = pkg.files.filter((f) => f.endsWith('.d.ts'));
    expect(dts.length).toBeGreaterThan(10);
    const r = run('grep', ['-rlE', String.raw`\.wgsl['"]`, join(pkg.installed, 'dist/types')]);
    expect(r.stdout).toBe('');
    expect(r.status, r.stderr).toBe(1); // grep: searched, nothing found
    expect(run('head', ['-1', join(pkg.installed, 'dist/types/index.d.ts')]).stdout).toMatch(/reference types="@webgpu\/types"/);
  });
});

describe('installed in a scratch project (Node)', () => {
  it('without the optional peer "webgpu", Engine.create() is a SiloError saying how to install it', () => {
    // Runs before webgpu is linked into the scratch project (tests in a file run in order).
    expect(existsSync(join(pkg.project, 'node_modules', 'webgpu'))).toBe(false);
    const script = join(pkg.project, 'missing.mjs');
    writeFileSync(
      script,
      `import { Engine, SiloError } from 'silo-webgpu';
try { await Engine.create(); console.log('created'); } catch (e) { console.log(JSON.stringify({ silo: e instanceof SiloError, name: e.name, message: e.message })); }`,
    );
    const r = run(process.execPath, [script], { cwd: pkg.project });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { silo: boolean; name: string; message: string };
    expect(out.silo).toBe(true);
    expect(out.name).toBe('LimitError');
    expect(out.message).toMatch(/needs the npm package "webgpu".*not installed: run `npm install webgpu`/);
  });

  it('import resolves the Node entry through "exports" and runs a matmul on the selected adapter', () => {
    linkFromRepo(pkg.project, ['webgpu', '@webgpu/types', '@types/node']);
    const script = join(pkg.project, 'run.mjs');
    writeFileSync(
      script,
      `import { Engine, runProgram, matmul, dirFolder, readSafetensorsFile } from 'silo-webgpu';
${MATMUL}
console.log(JSON.stringify({ resolved: import.meta.resolve('silo-webgpu'), summary, y, nodeHelpers: [typeof dirFolder, typeof readSafetensorsFile] }));`,
    );
    const r = run(process.execPath, [script], { cwd: pkg.project, env: process.env });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { resolved: string; summary: string; y: number[]; nodeHelpers: string[] };
    console.log(`[package] node: ${out.summary}`);
    expect(out.resolved).toBe(`file://${pkg.installed}/dist/silo-webgpu-node.js`);
    expect(out.nodeHelpers).toEqual(['function', 'function']);
    expect(out.y).toEqual(EXPECTED);
    const icd = process.env['VK_ICD_FILENAMES'] ?? '';
    if (icd.includes('lvp')) expect(out.summary).toMatch(/llvmpipe|lavapipe|mesa/i);
    if (icd.includes('swiftshader')) expect(out.summary).toMatch(/swiftshader/i);
  });

  it('require() gets the same Node entry (Node >= 20.19 loads ES modules synchronously)', () => {
    const r = run(process.execPath, ['-e', "const m = require('silo-webgpu'); console.log(typeof m.Engine.create, typeof m.dirFolder)"], { cwd: pkg.project });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('function function\n');
  });

  it('node_modules/.bin/silo --help exits 0 with no build step', () => {
    const r = run(join(pkg.project, 'node_modules/.bin/silo'), ['--help'], { cwd: pkg.project });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: silo <command>/);
    expect(r.stdout).toMatch(/restore/);
  });

  it('a bundler targeting the browser picks the browser bundle', async () => {
    const entry = join(pkg.project, 'page-entry.js');
    writeFileSync(entry, `import { Engine } from 'silo-webgpu';\nexport { Engine };\n`);
    const r = await build({ entryPoints: [entry], bundle: true, format: 'esm', platform: 'browser', write: false, metafile: true, logLevel: 'silent', absWorkingDir: pkg.project });
    const inputs = Object.keys(r.metafile.inputs);
    expect(inputs).toContain('node_modules/silo-webgpu/dist/silo-webgpu.js');
    expect(inputs.some((i) => i.includes('silo-webgpu-node'))).toBe(false);
  });

  it('TypeScript consumers typecheck against the declarations (Node: nodenext; browser: bundler)', () => {
    const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
    const compilerOptions = { strict: true, noEmit: true, skipLibCheck: false, target: 'es2022', lib: ['es2022', 'dom'] };
    // The wrong assignments prove the types are real (not any): each @ts-expect-error must find its error.
    writeFileSync(
      join(pkg.project, 'node-app.ts'),
      `import { Engine, runProgram, matmul, dirFolder, SiloError, type Tensor } from 'silo-webgpu';
export async function go(): Promise<number[]> {
  const engine: Engine = await Engine.create({ log: (l: string) => console.log(l) });
  const a: Tensor = engine.tensor([1, 2], [1, 2]);
  const { result } = await runProgram(engine, 'x', (rec) => matmul(rec, a, engine.tensor([3, 4], [2, 1])));
  const folder = dirFolder('/tmp');
  console.log(folder.location, new SiloError('x').message);
  // @ts-expect-error summary() returns a string
  const n: number = engine.summary();
  const device: GPUDevice = engine.device;
  return [...(await result.read())].concat(n, device.limits.maxBufferSize);
}
`,
    );
    writeFileSync(
      join(pkg.project, 'browser-app.ts'),
      `import { Engine, matmul } from 'silo-webgpu';
// @ts-expect-error the browser entry has no Node file helpers
import { dirFolder } from 'silo-webgpu';
export async function go(): Promise<string> {
  const engine = await Engine.create();
  // @ts-expect-error matmul takes a Recorder first
  matmul(engine, engine.tensor([1], [1, 1]), engine.tensor([1], [1, 1]));
  return engine.summary() + String(dirFolder);
}
`,
    );
    const configs = {
      'tsconfig.node.json': { compilerOptions: { ...compilerOptions, module: 'nodenext', moduleResolution: 'nodenext', types: ['node'] }, files: ['node-app.ts'] },
      // No @types/node: the browser declarations must not need Node's types.
      'tsconfig.browser.json': { compilerOptions: { ...compilerOptions, module: 'esnext', moduleResolution: 'bundler', types: [] }, files: ['browser-app.ts'] },
    };
    for (const [name, config] of Object.entries(configs)) {
      writeFileSync(join(pkg.project, name), JSON.stringify(config));
      const r = run(process.execPath, [tsc, '-p', name], { cwd: pkg.project });
      expect(r.stdout + r.stderr, name).toBe('');
      expect(r.status, name).toBe(0);
    }
  });
});
