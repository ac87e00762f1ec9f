// SILO's released operators on disk: trained_ckpt.zip fetched once into silo-webgpu's cache, the needed
// checkpoints read out of it (nothing else is extracted) and converted into the layout `silo restore`
// reads. The cache ($SILO_CACHE, else $XDG_CACHE_HOME/silo-webgpu, else ~/.cache/silo-webgpu):
//   releases/ronraphaeli--SILO/Checkpoints/trained_ckpt.zip            the asset, verified
//   releases/ronraphaeli--SILO/Checkpoints/trained_ckpt.zip.json       {url, sha256, bytes, fetchedAt}
//   releases/ronraphaeli--SILO/Checkpoints/trained_ckpt.zip.incomplete a download in progress (resumed)
//   operators/<first 16 hex of the zip's sha256>/<checkpoint stem>/    config.json + weights.safetensors
//       (readout) or weights.safetensors (CNN), and source.json, written last: the operator is complete
// A second pull finds everything and sends no request; offline (--offline or HF_HUB_OFFLINE=1) only
// the cache is used and what is missing is named. Node only.

import { SiloError } from '../engine/errors.js';
import { ZipArchive, bytesSource, type ByteSource } from '../formats/zip.js';
import { fileSource } from '../formats/torch-checkpoint-node.js';
import { TorchCheckpoint } from '../formats/torch-checkpoint.js';
import { readSafetensorsFile } from '../formats/safetensors-node.js';
import { writeFileAtomic } from '../formats/atomic-write-node.js';
import { inferDegradationConfig, inferPreserveConfig } from '../models/silo/config.js';
import { acquireBlobLock } from './blob-lock-node.js';
import { downloadAsset } from './release-download-node.js';
import { convertOpenSiloCheckpoint } from './silo-convert-node.js';
import { PINNED_RELEASE_SHA256, releasedOperator, SILO_RELEASE, type ReleasedOperator } from './silo-operators.js';
import type { FileProgress } from './progress-text.js';

/** The operator is not in the cache and cannot be fetched (offline). */
export class OperatorCacheError extends SiloError {}

export interface ReleaseOptions {
  /** The cache only (default: HF_HUB_OFFLINE from env). */
  offline?: boolean;
  /** Settings come from here (default process.env): SILO_CACHE, XDG_CACHE_HOME, HOME, SILO_RELEASE_URL, SILO_RELEASE_SHA256, HF_HUB_OFFLINE. */
  env?: Record<string, string | undefined>;
  log?: (line: string) => void;
  onProgress?: (p: FileProgress) => void;
  fetch?: typeof fetch;
  attempts?: number;
  timeoutMs?: number;
}

export interface ReleaseProvenance {
  url: string;
  sha256: string;
  bytes: number;
  zipPath: string;
}

export interface PulledOperator {
  entry: ReleasedOperator;
  /** The readout folder, or the CNN's weights.safetensors. */
  operatorPath: string;
  /** The folder holding the converted files and source.json. */
  operatorDir: string;
  /** Whether it was converted in this call (false: found in the cache). */
  converted: boolean;
}

export interface ResolvedOperator {
  entry: ReleasedOperator;
  operatorPath: string;
  prior: string;
  provenance: ReleaseProvenance;
  /** Bytes of trained_ckpt.zip fetched in this call. */
  fetchedBytes: number;
}

const truthy = (v: string | undefined) => v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.trim().toLowerCase());

/** $SILO_CACHE, else $XDG_CACHE_HOME/silo-webgpu, else <home>/.cache/silo-webgpu. */
export function siloCacheDir(env: Record<string, string | undefined>, home: string): string {
  return env['SILO_CACHE'] || (env['XDG_CACHE_HOME'] ? `${env['XDG_CACHE_HOME']}/silo-webgpu` : `${home}/.cache/silo-webgpu`);
}

interface Settings {
  cache: string;
  url: string;
  expectedSha256?: string;
  offline: boolean;
  zipPath: string;
  recordPath: string;
}

async function settings(o: ReleaseOptions): Promise<Settings> {
  const env = o.env ?? process.env;
  const { homedir } = await import('node:os');
  const cache = siloCacheDir(env, env['HOME'] || homedir());
  const url = env['SILO_RELEASE_URL'] || SILO_RELEASE.url;
  const expected = env['SILO_RELEASE_SHA256']?.trim().toLowerCase() || PINNED_RELEASE_SHA256[url];
  if (expected !== undefined && !/^[0-9a-f]{64}$/.test(expected)) throw new SiloError(`SILO_RELEASE_SHA256=${expected}: not a sha256 (64 hex digits)`);
  // <owner>/<repo>/releases/download/<tag>/<asset> keeps GitHub's names; any other URL gets a folder of its own.
  const m = /\/([\w.-]+)\/([\w.-]+)\/releases\/download\/([\w.-]+)\/([\w.-]+)$/.exec(new URL(url).pathname);
  const { createHash } = await import('node:crypto');
  const rel = m ? `${m[1]}--${m[2]}/${m[3]}/${m[4]}` : `url-${createHash('sha256').update(url).digest('hex').slice(0, 16)}/${SILO_RELEASE.asset}`;
  const zipPath = `${cache}/releases/${rel}`;
  return { cache, url, expectedSha256: expected, offline: o.offline ?? truthy(env['HF_HUB_OFFLINE']), zipPath, recordPath: `${zipPath}.json` };
}

