// Golden cases are read in place from ../shared/golden (never copied into the repo).
import { existsSync, readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { dirCaseFiles } from '../../src/check/files-node.js';
import { compare, type CheckItem } from '../../src/check/compare.js';
import type { CaseFiles } from '../../src/check/files.js';

export const GOLDEN_ROOT = new URL('../../../shared/golden', import.meta.url).pathname;

export function goldenDir(name: string): string {
  const dir = `${GOLDEN_ROOT}/${name}`;
  if (!existsSync(dir)) throw new Error(`golden case ${dir} is missing (../shared/golden must sit beside the repo)`);
  return dir;
}

export function goldenFiles(name: string): CaseFiles {
  return dirCaseFiles(goldenDir(name));
}

export function goldenManifest(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(`${goldenDir(name)}/manifest.json`, 'utf8')) as Record<string, unknown>;
}

/** Asserts every item passes its tolerance, printing one line per tensor. */
export function expectAllPass(items: CheckItem[], what: string): void {
  expect(items.length, `${what}: no outputs were compared`).toBeGreaterThan(0);
  const results = items.map(compare);
  for (const r of results) {
    console.log(`${what} ${r.pass ? 'ok  ' : 'FAIL'} ${r.name}: max abs ${r.maxAbs.toExponential(2)}, max rel ${r.maxRel.toExponential(2)}, relL2 ${r.relL2.toExponential(2)} (${r.rule})`);
  }
  const failed = results.filter((r) => !r.pass);
  expect(failed.map((r) => `${r.name}: ${r.detail}`), `${what}: tensors out of tolerance`).toEqual([]);
}
