// scripts/silo.mjs (`npm run silo`) passes SIGINT / SIGTERM on to the CLI it runs and exits with the
// CLI's status, so Ctrl-C never leaves the CLI running in the background. The child here is a stand-in
// (SILO_CLI_ENTRY) that prints its pid, counts the SIGINTs it gets and exits 130 like the CLI does.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = new URL('..', import.meta.url).pathname;

let tmp: string;
let stub: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'silo-wrapper-'));
  stub = join(tmp, 'stub.mjs');
  writeFileSync(
    stub,
    [
      "import { appendFileSync } from 'node:fs';",
      'const [mode, log] = process.argv.slice(2);',
      "if (mode === 'graceful') process.on('SIGINT', () => { appendFileSync(log, 'SIGINT\\n'); setTimeout(() => process.exit(130), 200); });",
      "if (mode === 'exit3') process.exit(3);",
      'console.log(`ready ${process.pid}`);',
      'setInterval(() => {}, 1000);',
    ].join('\n'),
  );
});
const children: number[] = [];
afterAll(() => {
  // A failing test must not leave its stand-in running.
  for (const pid of children) if (alive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});

function start(args: string[]): { proc: ChildProcess; ready: Promise<number>; done: Promise<number | null> } {
  const proc = spawn(process.execPath, [join(ROOT, 'scripts/silo.mjs'), ...args], { cwd: ROOT, env: { ...process.env, SILO_CLI_ENTRY: stub }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const ready = new Promise<number>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /ready (\d+)/.exec(out);
      if (m) {
        children.push(Number(m[1]));
        resolve(Number(m[1]));
      }
    });
    proc.on('exit', () => reject(new Error(`the wrapper exited before its child was ready: ${out}`)));
  });
  ready.catch(() => undefined); // awaited only where the child is expected to start
  const done = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return { proc, ready, done };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('scripts/silo.mjs', () => {
  it('SIGINT reaches the CLI once (a duplicate from npm within 300 ms is dropped); exit 130, child gone', async () => {
    const log = join(tmp, 'int.log');
    writeFileSync(log, '');
    const { proc, ready, done } = start(['graceful', log]);
    const child = await ready;
    expect(alive(child)).toBe(true);
    // A terminal's Ctrl-C under npm reaches the wrapper twice: from the terminal and forwarded by npm.
    proc.kill('SIGINT');
    proc.kill('SIGINT');
    expect(await done).toBe(130);
    expect(readFileSync(log, 'utf8')).toBe('SIGINT\n');
    expect(alive(child)).toBe(false);
  }, 30_000);

  it('SIGTERM ends the CLI; the wrapper exits 128 + 15', async () => {
    const { proc, ready, done } = start(['plain', join(tmp, 'unused')]);
    const child = await ready;
    proc.kill('SIGTERM');
    expect(await done).toBe(143);
    expect(alive(child)).toBe(false);
  }, 30_000);

  it("exits with the CLI's own status", async () => {
    const { done } = start(['exit3', join(tmp, 'unused')]);
    expect(await done).toBe(3);
  }, 30_000);
});