async function readRecord(s: Settings): Promise<ReleaseProvenance | null> {
  const { readFile, stat } = await import('node:fs/promises');
  try {
    const r = JSON.parse(await readFile(s.recordPath, 'utf8')) as Partial<ReleaseProvenance>;
    if (typeof r.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.sha256) || typeof r.bytes !== 'number') return null;
    // A record of another asset than the one now expected is no record.
    if (s.expectedSha256 && r.sha256 !== s.expectedSha256) return null;
    const have = await stat(s.zipPath).then((x) => x.size, () => null);
    return { url: r.url ?? s.url, sha256: r.sha256, bytes: r.bytes, zipPath: have === r.bytes ? s.zipPath : '' };
  } catch {
    return null;
  }
}

const operatorDir = (s: Settings, sha256: string, row: ReleasedOperator) => `${s.cache}/operators/${sha256.slice(0, 16)}/${row.name}`;
const operatorPath = (dir: string, row: ReleasedOperator) => (row.kind === 'readout' ? dir : `${dir}/weights.safetensors`);

async function exists(path: string): Promise<boolean> {
  const { stat } = await import('node:fs/promises');
  return stat(path).then(() => true, () => false);
}

function missingMessage(s: Settings, rows: ReleasedOperator[], why: string): string {
  const tasks = [...new Set(rows.map((r) => r.task))];
  return (
    `${why}: SILO's operator${rows.length > 1 ? 's' : ''} ${rows.map((r) => `${r.name} (${r.task}, ${r.method})`).join(', ')} ` +
    `${rows.length > 1 ? 'are' : 'is'} not in the cache ${s.cache} (no ${s.zipPath}). Run \`silo pull ${tasks.map((t) => `--task ${t}`).join(' ')}\` ` +
    'on a machine with network (and copy that cache here, or point SILO_CACHE at it), or pass local files: --operator <converted operator> and --model <diffusers folder>'
  );
}

/**
 * Every entry of a fresh download against its CRC-32 (GitHub publishes no hash, the zip carries one per
 * entry); a corrupt download is deleted, so no later run trusts it.
 */
async function verifyZip(zipPath: string): Promise<void> {
  const { rm } = await import('node:fs/promises');
  const src = await fileSource(zipPath);
  try {
    const zip = await ZipArchive.open(src);
    for (const name of zip.names()) await zip.read(name, { verifyCrc: true });
  } catch (e) {
    await src.close?.();
    await rm(zipPath, { force: true });
    throw new SiloError(`${SILO_RELEASE.asset}: the download is not an intact zip (${(e as Error).message}); it was deleted, run again`);
  }
  await src.close?.();
}

/** A stored zip entry read in place; a deflated one inflated into memory. */
async function entrySource(zip: ZipArchive, name: string): Promise<ByteSource> {
  const e = zip.entry(name);
  const label = `${zip.name}:${name}`;
  if (e.method === 0) return { name: label, size: e.uncompressedSize, read: (offset, length) => zip.source.read(e.dataOffset + offset, length) };
  return bytesSource(await zip.read(name), label);
}

/** Converts one checkpoint out of the zip into `dir` and checks that the engine can build it. */
async function convertEntry(zip: ZipArchive, row: ReleasedOperator, dir: string, rec: ReleaseProvenance): Promise<void> {
  const { mkdir } = await import('node:fs/promises');
  if (!zip.has(row.path)) {
    const pts = zip.names().filter((n) => n.endsWith('.pt'));
    throw new SiloError(`${zip.name}: no entry ${row.path} (the release's layout is not the one SILO's scripts use?); its checkpoints: ${pts.slice(0, 12).join(', ') || 'none'}`);
  }
  const src = await entrySource(zip, row.path);
  const ckpt = await TorchCheckpoint.open(src, src.name, { verifyCrc: true });
  try {
    if (row.kind === 'readout') {
      await convertOpenSiloCheckpoint(ckpt, src.name, dir, {}, 'readout');
    } else {
      await mkdir(dir, { recursive: true });
      await convertOpenSiloCheckpoint(ckpt, src.name, `${dir}/weights.safetensors`, {}, 'state-dict');
      // Fail at conversion, not at the first restoration, on a state dict of another architecture.
      const converted = await readSafetensorsFile(`${dir}/weights.safetensors`);
      if (row.kind === 'cnn') inferDegradationConfig(converted);
      else inferPreserveConfig(converted);
    }
  } finally {
    ckpt.releaseStorages();
  }
  const source = { url: rec.url, sha256: rec.sha256, bytes: rec.bytes, entry: row.path, kind: row.kind, task: row.task, method: row.method, prior: row.prior };
  await writeFileAtomic(`${dir}/source.json`, new TextEncoder().encode(`${JSON.stringify(source, null, 1)}\n`));
}

