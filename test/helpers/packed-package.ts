// Packs silo-webgpu the way `npm publish` would and installs the tarball into a scratch project, all
// in a temp folder and without network. The repo's own `files` whitelist chooses what is packed
// (`npm pack --dry-run` in the repo); dist/ is built fresh into a staging copy, so the test never
// rewrites the worktree's dist/. Files that land in dist/ but must not ship (the benchmark and
// test-page bundles) are planted there first, so the whitelist is tested against them too.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
// @ts-expect-error plain ESM script without types
import { buildPackage } from '../../scripts/build.mjs';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
/** Built into dist/ by other scripts (bench, test pages); never part of the package. */
export const DIST_DECOYS = ['dist/bench.mjs', 'dist/bench.mjs.map', 'dist/page.js'];

// [[1, 2, 3], [4, 5, 6]] x [[7, 8], [9, 10], [11, 12]], by hand: 1*7+2*9+3*11 = 58, 1*8+2*10+3*12 = 64,
// 4*7+5*9+6*11 = 139, 4*8+5*10+6*12 = 154.
/** The tiny op both consumers run (a script body: Engine, runProgram and matmul in scope). */
export const MATMUL = `
const engine = await Engine.create();
const a = engine.tensor([1, 2, 3, 4, 5, 6], [2, 3]);
const b = engine.tensor([7, 8, 9, 10, 11, 12], [3, 2]);
const { result } = await runProgram(engine, 'package-test', (rec) => matmul(rec, a, b));
const y = [...(await result.read())];
const summary = engine.summary();
engine.destroy();
`;
export const EXPECTED = [58, 64, 139, 154];

export interface PackedPackage {
  tmp: string;
  tarball: string;
  /** Paths inside the tarball (without the leading package/). */
  files: string[];
  packedBytes: number;
  unpackedBytes: number;
  /** The scratch project with the tarball installed in node_modules/silo-webgpu. */
  project: string;
  /** The installed package's folder. */
  installed: string;
  cleanup(): void;
}

export function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000, ...opts });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

function mustRun(cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const r = run(cmd, args, opts);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

// npm must not reach a registry, and gets its own cache so the user's is neither read nor written.
const npmEnv = (tmp: string) => ({
  ...process.env,
  npm_config_offline: 'true',
  npm_config_cache: join(tmp, 'npm-cache'),
  npm_config_audit: 'false',
  npm_config_fund: 'false',
  npm_config_update_notifier: 'false',
});

export async function packAndInstall(): Promise<PackedPackage> {
  const tmp = mkdtempSync(join(tmpdir(), 'silo-pack-'));
  const NPM_ENV = npmEnv(tmp);
  try {
    const stage = join(tmp, 'stage');
    const listed = JSON.parse(mustRun('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, env: NPM_ENV })) as [{ files: { path: string }[] }];
    for (const { path } of listed[0].files) {
      if (path.startsWith('dist/')) continue; // built below, whatever state the worktree's dist/ is in
      mkdirSync(dirname(join(stage, path)), { recursive: true });
      cpSync(join(ROOT, path), join(stage, path));
    }
    for (const decoy of DIST_DECOYS) {
      mkdirSync(dirname(join(stage, decoy)), { recursive: true });
      writeFileSync(join(stage, decoy), '// must not be packed\n');
    }
    await buildPackage(join(stage, 'dist'));
    const packed = JSON.parse(mustRun('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', tmp], { cwd: stage, env: NPM_ENV })) as [
      { filename: string; size: number; unpackedSize: number },
    ];
    const tarball = join(tmp, packed[0].filename);
    const files = mustRun('tar', ['-tzf', tarball])
      .split('\n')
      .filter(Boolean)
      .map((p) => p.replace(/^package\//, ''));

    const project = join(tmp, 'app');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'scratch-app', version: '1.0.0', private: true, type: 'module' }));
    // Scripts are not ignored: installing the tarball must not need a build step or the network.
    mustRun('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], { cwd: project, env: NPM_ENV });
    return {
      tmp,
      tarball,
      files,
      packedBytes: packed[0].size,
      unpackedBytes: packed[0].unpackedSize,
      project,
      installed: join(project, 'node_modules', 'silo-webgpu'),
      cleanup: () => rmSync(tmp, { recursive: true, force: true }),
    };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Links packages from the repo's node_modules into the scratch project (what `npm install webgpu` would add). */
export function linkFromRepo(project: string, names: string[]): void {
  for (const name of names) {
    const target = join(ROOT, 'node_modules', name);
    statSync(target); // a missing package is an error here, not a confusing failure later
    mkdirSync(dirname(join(project, 'node_modules', name)), { recursive: true });
    symlinkSync(target, join(project, 'node_modules', name), 'dir');
  }
}

export function readJson(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
}
