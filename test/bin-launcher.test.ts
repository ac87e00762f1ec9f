// bin/silo.mjs (package.json "bin") never runs a stale CLI silently. In a clone (src/cli/silo.ts
// present) a missing dist/silo.mjs, or one older than any source, is rebuilt first with a message;
// when it cannot be rebuilt the launcher fails naming the newer file instead of running old code.
// An installed package (no src/) runs dist/silo.mjs as shipped. Each case copies the launcher into
// a temp "package" whose scripts/build.mjs is a stand-in that writes a recognisable CLI.
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const LAUNCHER = fileURLToPath(new URL('../bin/silo.mjs', import.meta.url));

/** A CLI whose main() prints `label` and its arguments and returns 3. */
const cli = (label: string) => `export async function main(args) { console.log(${JSON.stringify(label)} + ' ' + args.join(' ')); return 3; }\n`;
const STAND_IN_BUILD = `import { writeFileSync } from 'node:fs';
export async function bundle(entry, outfile) { writeFileSync(outfile, ${JSON.stringify(cli('rebuilt'))}); return outfile; }
`;

let pkg: string;
beforeEach(() => {
  pkg = mkdtempSync(join(tmpdir(), 'silo-bin-'));
  cpSync(LAUNCHER, join(pkg, 'bin/silo.mjs'));
  mkdirSync(join(pkg, 'dist'));
});
afterEach(() => rmSync(pkg, { recursive: true, force: true }));

function write(path: string, text: string, mtimeSec?: number) {
  mkdirSync(dirname(join(pkg, path)), { recursive: true });
  writeFileSync(join(pkg, path), text);
  if (mtimeSec !== undefined) utimesSync(join(pkg, path), mtimeSec, mtimeSec);
}

function silo(...args: string[]) {
  const r = spawnSync(process.execPath, [join(pkg, 'bin/silo.mjs'), ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const OLD = 1_700_000_000;
const NEW = OLD + 60;

describe('bin/silo.mjs in a clone', () => {
  beforeEach(() => {
    write('src/cli/silo.ts', '// the CLI source', OLD);
    write('kernels/a.wgsl', '// a kernel', OLD);
    write('scripts/build.mjs', STAND_IN_BUILD, OLD);
    write('package.json', '{}', OLD);
  });

  it('runs dist/silo.mjs without rebuilding when it is newer than every source', () => {
    write('dist/silo.mjs', cli('built'), NEW);
    const r = silo('x', 'y');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('built x y\n');
    expect(r.status).toBe(3);
  });

  it('rebuilds a missing dist/silo.mjs and says so', () => {
    const r = silo('--help');
    expect(r.stderr).toBe('silo: dist/silo.mjs is missing; rebuilding it\n');
    expect(r.stdout).toBe('rebuilt --help\n');
    expect(r.status).toBe(3);
  });

  it('rebuilds when a source (here a kernel) is newer than dist/silo.mjs, naming it', () => {
    write('dist/silo.mjs', cli('stale'), NEW);
    write('kernels/a.wgsl', '// edited', NEW + 60);
    const r = silo();
    expect(r.stderr).toBe('silo: kernels/a.wgsl is newer than dist/silo.mjs; rebuilding it\n');
    expect(r.stdout).toBe('rebuilt \n');
  });

  it('refuses to run a stale dist/silo.mjs it cannot rebuild', () => {
    write('dist/silo.mjs', cli('stale'), NEW);
    write('src/engine/x.ts', '// edited', NEW + 60);
    write('scripts/build.mjs', "import 'esbuild-that-is-not-installed';\n", OLD);
    const r = silo();
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^silo: src\/engine\/x\.ts is newer than dist\/silo\.mjs and it cannot be rebuilt here \(.*esbuild-that-is-not-installed.*\); run `npm install`/);
  });
});

describe('bin/silo.mjs in an installed package (no src/)', () => {
  it('runs the shipped dist/silo.mjs as it is, whatever its age', () => {
    write('dist/silo.mjs', cli('shipped'), OLD);
    write('package.json', '{}', NEW);
    const r = silo('--help');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('shipped --help\n');
    expect(r.status).toBe(3);
  });

  it('says the installation is incomplete when dist/silo.mjs is missing', () => {
    const r = silo();
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/dist\/silo\.mjs is missing: this installation of silo-webgpu is incomplete; reinstall the package/);
  });
});
