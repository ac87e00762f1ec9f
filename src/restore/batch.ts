// Batches: many images restored with the models loaded once. This file is the browser-safe part: the
// item list (a folder's images or a JSON-lines list), output names, shards and the summary. Sharding is
// by position in the sorted list (item k belongs to shard k mod N), so N machines given the same list
// and indices 0..N-1 cover it exactly once, whatever their speed; a rerun skips finished items.

import { SiloError } from '../engine/errors.js';

export class BatchError extends SiloError {}

/** One image of a batch. Paths are as given (the Node runner resolves them against the list's folder). */
export interface BatchItem {
  /** Output stem: <id>.png and <id>.json in the output folder. Unique within the batch. */
  id: string;
  /** The image and what it is: a measurement to restore, or a ground truth to degrade first. */
  path: string;
  as: 'input' | 'ground-truth';
  /** Per-item settings (the batch's otherwise). */
  seed?: number;
  prompt?: string;
}

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg'];

const stemOf = (path: string) => {
  const name = path.slice(path.lastIndexOf('/') + 1);
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(0, dot) : name;
};

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function checkIds(items: BatchItem[], source: string): BatchItem[] {
  const seen = new Map<string, string>();
  for (const it of items) {
    if (!ID_RE.test(it.id)) throw new BatchError(`${source}: item "${it.path}": its output name "${it.id}" must be 1-128 letters, digits, '.', '_' or '-' (not starting with '.', '_' or '-'); give "id"`);
    const other = seen.get(it.id.toLowerCase());
    // Case-insensitive: on macOS and Windows file systems two such outputs would be one file.
    if (other) throw new BatchError(`${source}: "${other}" and "${it.path}" would both write ${it.id}.png; give one of them an "id"`);
    seen.set(it.id.toLowerCase(), it.path);
  }
  return items;
}

/** The items of a folder listing: its image files, sorted by name, each restored as `as`. */
export function folderItems(names: string[], as: BatchItem['as'], source: string): BatchItem[] {
  const images = names.filter((n) => IMAGE_EXTENSIONS.some((e) => n.toLowerCase().endsWith(e))).sort();
  if (!images.length) throw new BatchError(`${source}: no images (${IMAGE_EXTENSIONS.join(', ')}) in the folder`);
  return checkIds(images.map((n) => ({ id: stemOf(n), path: n, as })), source);
}

const LIST_KEYS = new Set(['input', 'ground_truth', 'id', 'seed', 'prompt']);

/**
 * The items of a JSON-lines list: one object per line, {"input": path} or {"ground_truth": path}, with
 * optional "id" (the output stem; default the file's stem), "seed" and "prompt". Blank lines and lines
 * starting with # are skipped. Every error names the line.
 */
