// What the command line shows while it works: the sampling progress bar and download progress. On a
// terminal one line is redrawn; otherwise (logs, CI) plain lines are printed at intervals.

import { formatDownloadProgress, type FileProgress } from '../hub/progress-text.js';
import type { CliIO } from './silo.js';

export function fmtTime(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** A progress bar on a terminal (\r redraws), plain lines every ~10 % otherwise. */
export function progressPrinter(io: CliIO, quiet: boolean) {
  const tty = !!process.stderr.isTTY;
  let lastPct = -1;
  return (p: { step: number; total: number; t: number; elapsedMs: number; residual?: number }) => {
    if (quiet) return;
    const eta = (p.elapsedMs / p.step) * (p.total - p.step);
    const res = p.residual !== undefined ? `, residual ${p.residual.toPrecision(4)}` : '';
    const pct = Math.floor((100 * p.step) / p.total);
    if (tty) {
      const width = 30;
      const fill = Math.round((width * p.step) / p.total);
      process.stderr.write(`\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${p.step}/${p.total} t=${p.t} ${fmtTime(p.elapsedMs)} elapsed, ETA ${fmtTime(eta)}${res}   `);
      if (p.step === p.total) process.stderr.write('\n');
    } else if (pct >= lastPct + 10 || p.step === p.total || p.step === 1) {
      lastPct = pct;
      io.err(`step ${p.step}/${p.total} (t=${p.t}) ${fmtTime(p.elapsedMs)} elapsed, ETA ${fmtTime(eta)}${res}`);
    }
  };
}

/** Download progress: a redrawn line on a terminal, else a line per file at its end. */
export function downloadPrinter(io: CliIO, quiet: boolean) {
  const tty = !!process.stderr.isTTY;
  return (p: FileProgress) => {
    if (quiet) return;
    const end = p.total !== null && p.bytes === p.total;
    if (tty) process.stderr.write(`\r${formatDownloadProgress(p)}   ${end ? '\n' : ''}`);
    else if (end) io.err(formatDownloadProgress(p));
  };
}
