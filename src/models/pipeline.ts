// Loading a diffusers Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/,
// tokenizer/, scheduler/) from disk in Node or from a base URL in the browser, with progress
// callbacks: downloads (bytes per file) and uploads (tensors per component).

import type { Engine } from '../engine/device.js';
import type { DType } from '../engine/dtype.js';
import { SiloError } from '../engine/errors.js';
import { subFolder, type FolderAccess } from '../formats/folder.js';
import { openComponent, readJsonFile, readModelIndex } from './diffusers-folder.js';
import { WeightLoader, type LoadedModel } from './weights.js';
import { UNet2DConditionModel } from './unet/unet.js';
import { parseUNetConfig } from './unet/config.js';
import { AutoencoderKL } from './vae/autoencoder.js';
import { parseVaeConfig } from './vae/config.js';
import { ClipTextModel } from './clip/text-encoder.js';
import { parseClipTextConfig } from './clip/config.js';
import { loadClipTokenizer, type ClipTokenizer } from './clip/tokenizer.js';

export type Component = 'unet' | 'vae' | 'text_encoder' | 'tokenizer' | 'scheduler';

export interface PipelineProgress {
  component: Component;
  phase: 'download' | 'upload';
  /** Bytes (download) or tensors (upload) done so far, and the total when known. */
  loaded: number;
  total: number | null;
  file?: string;
}

export interface PipelineOptions {
  /** Storage dtype of the uploaded weights (f16 needs shader-f16). */
  dtype?: DType;
  /** The activations' dtype (default `dtype`): f32 under f16 weights is mixed precision (reverse mode works). */
  activations?: DType;
  /** Weight variant to prefer, e.g. "fp16". */
  variant?: string;
  /** Which components to load (default: all five). */
  components?: Component[];
  onProgress?: (p: PipelineProgress) => void;
  /** Load weights holding NaN/Inf anyway (default: a WeightError naming the file and tensor). */
  allowNonFinite?: boolean;
}

export interface DiffusersPipeline {
  modelIndex: Record<string, unknown>;
  unet?: UNet2DConditionModel;
  vae?: AutoencoderKL;
  textEncoder?: ClipTextModel;
  tokenizer?: ClipTokenizer;
  schedulerConfig?: Record<string, unknown>;
  /** Frees the weights of every loaded model. */
  dispose(): void;
}

const ALL: Component[] = ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'];

export async function loadDiffusersPipeline(engine: Engine, folder: FolderAccess, opts: PipelineOptions = {}): Promise<DiffusersPipeline> {
  const modelIndex = await readModelIndex(folder);
  const wanted = opts.components ?? ALL;
  for (const c of wanted) {
    if (!(c in modelIndex)) throw new SiloError(`${folder.location}/model_index.json: has no "${c}" component`);
  }
  const loaded: Array<LoadedModel<unknown>> = [];
  const progress = opts.onProgress;
  const load = async <T>(component: Component, make: (w: WeightLoader, config: Record<string, unknown>) => T): Promise<T> => {
    const files = await openComponent(folder, component, {
      variant: opts.variant,
      onProgress: (p) => progress?.({ component, phase: 'download', loaded: p.loaded, total: p.total, file: p.file }),
    });
    const m = WeightLoader.load(engine, files.weights, {
      dtype: opts.dtype,
      activations: opts.activations,
      allowNonFinite: opts.allowNonFinite,
      onProgress: (p) => progress?.({ component, phase: 'upload', loaded: p.loaded, total: p.total, file: p.name }),
    }, (w) => make(w, files.config));
    loaded.push(m);
    // The NaN/Inf check of the weights just uploaded (one GPU pass per tensor, one read-back).
    await WeightLoader.verify(engine);
    return m.model;
  };
  const pipe: DiffusersPipeline = { modelIndex, dispose: () => loaded.forEach((m) => m.dispose()) };
  try {
    if (wanted.includes('unet')) pipe.unet = await load('unet', (w, cfg) => new UNet2DConditionModel(w, parseUNetConfig(cfg, `${folder.location}/unet/config.json`)));
    if (wanted.includes('vae')) pipe.vae = await load('vae', (w, cfg) => new AutoencoderKL(w, parseVaeConfig(cfg)));
    if (wanted.includes('text_encoder')) {
      pipe.textEncoder = await load('text_encoder', (w, cfg) => new ClipTextModel(w, parseClipTextConfig(cfg, `${folder.location}/text_encoder/config.json`)));
    }
    if (wanted.includes('tokenizer')) pipe.tokenizer = await loadClipTokenizer(subFolder(folder, 'tokenizer'));
    if (wanted.includes('scheduler')) pipe.schedulerConfig = await readJsonFile(folder, 'scheduler/scheduler_config.json');
  } catch (e) {
    pipe.dispose();
    throw e;
  }
  return pipe;
}
