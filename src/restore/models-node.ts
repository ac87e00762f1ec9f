// Node's side of model loading: paths, URLs and hub repo ids (what `silo restore` and the batch runner
// are given) turned into the folders models.ts loads from, with the provenance the report records.

import { SiloError } from '../engine/errors.js';
import { dirFolder } from '../formats/folder-node.js';
import { urlFolder, type FolderAccess } from '../formats/folder.js';
import { HubError, parseModelRef } from '../hub/model-ref.js';
import { openHubModel, type HubProvenance } from '../hub/hub-folder-node.js';
import type { FileProgress } from '../hub/download-node.js';
import type { FileRef, ModelSpec } from './models.js';
import { resolveReleasedOperator, type ReleaseProvenance } from '../hub/silo-release-node.js';
import { ReleaseDownloadError } from '../hub/release-download-node.js';
import { PRIOR_RV, type ReleasedOperator } from '../hub/silo-operators.js';
import type { DegradationTask } from '../solvers/degradations/tasks.js';

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
  /** The task: with no --operator, a latent method takes SILO's released operator for it (and its prior, with no --model). */
  task?: DegradationTask;
  /** The method asked for (picks among the released operators of the task). */
  method?: string;
  /** Which of SILO's training sets the released operator comes from, where a task has both (inpaint_center). */
  dataset?: 'ffhq' | 'coco';
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

export interface ResolvedModels {
  spec: ModelSpec;
  /** Where the prior came from. */
  provenance?: ModelProvenance;
  /** SILO's released operator, when one was used (no --operator): its registry row and the release file. */
  released?: { entry: ReleasedOperator; operatorPath: string; release: ReleaseProvenance };
}

/**
 * The ModelSpec for these paths. Without --operator, a latent method takes SILO's released operator for
 * the task (pulled on first use); without --model (and --golden), the prior is the one SILO samples that
 * operator with (Realistic Vision v5.1 for the FFHQ operators and the pixel baselines), from the hub.
 */
export async function resolveModelSpec(p: ModelPaths): Promise<ResolvedModels> {
  try {
    return await resolve(p);
  } catch (e) {
    // A download that cannot happen: say how to run without one (a missing cached operator says so itself).
    if (e instanceof HubError || e instanceof ReleaseDownloadError) throw new ModelsUnavailableError(`${e.message}\n${offlineHint(p)}`);
    throw e;
  }
}

/** The models cannot be fetched (no network, offline and not cached); the message says what to do instead. */
export class ModelsUnavailableError extends SiloError {}

function offlineHint(p: ModelPaths): string {
  const lines = ['To run without downloading, give local files:'];
  if (!p.model) lines.push('  --model <folder>     a Stable Diffusion 1.5 diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)');
  if (p.operatorKind && !p.operator) lines.push(`  --operator <path>    a SILO operator: a .safetensors CNN, or a readout folder made by 'silo convert <checkpoint.pt> <folder>'`);
  lines.push(`or fetch once where there is network ('silo pull${p.task ? ` --task ${p.task}` : ''}') and copy the caches (HF_HUB_CACHE, SILO_CACHE) here; --offline then uses them.`);
  return lines.join('\n');
}

async function resolve(p: ModelPaths): Promise<ResolvedModels> {
  const spec: ModelSpec = { allowNonFinite: p.allowNonFinite, log: p.log };
  let provenance: ModelProvenance | undefined;
  let released: ResolvedModels['released'];
  if (!p.golden && p.operatorKind && !p.operator) {
    if (!p.task) throw new SiloError('restore: no --operator and no task to find a released operator for');
    const r = await resolveReleasedOperator({ task: p.task, method: p.method, dataset: p.dataset, offline: p.offline || undefined, log: p.log, onProgress: p.onDownload });
    released = { entry: r.entry, operatorPath: r.operatorPath, release: r.provenance };
    p.log?.(`SILO's released ${r.entry.kind} operator for ${r.entry.task}: ${r.entry.path} (${r.entry.dataset.toUpperCase()}, as ${r.entry.script} runs it)`);
  }
  if (p.golden) spec.golden = dirFolder(p.golden);
  else {
    const model = p.model ?? released?.entry.prior ?? PRIOR_RV;
    const m = await openModel({ ...p, model });
    spec.pipeline = { folder: m.folder, variant: m.variant, label: model };
    provenance = m.provenance;
  }

  const operator = p.operator ?? released?.operatorPath ?? (p.golden && p.operatorKind === 'cnn' ? `${p.golden}/silo_cnn/weights.safetensors` : undefined);
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
  return { spec, provenance, released };
}