/**
 * Makes sure each row's operator is converted in the cache, downloading trained_ckpt.zip first when
 * needed (and allowed). Returns the operators and the release's provenance.
 */
export async function pullOperators(rows: ReleasedOperator[], o: ReleaseOptions = {}): Promise<{ operators: PulledOperator[]; provenance: ReleaseProvenance; fetchedBytes: number }> {
  const s = await settings(o);
  const log = o.log ?? (() => {});
  const done = async (rec: ReleaseProvenance | null) => {
    if (!rec) return false;
    for (const r of rows) if (!(await exists(`${operatorDir(s, rec.sha256, r)}/source.json`))) return false;
    return true;
  };
  const finish = (rec: ReleaseProvenance, converted: Set<string>, fetchedBytes: number) => ({
    operators: rows.map((r) => {
      const dir = operatorDir(s, rec.sha256, r);
      return { entry: r, operatorDir: dir, operatorPath: operatorPath(dir, r), converted: converted.has(r.name) };
    }),
    provenance: { ...rec, zipPath: rec.zipPath || s.zipPath },
    fetchedBytes,
  });
  // Fast path, no lock and no request: everything is there.
  let rec = await readRecord(s);
  if (rec && (await done(rec))) {
    for (const r of rows) log(`cached ${r.name} (${r.task}, ${r.method}) in ${operatorDir(s, rec.sha256, r)}`);
    return finish(rec, new Set(), 0);
  }
  if (s.offline && !rec?.zipPath) throw new OperatorCacheError(missingMessage(s, rows, 'offline'));
  const { dirname } = await import('node:path');
  const { writeFile, mkdir } = await import('node:fs/promises');
  const { hostname } = await import('node:os');
  const lock = await acquireBlobLock(`${s.cache}/.locks/${s.zipPath.slice(s.cache.length + 1).replace(/\//g, '--')}.lock`);
  try {
    let fetchedBytes = 0;
    rec = await readRecord(s); // another process may have finished while we waited
    if (!rec?.zipPath) {
      if (s.offline) throw new OperatorCacheError(missingMessage(s, rows, 'offline'));
      log(`fetching ${s.url}${s.expectedSha256 ? ` (expected sha256 ${s.expectedSha256})` : ' (no published sha256: the size is verified and the sha256 recorded)'}`);
      const d = await downloadAsset({ url: s.url, dest: s.zipPath, label: SILO_RELEASE.asset, expectedSha256: s.expectedSha256, fetch: o.fetch, attempts: o.attempts, timeoutMs: o.timeoutMs, onProgress: o.onProgress });
      fetchedBytes = d.fetched;
      await verifyZip(s.zipPath);
      rec = { url: s.url, sha256: d.sha256, bytes: d.bytes, zipPath: s.zipPath };
      await mkdir(dirname(s.recordPath), { recursive: true });
      const tmp = `${s.recordPath}.${process.pid}.${hostname()}.tmp`;
      await writeFile(tmp, `${JSON.stringify({ ...rec, zipPath: undefined, fetchedAt: new Date().toISOString() }, null, 1)}\n`);
      await (await import('node:fs/promises')).rename(tmp, s.recordPath);
      log(`fetched ${SILO_RELEASE.asset}: ${d.bytes} bytes${d.resumed ? ' (resumed)' : ''}, sha256 ${d.sha256}, in ${s.zipPath}`);
    }
    const converted = new Set<string>();
    const zipSrc = await fileSource(rec.zipPath);
    try {
      const zip = await ZipArchive.open(zipSrc);
      for (const r of rows) {
        const dir = operatorDir(s, rec.sha256, r);
        if (await exists(`${dir}/source.json`)) {
          log(`cached ${r.name} (${r.task}, ${r.method}) in ${dir}`);
          continue;
        }
        await convertEntry(zip, r, dir, rec);
        converted.add(r.name);
        log(`converted ${r.path} -> ${operatorPath(dir, r)}${r.kind === 'readout' ? ' (config.json + weights.safetensors; optimizer state left out)' : ''}`);
      }
    } finally {
      await zipSrc.close?.();
    }
    return finish(rec, converted, fetchedBytes);
  } finally {
    await lock.release();
  }
}

/**
 * The operator `silo restore --task <task>` uses when no --operator is given: the registry's row
 * (releasedOperator: SILO's choice for the task, or the method asked for), pulled on first use.
 */
export async function resolveReleasedOperator(o: ReleaseOptions & { task: string; method?: string; dataset?: 'ffhq' | 'coco' }): Promise<ResolvedOperator> {
  const entry = releasedOperator(o.task, o.method, o.dataset);
  const { operators, provenance, fetchedBytes } = await pullOperators([entry], o);
  return { entry, operatorPath: operators[0]!.operatorPath, prior: entry.prior, provenance, fetchedBytes };
}
