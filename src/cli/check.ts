// `silo check <case-dir>...`: runs golden case folders (../shared/golden format) through the same
// runners the test suite uses and prints, per output tensor, the max absolute and relative error and
// pass/fail against the case's tolerance.

import { Engine } from '../engine/device.js';
import { dirFolder } from '../formats/folder-node.js';
import { SiloError } from '../engine/errors.js';
import { compare, type CheckResult } from '../check/compare.js';
import { RUNNERS, PENDING_CASES, detectKind } from '../check/registry.js';
import type { CliIO } from './silo.js';

export interface CheckOptions {
  dtype?: 'f32' | 'f16';
  /** Force the runner instead of detecting it from the folder. */
  kind?: string;
  verbose?: boolean;
}

export interface CaseOutcome {
  dir: string;
  kind: string;
  results: CheckResult[];
  pass: boolean;
}

const fmt = (v: number) => (Number.isFinite(v) ? v.toExponential(2) : String(v));

export async function checkCase(engine: Engine, dir: string, opts: CheckOptions, io: CliIO): Promise<CaseOutcome> {
  const files = dirFolder(dir);
  if (!(await files.exists('manifest.json'))) throw new SiloError(`${dir}: not a golden case folder (no manifest.json)`);
  let manifest: Record<string, unknown>;
  try {
    manifest = JSON.parse(await files.text('manifest.json')) as Record<string, unknown>;
  } catch (e) {
    throw new SiloError(`${dir}/manifest.json: not valid JSON (${(e as Error).message})`);
  }
  const kind = opts.kind ?? (await detectKind(files, manifest));
  if (!kind) throw new SiloError(`${dir}: cannot tell which module this case tests (use --kind ${Object.keys(RUNNERS).join('|')})`);
  if (PENDING_CASES[kind]) throw new SiloError(`${dir}: ${PENDING_CASES[kind]} is not implemented yet`);
  const runner = RUNNERS[kind];
  if (!runner) throw new SiloError(`${dir}: unknown case kind "${kind}" (known: ${Object.keys(RUNNERS).join(', ')})`);
  io.out(`${dir} (${kind}, ${opts.dtype ?? 'f32'})`);
  const t0 = performance.now();
  const items = await runner(engine, files, manifest, { dtype: opts.dtype, log: opts.verbose ? (l) => io.out(`  ${l}`) : undefined });
  const results = items.map(compare);
  const width = Math.max(...results.map((r) => r.name.length), 4);
  for (const r of results) {
    io.out(
      `  ${r.pass ? 'ok  ' : 'FAIL'}  ${r.name.padEnd(width)}  max abs ${fmt(r.maxAbs)}  max rel ${fmt(r.maxRel)}  relL2 ${fmt(r.relL2)}  [${r.rule}]` +
        (r.pass ? '' : `\n        ${r.detail}`),
    );
  }
  const passed = results.filter((r) => r.pass).length;
  const pass = results.length > 0 && passed === results.length;
  io.out(`  ${passed} of ${results.length} tensors pass (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  return { dir, kind, results, pass };
}

export async function runCheck(dirs: string[], opts: CheckOptions, io: CliIO): Promise<number> {
  const engine = await Engine.create();
  io.out(engine.summary());
  let failed = 0;
  try {
    for (const dir of dirs) {
      try {
        const o = await checkCase(engine, dir.replace(/\/+$/, ''), opts, io);
        if (!o.pass) failed++;
      } catch (e) {
        failed++;
        io.err(`${dir}: ${(e as Error).message}`);
      }
    }
  } finally {
    engine.destroy();
  }
  io.out(failed ? `${failed} of ${dirs.length} case(s) FAILED` : `all ${dirs.length} case(s) pass`);
  return failed ? 1 : 0;
}
