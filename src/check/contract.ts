// What a golden case runner takes from its folder, stated up front so that nothing a case stores or
// names is silently ignored: every golden tensor must be one the runner reads (an input) or compares
// (an output), every manifest key must be a choice the runner reads or a known description
// (provenance, statistics, tolerances), the manifest's tensor table must match the file, and every
// seed must belong to a stored tensor (the runner cannot redraw torch's random numbers).

import { SiloError } from '../engine/errors.js';
import { shapeString } from '../engine/dtype.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import type { CaseFiles } from './files.js';
import type { CheckItem } from './compare.js';

/** A case that names an input or a choice its runner does not understand, or contradicts itself. */
export class CaseError extends SiloError {}

type Json = Record<string, unknown>;

/** Manifest keys that only describe a case: never a choice a runner must act on. */
const DESCRIPTIVE = new Set([
  'case',
  'variant',
  'files',
  'what',
  'reference',
  'versions',
  'computed_in',
  'stats',
  'suggested_tolerance',
  'notes',
  'weights_file',
  'weights_sha256',
  'weights_init',
  'weights_numel',
  'config_file',
  'tensors',
  'debug_tensors',
]);

export interface CaseContract {
  /** The runner's name, for messages. */
  runner: string;
  /** Golden tensor names it reads or compares (a string is an exact name). */
  tensors: ReadonlyArray<TensorPattern>;
  /** Keys of the manifest's `files` map it reads (or knows to be copies of what it reads). */
  files: readonly string[];
  /** Manifest keys whose values it reads. */
  choices: readonly string[];
  /** Further manifest keys that describe this kind of case (text, statistics). */
  described?: readonly string[];
  /** Seed keys that belong to the weights' provenance, not to a stored tensor. */
  weightSeeds?: readonly string[];
}

/** An error naming the case folder and the key. */
export function caseError(files: CaseFiles, key: string, detail: string): CaseError {
  return new CaseError(`${files.location}: ${key}: ${detail}`);
}

const DTYPES: Record<string, string> = {
  float32: 'F32',
  float64: 'F64',
  float16: 'F16',
  bfloat16: 'BF16',
  int64: 'I64',
  int32: 'I32',
  uint8: 'U8',
  bool: 'BOOL',
};

/** An exact name, a pattern or a predicate. */
export type TensorPattern = string | RegExp | ((name: string) => boolean);

function matches(name: string, patterns: ReadonlyArray<TensorPattern>): boolean {
  return patterns.some((p) => (typeof p === 'string' ? p === name : p instanceof RegExp ? p.test(name) : p(name)));
}

/** A seed key belongs to a stored tensor named `k`, `input.k` (or with `XX` for any two digits). */
function seedTensorStored(golden: SafetensorsFile, key: string, prefix: string): boolean {
  const re = new RegExp(`^${prefix.replace(/\./g, '\\.')}(input\\.)?${key.replace(/^input\./, '').replace(/\./g, '\\.').replace(/XX/g, '\\d\\d')}$`);
  const bare = new RegExp(`^${prefix.replace(/\./g, '\\.')}${key.replace(/\./g, '\\.').replace(/XX/g, '\\d\\d')}$`);
  return golden.names().some((n) => re.test(n) || bare.test(n));
}

/**
 * Seeds say how stored tensors were drawn; one for a tensor the case does not store would have to be
 * redrawn with torch's generator, which no runner does.
 */
export function checkSeeds(files: CaseFiles, golden: SafetensorsFile, key: string, seeds: unknown, prefix: string, weightSeeds: readonly string[]): void {
  if (seeds === undefined) return;
  if (typeof seeds === 'number') {
    if (weightSeeds.includes(key)) return;
    throw caseError(files, `manifest.json ${key}`, 'a seed the runner cannot use (only stored tensors are inputs)');
  }
  if (!seeds || typeof seeds !== 'object' || Array.isArray(seeds)) throw caseError(files, `manifest.json ${key}`, 'must be an object of seeds');
  for (const [k, v] of Object.entries(seeds as Json)) {
    if (k === 'note' || weightSeeds.includes(k)) continue;
    if (typeof v !== 'number' && typeof v !== 'string') throw caseError(files, `manifest.json ${key}.${k}`, `not a seed: ${JSON.stringify(v)}`);
    if (!seedTensorStored(golden, k, prefix)) {
      throw caseError(files, `manifest.json ${key}.${k}`, `a seed for a tensor the golden file does not store; the runner uses stored tensors only and cannot redraw torch's random numbers`);
    }
  }
}

/**
 * Refuses anything in the case the runner would ignore: unknown manifest keys, golden tensors it does not
 * read or compare, a tensor table that disagrees with the file, seeds for tensors that are not stored.
 */
