// Node's side of model loading: paths, URLs and hub repo ids (what `silo restore` and the batch runner
// are given) turned into the folders models.ts loads from, with the provenance the report records.

import { SiloError } from '../engine/errors.js';
import { dirFolder } from '../formats/folder-node.js';
import { urlFolder, type FolderAccess } from '../formats/folder.js';
import { parseModelRef } from '../hub/model-ref.js';
import { openHubModel, type HubProvenance } from '../hub/hub-folder-node.js';
import type { FileProgress } from '../hub/download-node.js';
import type { FileRef, ModelSpec } from './models.js';

export interface ModelPaths {
  /** A diffusers folder, its URL, or a hub repo id org/name[@revision]. */
  model?: string;
  /** Hub repo ids: the cache only (also HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** ../shared/golden: the tiny models. */
  golden?: string;
  /** CNN weights (.safetensors) or a readout folder (config.json + weights.safetensors). */
  operator?: string;
  /** What the operator is (from the method's sampler). */
  operatorKind?: 'cnn' | 'readout';
  /** <file.safetensors>[:tensor]. */
  sigmaEmb?: string;
  allowNonFinite?: boolean;
  onDownload?: (p: FileProgress) => void;
  log?: (line: string) => void;
}

export type ModelProvenance = HubProvenance | { folder: string } | { url: string };

const isDirectory = async (p: string) => (await import('node:fs/promises')).stat(p).then((s) => s.isDirectory(), () => false);

function fileRef(path: string): FileRef {
  const i = path.lastIndexOf('/');
  const dir = i < 0 ? '.' : path.slice(0, i) || '/';
  return { folder: dirFolder(dir), name: path.slice(i + 1), label: path };
}

/** The folder --model names (an existing directory wins over a repo id). */
async function openModel(p: ModelPaths): Promise<{ folder: FolderAccess; variant?: string; provenance: ModelProvenance }> {
  const ref = await parseModelRef(p.model!, isDirectory);
  if (ref.kind === 'folder') return { folder: dirFolder(ref.path), provenance: { folder: ref.path } };
  if (ref.kind === 'url') return { folder: urlFolder(ref.url), provenance: { url: ref.url } };
  const hub = await openHubModel(ref.repoId, { revision: ref.revision, offline: p.offline || undefined, log: p.log, onProgress: p.onDownload });
  const h = hub.provenance;
  p.log?.(`${h.repo}@${h.revision}: commit ${h.commit}, ${h.files.length} files in ${hub.snapshotDir}${h.fetchedBytes ? `, ${h.fetchedBytes} bytes fetched` : ', nothing fetched'}`);
  return { folder: hub.folder, variant: hub.variant, provenance: h };
}

/** The ModelSpec for these paths (fetching a hub model first), and where the prior came from. */
export async function resolveModelSpec(p: ModelPaths): Promise<{ spec: ModelSpec; provenance?: ModelProvenance }> {
  const spec: ModelSpec = { allowNonFinite: p.allowNonFinite, log: p.log };
  let provenance: ModelProvenance | undefined;
  if (p.golden) spec.golden = dirFolder(p.golden);
  else if (p.model) {
    const m = await openModel(p);
    spec.pipeline = { folder: m.folder, variant: m.variant, label: p.model };
    provenance = m.provenance;
  } else throw new SiloError('restore: give --model <diffusers folder|URL|org/name> or --golden <../shared/golden>');

  const operator = p.operator ?? (p.golden && p.operatorKind === 'cnn' ? `${p.golden}/silo_cnn/weights.safetensors` : undefined);
  if (p.operatorKind === 'cnn') {
    if (!operator) throw new SiloError('restore: method silo-cnn needs --operator <cnn weights.safetensors>');
    spec.operator = { kind: 'cnn', file: fileRef(operator) };
  } else if (p.operatorKind === 'readout') {
    if (!operator) throw new SiloError('restore: method silo-rg needs --operator <folder with config.json and weights.safetensors>');
    spec.operator = { kind: 'readout', folder: dirFolder(operator), label: operator };
  }
  if (p.sigmaEmb) {
    const [file, tensor] = p.sigmaEmb.split(':') as [string, string | undefined];
    spec.sigmaEmb = { ...fileRef(file), tensor };
  }
  return { spec, provenance };
}
