// Locating and reading one component of a diffusers model folder (model_index.json, unet/, vae/,
// text_encoder/, tokenizer/, scheduler/): its config.json and its weights, as a single .safetensors
// file, a precision variant (`diffusion_pytorch_model.fp16.safetensors`) or a sharded index
// (`*.safetensors.index[.fp16].json` + shards), from disk or from a base URL, with progress. On disk
// only headers are read here; tensors are read from the files as the model uploads them.

import { openSafetensorsIn, type FolderAccess } from '../formats/folder.js';
import { SafetensorsIndex, type TensorSource } from '../formats/safetensors.js';
import { SiloError } from '../engine/errors.js';

export interface LoadProgress {
  component: string;
  file: string;
  loaded: number;
  total: number | null;
}

export interface ComponentOptions {
  /** Precision variant, e.g. "fp16" (falls back to the plain files when the variant is absent). */
  variant?: string;
  onProgress?: (p: LoadProgress) => void;
}

export interface ComponentFiles {
  config: Record<string, unknown>;
  weights: TensorSource;
  /** The weight file (or index) that was read, relative to the model folder. */
  file: string;
}

const WEIGHT_BASENAMES: Record<string, string> = {
  unet: 'diffusion_pytorch_model',
  vae: 'diffusion_pytorch_model',
  text_encoder: 'model',
};

function weightCandidates(base: string, variant?: string): string[] {
  const plain = [`${base}.safetensors`, `${base}.safetensors.index.json`];
  if (!variant) return plain;
  return [`${base}.${variant}.safetensors`, `${base}.safetensors.index.${variant}.json`, ...plain];
}

export async function readJsonFile(folder: FolderAccess, name: string): Promise<Record<string, unknown>> {
  const text = await folder.text(name);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new SiloError(`${folder.location}/${name}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new SiloError(`${folder.location}/${name}: not a JSON object`);
  return v as Record<string, unknown>;
}

/** Reads `<component>/config.json` and the component's weights. */
export async function openComponent(folder: FolderAccess, component: string, opts: ComponentOptions = {}): Promise<ComponentFiles> {
  const config = await readJsonFile(folder, `${component}/config.json`);
  const base = WEIGHT_BASENAMES[component] ?? 'diffusion_pytorch_model';
  const tried: string[] = [];
  for (const cand of weightCandidates(base, opts.variant)) {
    const rel = `${component}/${cand}`;
    tried.push(rel);
    if (!(await folder.exists(rel))) continue;
    const progress = (file: string) => (loaded: number, total: number | null) => opts.onProgress?.({ component, file, loaded, total });
    const source = `${folder.location}/${rel}`;
    if (cand.endsWith('.json')) {
      const text = await folder.text(rel);
      // One shard at a time, each its own source: on disk only headers, over HTTP one buffer per shard.
      const weights = await SafetensorsIndex.load(text, source, (shard) => openSafetensorsIn(folder, `${component}/${shard}`, progress(`${component}/${shard}`)));
      return { config, weights, file: rel };
    }
    const weights = await openSafetensorsIn(folder, rel, progress(rel));
    return { config, weights, file: rel };
  }
  const bin = `${component}/${base}.bin`;
  const hint = (await folder.exists(bin)) ? ` (found ${bin}: convert PyTorch pickles with \`silo convert\`)` : '';
  throw new SiloError(`${folder.location}: no weights for ${component}; tried ${tried.join(', ')}${hint}`);
}

/** model_index.json of a diffusers pipeline folder: which components it has. */
export async function readModelIndex(folder: FolderAccess): Promise<Record<string, unknown>> {
  return readJsonFile(folder, 'model_index.json');
}
