// Benchmark plumbing: median wall time of a recorded program (submit -> GPU done), table printing and
// JSON results. Timings are medians after a warm-up run that compiles the pipelines.

import type { Engine } from '../src/engine/device.js';
import { Recorder } from '../src/engine/recorder.js';
import type { Tensor } from '../src/engine/tensor.js';

export interface Timing {
  medianMs: number;
  minMs: number;
  reps: number;
}

export interface TimeOptions {
  minReps?: number;
  maxReps?: number;
  /** Stop adding repetitions once this much time was spent measuring. */
  budgetMs?: number;
}

/** Times `record` (which records one program's dispatches and returns tensors to dispose). */
export async function timeProgram(
  engine: Engine,
  name: string,
  record: (rec: Recorder) => Tensor | Tensor[] | void,
  opts: TimeOptions = {},
): Promise<Timing> {
  const { minReps = 3, maxReps = 15, budgetMs = 3000 } = opts;
  const once = async (): Promise<number> => {
    const rec = new Recorder(engine, name);
    let out: Tensor | Tensor[] | void;
    try {
      out = record(rec);
    } catch (e) {
      rec.abort();
      throw e;
    }
    await engine.queue.onSubmittedWorkDone(); // nothing else in flight
    const t0 = performance.now();
    await rec.submit({ wait: true });
    const ms = performance.now() - t0;
    for (const t of Array.isArray(out) ? out : out ? [out] : []) t.dispose();
    return ms;
  };
  await once(); // warm-up: pipeline compilation, first-use JIT
  const times: number[] = [];
  const start = performance.now();
  while (times.length < maxReps && (times.length < minReps || performance.now() - start < budgetMs)) {
    times.push(await once());
  }
  times.sort((a, b) => a - b);
  const mid = times.length >> 1;
  const medianMs = times.length % 2 ? times[mid]! : (times[mid - 1]! + times[mid]!) / 2;
  return { medianMs, minMs: times[0]!, reps: times.length };
}

export interface Row {
  [column: string]: string | number | null;
}

export interface OpKindTime {
  kind: string;
  dispatches: number;
  gpuMs: number;
  /** Share of the profiled total, in per cent. */
  percent: number;
}

/** Sub-dispatch names the ops append to their own name (a transposed copy, each gradient, a reduction). */
const HELPER_SEGMENTS = new Set(['transpose_b', 'x', 'weight', 'bias', 'a', 'b', 'a_sum', 'b_sum']);

/**
 * GPU time of a profiled program by kind of op: the last segment of each op path
 * ("unet/up_blocks.1/resnets.0/conv2d" -> conv2d), with a helper dispatch kept beside its op
 * ("…/ff/linear/transpose_b" -> linear/transpose_b, "…/conv2d_backward/x" -> conv2d_backward/x),
 * largest first. Ops without a timestamp count 0.
 */
export function opKindBreakdown(ops: Record<string, { dispatches: number; gpuNs: number }>): OpKindTime[] {
  const kinds = new Map<string, { dispatches: number; ns: number }>();
  for (const [path, s] of Object.entries(ops)) {
    const parts = path.split('/');
    const last = parts[parts.length - 1]!;
    const kind = HELPER_SEGMENTS.has(last) && parts.length > 1 ? `${parts[parts.length - 2]}/${last}` : last;
    const k = kinds.get(kind) ?? { dispatches: 0, ns: 0 };
    k.dispatches += s.dispatches;
    k.ns += s.gpuNs;
    kinds.set(kind, k);
  }
  const total = [...kinds.values()].reduce((t, k) => t + k.ns, 0);
  return [...kinds.entries()]
    .map(([kind, k]) => ({ kind, dispatches: k.dispatches, gpuMs: k.ns / 1e6, percent: total > 0 ? (100 * k.ns) / total : 0 }))
    .sort((a, b) => b.gpuMs - a.gpuMs || (a.kind < b.kind ? -1 : 1));
}

/** Prints the `top` largest kinds of a breakdown as a table. */
export function printOpKinds(title: string, kinds: readonly OpKindTime[], top: number): void {
  printTable(title, kinds.slice(0, top).map((k) => ({ 'op kind': k.kind, dispatches: String(k.dispatches), 'GPU ms': k.gpuMs, '%': k.percent })));
}

export function printTable(title: string, rows: Row[]): void {
  if (!rows.length) return;
  const cols = Object.keys(rows[0]!);
  const fmt = (v: string | number | null) =>
    v === null ? '-' : typeof v === 'number' ? (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3)) : v;
  const cells = rows.map((r) => cols.map((c) => fmt(r[c] ?? null)));
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (vals: string[]) => vals.map((v, i) => (i === 0 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join('  ');
  console.log(`\n${title}`);
  console.log(line(cols));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of cells) console.log(line(r));
}

export function randomArray(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 4294967296 - 0.5;
  }
  return out;
}