export function parseBatchList(text: string, source: string): BatchItem[] {
  const items: BatchItem[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const at = `${source}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new BatchError(`${at}: not valid JSON (${(e as Error).message})`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BatchError(`${at}: expected an object like {"input": "photo.png"}`);
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!LIST_KEYS.has(k)) throw new BatchError(`${at}: unknown key "${k}" (known: ${[...LIST_KEYS].join(', ')})`);
    const hasIn = o['input'] !== undefined;
    const hasGt = o['ground_truth'] !== undefined;
    if (hasIn === hasGt) throw new BatchError(`${at}: give exactly one of "input" (a measurement) and "ground_truth" (an image to degrade)`);
    const path = o[hasIn ? 'input' : 'ground_truth'];
    if (typeof path !== 'string' || !path) throw new BatchError(`${at}: "${hasIn ? 'input' : 'ground_truth'}" must be a non-empty path`);
    const item: BatchItem = { id: stemOf(path), path, as: hasIn ? 'input' : 'ground-truth' };
    if (o['id'] !== undefined) {
      if (typeof o['id'] !== 'string') throw new BatchError(`${at}: "id" must be a string`);
      item.id = o['id'];
    }
    if (o['seed'] !== undefined) {
      if (!Number.isSafeInteger(o['seed']) || (o['seed'] as number) < 0) throw new BatchError(`${at}: "seed" must be a non-negative integer, got ${JSON.stringify(o['seed'])}`);
      item.seed = o['seed'] as number;
    }
    if (o['prompt'] !== undefined) {
      if (typeof o['prompt'] !== 'string') throw new BatchError(`${at}: "prompt" must be a string`);
      item.prompt = o['prompt'];
    }
    items.push(item);
  });
  if (!items.length) throw new BatchError(`${source}: the list has no items`);
  return checkIds(items, source);
}

export interface Shard {
  index: number;
  count: number;
  /** Where the index came from (for logs and the summary). */
  from: string;
}

/**
 * The shard from `--shard i/N`, or `--shard N` with the index from JOB_COMPLETION_INDEX (a Kubernetes
 * Indexed Job sets it in every pod; any job array can set it).
 */
export function parseShard(spec: string, env: Record<string, string | undefined>): Shard {
  const int = (s: string) => (/^(0|[1-9][0-9]{0,8})$/.test(s) ? Number(s) : NaN);
  const m = /^([^/]*)\/([^/]*)$/.exec(spec);
  let index: number;
  let count: number;
  let from: string;
  if (m) {
    index = int(m[1]!);
    count = int(m[2]!);
    from = '--shard';
    if (!Number.isFinite(index) || !Number.isFinite(count)) throw new BatchError(`--shard ${spec}: expected i/N with integers 0 <= i < N (e.g. 0/4)`);
  } else {
    count = int(spec);
    if (!Number.isFinite(count)) throw new BatchError(`--shard ${spec}: expected i/N (e.g. 0/4), or N with the index in JOB_COMPLETION_INDEX`);
    const env_ = env['JOB_COMPLETION_INDEX'];
    if (env_ === undefined) throw new BatchError(`--shard ${spec}: no shard index: give --shard i/${spec}, or set JOB_COMPLETION_INDEX (a Kubernetes Indexed Job sets it)`);
    index = int(env_.trim());
    from = 'JOB_COMPLETION_INDEX';
    if (!Number.isFinite(index)) throw new BatchError(`JOB_COMPLETION_INDEX=${env_}: not a non-negative integer`);
  }
  if (count < 1) throw new BatchError(`--shard ${spec}: the shard count must be at least 1`);
  if (index >= count) throw new BatchError(`${from === '--shard' ? `--shard ${spec}` : `JOB_COMPLETION_INDEX=${index}`}: the index must be below the shard count ${count}`);
  return { index, count, from };
}

/** The items of one shard: every count-th item from `index`, in list order. */
export function shardItems<T>(items: T[], shard?: Shard): T[] {
  if (!shard || shard.count === 1) return items;
  return items.filter((_, k) => k % shard.count === shard.index);
}

/** The summary file's name: one per shard, so shards writing into one folder never collide. */
export function summaryName(shard?: Shard): string {
  return shard && shard.count > 1 ? `summary-${shard.index}-of-${shard.count}.json` : 'summary.json';
}

export interface ItemOutcome {
  id: string;
  path: string;
  status: 'restored' | 'skipped' | 'failed';
  error?: string;
  seconds?: number;
  metrics?: Record<string, number | null>;
}

/** The summary of one run over a shard: counts, per-item outcomes, and the mean of each metric over restored items. */
export function batchSummary(outcomes: ItemOutcome[], extra: Record<string, unknown>): Record<string, unknown> {
  const count = (s: ItemOutcome['status']) => outcomes.filter((o) => o.status === s).length;
  const sums = new Map<string, { sum: number; n: number }>();
  for (const o of outcomes) {
    if (o.status !== 'restored' || !o.metrics) continue;
    for (const [k, v] of Object.entries(o.metrics)) {
      if (v === null || !Number.isFinite(v)) continue;
      const s = sums.get(k) ?? { sum: 0, n: 0 };
      s.sum += v;
      s.n++;
      sums.set(k, s);
    }
  }
  return {
    ...extra,
    items: outcomes.length,
    restored: count('restored'),
    skipped: count('skipped'),
    failed: count('failed'),
    mean_metrics_of_restored: Object.fromEntries([...sums].map(([k, s]) => [k, s.sum / s.n])),
    outcomes,
  };
}