export function enforceContract(files: CaseFiles, manifest: Json, golden: SafetensorsFile, contract: CaseContract): void {
  // Seeds are read below: each must belong to a stored tensor or to the weights.
  const known = new Set([...DESCRIPTIVE, 'seeds', 'input_seeds', 'seed', ...contract.choices, ...(contract.described ?? [])]);
  for (const key of Object.keys(manifest)) {
    if (known.has(key) || key.startsWith('observed_') || key.startsWith('_')) continue;
    throw caseError(files, `manifest.json "${key}"`, `a choice the ${contract.runner} runner does not understand (it reads: ${contract.choices.join(', ') || 'none'}); refusing to run the case without it`);
  }
  const fileMap = manifest['files'];
  if (fileMap !== undefined && (!fileMap || typeof fileMap !== 'object' || Array.isArray(fileMap))) throw caseError(files, 'manifest.json "files"', 'must be an object');
  for (const key of Object.keys((fileMap ?? {}) as Json)) {
    if (!contract.files.includes(key)) {
      throw caseError(files, `manifest.json files.${key}`, `a file the ${contract.runner} runner does not read (it reads: ${contract.files.join(', ')}); refusing to run the case without it`);
    }
  }
  for (const name of golden.names()) {
    if (!matches(name, contract.tensors)) {
      throw caseError(files, `${golden.source.split('/').pop()} tensor "${name}"`, `${name.startsWith('input.') ? 'an input' : 'a tensor'} the ${contract.runner} runner does not understand; refusing to run the case without it`);
    }
  }
  const table = manifest['tensors'];
  if (table !== undefined) {
    if (!table || typeof table !== 'object' || Array.isArray(table)) throw caseError(files, 'manifest.json "tensors"', 'must be an object');
    for (const [name, spec] of Object.entries(table as Record<string, { shape?: unknown; dtype?: unknown }>)) {
      if (!golden.has(name)) throw new CaseError(`${golden.source}: missing tensor "${name}" (listed in ${files.location}/manifest.json "tensors")`);
      const info = golden.info(name);
      if (spec.shape !== undefined && (!Array.isArray(spec.shape) || JSON.stringify(spec.shape) !== JSON.stringify(info.shape))) {
        const want = Array.isArray(spec.shape) ? shapeString(spec.shape as number[]) : JSON.stringify(spec.shape);
        throw new CaseError(`${golden.source}: tensor "${name}" has shape ${shapeString(info.shape)}, expected ${want} (${files.location}/manifest.json "tensors")`);
      }
      if (spec.dtype !== undefined) {
        const want = DTYPES[String(spec.dtype)];
        if (!want) throw caseError(files, `manifest.json tensors."${name}"`, `unknown dtype ${JSON.stringify(spec.dtype)}`);
        if (want !== info.dtype) throw caseError(files, `manifest.json tensors."${name}"`, `dtype ${String(spec.dtype)} but the golden file has ${info.dtype}`);
      }
    }
    for (const name of golden.names()) {
      if (!(name in (table as Json))) throw caseError(files, `golden tensor "${name}"`, 'not listed in manifest.json "tensors"');
    }
  }
  for (const key of ['seeds', 'input_seeds', 'seed']) checkSeeds(files, golden, key, manifest[key], '', contract.weightSeeds ?? []);
}

/** A manifest value that must be present. */
export function required<T = unknown>(files: CaseFiles, manifest: Json, key: string): T {
  if (!(key in manifest)) throw caseError(files, `manifest.json "${key}"`, 'missing');
  return manifest[key] as T;
}

/** Parses `set_timesteps(N)` from a manifest's scheduler description (what SILO's runs choose). */
export function scheduledSteps(files: CaseFiles, manifest: Json): number {
  const text = manifest['scheduler'];
  if (typeof text !== 'string') throw caseError(files, 'manifest.json "scheduler"', 'missing (must name DDPMScheduler and set_timesteps(N))');
  const m = /^DDPMScheduler\.from_config\(SD-1\.5 scheduler config\); set_timesteps\((\d+)\)/.exec(text.trim());
  if (!m) {
    throw caseError(files, 'manifest.json "scheduler"', `${JSON.stringify(text)} is not understood (supported: "DDPMScheduler.from_config(SD-1.5 scheduler config); set_timesteps(N)")`);
  }
  return Number(m[1]);
}

/** Asserts that a number the manifest states agrees with what the runner computes. */
export function expectStated(files: CaseFiles, key: string, stated: unknown, actual: number, rtol = 0): void {
  if (stated === undefined) return;
  if (typeof stated !== 'number' || !(Math.abs(stated - actual) <= rtol * Math.abs(actual))) {
    throw caseError(files, `manifest.json ${key}`, `states ${JSON.stringify(stated)}, but the case's own data give ${actual}`);
  }
}

/**
 * After a run: every golden tensor that is not an input must have been compared (`skipped` names those a
 * run leaves out by design, e.g. gradients in an f16 run, and say so in its log).
 */
export function assertCompared(files: CaseFiles, golden: SafetensorsFile, items: CheckItem[], isInput: (name: string) => boolean, skipped: (name: string) => boolean = () => false): void {
  const compared = new Set(items.map((i) => i.name));
  for (const name of golden.names()) {
    if (isInput(name) || compared.has(name) || skipped(name)) continue;
    throw caseError(files, `golden tensor "${name}"`, 'the runner produced nothing to compare it with');
  }
}

/** Stored inputs: `input.*`, also under a step prefix (`step0.input.z_t`). */
export const isInputName = (name: string): boolean => /(^|\.)input\./.test(name);

const canonical = (v: unknown): unknown =>
  Array.isArray(v) ? v.map(canonical) : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Json)[k])])) : v;

/**
 * A manifest's copy of a config file (the constructor arguments; the file may add the library's defaults)
 * must agree with it on every key it names; otherwise the case is ambiguous.
 */
export function expectSameConfig(files: CaseFiles, key: string, copy: unknown, fileName: string, file: unknown): void {
  if (copy === undefined) return;
  if (!copy || typeof copy !== 'object' || Array.isArray(copy)) throw caseError(files, `manifest.json "${key}"`, 'must be an object');
  const f = (file ?? {}) as Json;
  for (const [k, v] of Object.entries(copy as Json)) {
    if (JSON.stringify(canonical(v)) !== JSON.stringify(canonical(f[k]))) {
      throw caseError(files, `manifest.json ${key}.${k}`, `${JSON.stringify(v)}, but ${fileName} says ${JSON.stringify(f[k])}; the case is ambiguous`);
    }
  }
}
