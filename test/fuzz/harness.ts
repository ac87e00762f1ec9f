// Runs fuzz cases in a child process with a per-case time guard: a case that does not finish in time
// (a synchronous loop cannot be interrupted from inside) gets its process killed, is recorded as a
// hang with its seed and mutation, and the remaining seeds go on in a fresh process. The child also
// runs under a heap limit, so a runaway structure ends as an out-of-memory failure of that case. A
// process (not a worker thread) so that its peak RSS, which the huge-allocation check reads, is its
// own and not that of the test runner, whose earlier tests may already have raised it.
import { mkdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fork } from 'node:child_process';
import { build } from 'esbuild';
import type { FuzzFormat, WorkerIn, WorkerOut } from './protocol.js';

export interface CaseFailure {
  seed: number;
  what: string;
  outcome: string;
}

export interface FuzzSummary {
  format: FuzzFormat;
  cases: number;
  ok: number;
  /** SiloError subclass name -> count. */
  errors: Map<string, number>;
  failures: CaseFailure[];
  /** With verbose: SiloError messages (numbers blanked) -> count. */
  details: Map<string, number>;
}

const HERE = fileURLToPath(new URL('.', import.meta.url));
let bundle: Promise<string> | null = null;

/** The worker as one ESM file (our TypeScript sources compiled by esbuild), next to node_modules so packages resolve. */
export function workerBundle(): Promise<string> {
  bundle ??= (async () => {
    const dir = fileURLToPath(new URL('../../node_modules/.cache/silo-fuzz/', import.meta.url));
    mkdirSync(dir, { recursive: true });
    const outfile = `${dir}worker-${process.pid}.mjs`;
    await build({ entryPoints: [`${HERE}worker.ts`], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile, packages: 'external', loader: { '.wgsl': 'text' }, logLevel: 'silent' });
    return outfile;
  })();
  return bundle;
}

/** Deletes this process's worker bundle. */
export async function removeWorkerBundle(): Promise<void> {
  if (!bundle) return;
  const file = await bundle.catch(() => null);
  bundle = null;
  if (file) rmSync(file, { force: true });
}

export async function runFuzz(format: FuzzFormat, bases: WorkerIn['bases'], seeds: number[], guardMs: number, hugeBytes?: number, verbose = false): Promise<FuzzSummary> {
  const file = await workerBundle();
  const summary: FuzzSummary = { format, cases: 0, ok: 0, errors: new Map(), failures: [], details: new Map() };
  let remaining = seeds.slice();
  while (remaining.length) {
    remaining = await new Promise<number[]>((resolve) => {
      const input: WorkerIn = { format, bases, seeds: remaining, hugeBytes, verbose };
      const worker = fork(file, [], { execArgv: ['--max-old-space-size=512'], serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      worker.send(input);
      let current: { seed: number; what: string; since: number } | null = null;
      let settled = false;
      let ended = false;
      const stop = (failure: string | null) => {
        if (settled) return;
        settled = true;
        clearInterval(timer);
        let rest: number[] = [];
        if (current && failure) {
          summary.cases++;
          summary.failures.push({ seed: current.seed, what: current.what, outcome: failure });
          rest = remaining.slice(remaining.indexOf(current.seed) + 1);
        } else if (failure) {
          // Died outside any case (could not start): a failure too, never a silent stop.
          summary.failures.push({ seed: -1, what: '(worker, outside any case)', outcome: failure });
        }
        if (worker.exitCode === null && worker.signalCode === null) {
          worker.once('exit', () => resolve(rest));
          worker.kill('SIGKILL');
        } else resolve(rest);
      };
      const timer = setInterval(() => {
        if (current && performance.now() - current.since > guardMs) stop(`hang: no result after ${guardMs} ms`);
      }, 100);
      worker.on('message', (msg) => {
        const m = msg as WorkerOut;
        if (m.t === 'start') current = { seed: m.seed, what: m.what, since: performance.now() };
        else if (m.t === 'done') {
          summary.cases++;
          if (m.failure) summary.failures.push({ seed: m.seed, what: current?.what ?? '?', outcome: m.outcome });
          else if (m.outcome === 'ok') summary.ok++;
          else summary.errors.set(m.outcome, (summary.errors.get(m.outcome) ?? 0) + 1);
          if (m.detail) {
            const key = m.detail.replace(/\d+/g, 'N').slice(0, 140);
            summary.details.set(key, (summary.details.get(key) ?? 0) + 1);
          }
          current = null;
        } else {
          ended = true;
          stop(null);
        }
      });
      worker.on('error', (e: Error) => stop(`worker died: ${e.message}`));
      // Exiting before 'end' with nothing left to run means a promise that never settles: a hang too.
      worker.on('exit', (code, signal) =>
        stop(ended ? null : code === 0 ? 'hang: the case returned a promise that never settles' : `worker exited with ${signal ?? `code ${code}`}`),
      );
    });
  }
  return summary;
}

export function summaryLine(s: FuzzSummary): string {
  const errs = [...s.errors].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ');
  return `fuzz ${s.format}: ${s.cases} cases, ${s.ok} ok, ${s.cases - s.ok - s.failures.length} SiloErrors (${errs || 'none'}), ${s.failures.length} failures`;
}
