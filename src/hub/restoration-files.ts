// Which files of a diffusers Stable Diffusion repo restoration needs, chosen by probing: the
// model_index.json, then per model component its config.json and ONE weight file (the `fp16` variant
// where the repo has it, else the plain file; a sharded index brings its shards), the tokenizer's
// files and the scheduler config. Never safety_checker/ or feature_extractor/, never .bin/.ckpt.
// Browser-safe: `probe` is a HEAD request online or a look into the cache offline.

import { HubError } from './model-ref.js';

/** true: the file is there; false: it is not (a 404 / absent from the cache). */
export type Probe = (path: string) => Promise<boolean>;
/** Reads a small JSON file (a sharded index) once it is known to be there. */
export type ReadText = (path: string) => Promise<string>;

export const WEIGHT_COMPONENTS = { unet: 'diffusion_pytorch_model', vae: 'diffusion_pytorch_model', text_encoder: 'model' } as const;
export const TOKENIZER_REQUIRED = ['vocab.json', 'merges.txt'] as const;
export const TOKENIZER_OPTIONAL = ['tokenizer_config.json', 'special_tokens_map.json'] as const;

export interface RestorationFiles {
  /** Every file to fetch, relative to the repo root, in fetch order. */
  files: string[];
  /** Per component, the weight file (or index) chosen. */
  weights: Record<string, string>;
  /** Shard files of a sharded component. */
  shards: Record<string, string[]>;
  /** "fp16" when any component uses that variant (passed to loadDiffusersPipeline). */
  variant?: string;
  /** Files that should be there and are not (offline: absent from the cache). */
  missing: string[];
}

export function weightCandidates(component: string, base: string, variant = 'fp16'): string[] {
  return [`${base}.${variant}.safetensors`, `${base}.safetensors.index.${variant}.json`, `${base}.safetensors`, `${base}.safetensors.index.json`].map((f) => `${component}/${f}`);
}

/** Shard names of a `.safetensors.index*.json`, checked to be plain names inside the component folder. */
export function shardNames(indexText: string, indexPath: string): string[] {
  let v: unknown;
  try {
    v = JSON.parse(indexText);
  } catch (e) {
    throw new HubError(`${indexPath}: not valid JSON (${(e as Error).message})`);
  }
  const map = (v as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new HubError(`${indexPath}: no "weight_map" object`);
  const names = [...new Set(Object.values(map as Record<string, unknown>))];
  for (const n of names) {
    if (typeof n !== 'string' || !/^[\w.-]+\.safetensors$/.test(n) || n.includes('..')) {
      throw new HubError(`${indexPath}: shard name ${JSON.stringify(n)} is not a .safetensors file in the same folder`);
    }
  }
  return names as string[];
}

/**
 * Chooses the files. Online a missing required file is an error at once (naming it); offline
 * (`collectMissing`) every missing file is listed so the message can name them all.
 */
export async function chooseRestorationFiles(probe: Probe, readText: ReadText, collectMissing: boolean): Promise<RestorationFiles> {
  const out: RestorationFiles = { files: [], weights: {}, shards: {}, missing: [] };
  const need = async (path: string) => {
    if (await probe(path)) out.files.push(path);
    else if (collectMissing) out.missing.push(path);
    else throw new HubError(`${path} is not in the repo, and restoration needs it`);
  };
  await need('model_index.json');
  for (const [component, base] of Object.entries(WEIGHT_COMPONENTS)) {
    await need(`${component}/config.json`);
    const candidates = weightCandidates(component, base);
    let chosen: string | undefined;
    for (const c of candidates) {
      if (await probe(c)) {
        chosen = c;
        break;
      }
    }
    if (!chosen) {
      const names = `${candidates[0]} or ${candidates[2]} (or a sharded index)`;
      if (collectMissing) {
        out.missing.push(names);
        continue;
      }
      throw new HubError(`no .safetensors weights for ${component}: tried ${candidates.join(', ')} (.bin/.ckpt weights are not downloaded; convert them with \`silo convert\`)`);
    }
    out.files.push(chosen);
    out.weights[component] = chosen;
    if (chosen.includes('.fp16.') || chosen.endsWith('.fp16.json')) out.variant = 'fp16';
    if (chosen.endsWith('.json')) {
      const shards = shardNames(await readText(chosen), chosen).map((s) => `${component}/${s}`);
      out.shards[component] = shards;
      for (const s of shards) await need(s);
    }
  }
  for (const f of TOKENIZER_REQUIRED) await need(`tokenizer/${f}`);
  for (const f of TOKENIZER_OPTIONAL) if (await probe(`tokenizer/${f}`)) out.files.push(`tokenizer/${f}`);
  await need('scheduler/scheduler_config.json');
  return out;
}
