// `npm run silo -- <command> ...`: bundles the CLI for Node and runs it (the same file as `npm run build`'s dist/silo.mjs).
// The CLI runs as a child that this script waits for: SIGINT, SIGTERM and SIGHUP are passed on to it
// (so Ctrl-C stops the run instead of leaving it in the background) and we exit with its status.
// The child gets its own process group, so a terminal's Ctrl-C reaches it once, through us; npm also
// forwards the Ctrl-C it receives, so the same signal arriving twice within DEDUPE_MS counts once
// (the CLI treats a second Ctrl-C as "exit now").
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { bundle } from './build.mjs';

const DEDUPE_MS = 300;

// SILO_CLI_ENTRY runs another built file instead of bundling (tests use it to run a stand-in child).
const out = process.env.SILO_CLI_ENTRY ?? (await bundle('src/cli/silo.ts', 'dist/silo.mjs', 'node'));
const child = spawn(process.execPath, [out, ...process.argv.slice(2)], { stdio: 'inherit', detached: true });

const lastSent = new Map();
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    const now = Date.now();
    if (now - (lastSent.get(signal) ?? -Infinity) < DEDUPE_MS) return;
    lastSent.set(signal, now);
    try {
      child.kill(signal);
    } catch {
      // already exited
    }
  });
}

child.on('error', (e) => {
  console.error(`silo: cannot start ${out}: ${e.message}`);
  process.exit(1);
});
child.on('exit', (code, signal) => {
  // A child killed by a signal exits the shell way: 128 + its number (130 for SIGINT, 143 for SIGTERM).
  process.exit(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : 1));
});
