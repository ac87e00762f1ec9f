// SILO's released operators from a trained_ckpt.zip the user picked in the browser (GitHub's release
// downloads carry no CORS headers, so a page cannot fetch the asset itself): the task's checkpoint is
// read out of the zip (CRC-checked), unpickled by our restricted reader, and converted in memory the
// way `silo pull` converts it on disk (a readout dict -> config.json + weights.safetensors, a CNN state
// dict -> weights.safetensors). Operator checkpoints are small (a few MB), so memory is fine; nothing
// in the pickle is executed. Browser-safe.

import { SiloError } from '../engine/errors.js';
import type { FolderAccess } from '../formats/folder.js';
import { parseSafetensors, serializeSafetensors, type SafetensorsEntry } from '../formats/safetensors.js';
import { TorchCheckpoint } from '../formats/torch-checkpoint.js';
import { bytesSource, ZipArchive, type ByteSource } from '../formats/zip.js';
import { inferDegradationConfig, inferPreserveConfig } from '../models/silo/config.js';
import { isReadoutCheckpoint, readoutConfig, SiloCheckpointError } from './silo-checkpoint.js';
import { releasedOperator, SILO_RELEASE, type ReleasedOperator } from './silo-operators.js';
import type { ModelSpec } from '../restore/models.js';

export interface ZipOperator {
  /** The registry row: task, method, SILO's eta / prompt / clamp for it, the prior it was trained with. */
  row: ReleasedOperator;
  operator: NonNullable<ModelSpec['operator']>;
  /** What RestoreRequest.operatorDefaults takes: SILO's settings for this operator. */
  defaults: { eta: number; prompt: string; clampW: boolean; source: string };
  provenance: Record<string, unknown>;
  notes: string[];
}

/** An in-memory folder of converted files. */
export function memoryFolder(location: string, files: ReadonlyMap<string, Uint8Array>): FolderAccess {
  const get = (name: string) => {
    const b = files.get(name);
    if (!b) throw new SiloError(`${location}/${name}: no such file`);
    return b;
  };
  return {
    location,
    exists: async (name) => files.has(name),
    bytes: async (name) => get(name),
    text: async (name) => new TextDecoder().decode(get(name)),
    safetensors: async (name) => parseSafetensors(get(name), `${location}/${name}`),
  };
}

/** The state dict under `keyPath` as a serialized .safetensors (tensors as stored: no casts). */
async function stateDictFile(ckpt: TorchCheckpoint, keyPath?: string): Promise<Uint8Array> {
  const entries: Record<string, SafetensorsEntry> = {};
  for (const [name, t] of ckpt.stateDict(keyPath).tensors) entries[name] = { dtype: t.dtype, shape: t.shape, data: await ckpt.tensorBytes(t) };
  return serializeSafetensors(entries);
}

/**
 * The operator SILO released for `task` (and `method` / `dataset`, as releasedOperator picks it) out of
 * the zip. Errors name the zip and the entry: a zip of another layout, a corrupt entry, a checkpoint
 * that is not the kind the release stores there.
 */
export async function operatorFromReleaseZip(zipSource: ByteSource, task: string, sel: { method?: string; dataset?: 'ffhq' | 'coco' } = {}): Promise<ZipOperator> {
  const row = releasedOperator(task, sel.method, sel.dataset);
  const zip = await ZipArchive.open(zipSource);
  try {
    if (!zip.has(row.path)) {
      const pts = zip.names().filter((n) => n.endsWith('.pt'));
      throw new SiloError(`${zip.name}: no entry ${row.path}; is this SILO's ${SILO_RELEASE.asset}? Its checkpoints: ${pts.slice(0, 12).join(', ') || 'none'}`);
    }
    const label = `${zip.name}:${row.path}`;
    const entry = bytesSource(await zip.read(row.path, { verifyCrc: true }), label);
    const ckpt = await TorchCheckpoint.open(entry, label, { verifyCrc: true });
    try {
      const files = new Map<string, Uint8Array>();
      let notes: string[] = [];
      let operator: ZipOperator['operator'];
      const location = `${zip.name}/${row.name}`;
      if (row.kind === 'readout') {
        if (!isReadoutCheckpoint(ckpt.value)) throw new SiloCheckpointError(`${label}: not a SILO readout checkpoint (expected a dict with an "aggregation_network" state dict)`);
        const r = readoutConfig(ckpt, label);
        notes = r.notes;
        files.set('config.json', new TextEncoder().encode(`${JSON.stringify(r.config, null, 1)}\n`));
        files.set('weights.safetensors', await stateDictFile(ckpt, 'aggregation_network'));
        operator = { kind: 'readout', folder: memoryFolder(location, files), label };
      } else {
        const weights = await stateDictFile(ckpt);
        // Refuse a state dict of another architecture here, not at the first restoration.
        const parsed = parseSafetensors(weights, label);
        if (row.kind === 'cnn') inferDegradationConfig(parsed);
        else inferPreserveConfig(parsed);
        files.set('weights.safetensors', weights);
        operator = { kind: 'cnn', file: { folder: memoryFolder(location, files), name: 'weights.safetensors', label } };
      }
      return {
        row,
        operator,
        defaults: { eta: row.eta, prompt: row.prompt, clampW: row.clamp, source: `SILO's ${row.script}` },
        provenance: { release: SILO_RELEASE.url, zip: zip.name, entry: row.path, kind: row.kind, task: row.task, method: row.method, prior: row.prior },
        notes,
      };
    } finally {
      ckpt.releaseStorages();
    }
  } finally {
    await zipSource.close?.();
  }
}
