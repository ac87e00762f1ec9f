// The models `silo restore` runs: a diffusers Stable Diffusion folder plus a SILO operator file, or the
// tiny golden models of ../shared/golden (unet_mini, vae_mini, clip_text_mini, silo_cnn), which make the
// whole pipeline runnable on a CPU adapter.

import type { Engine } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import { SiloError } from '../engine/errors.js';
import { dirFolder } from '../formats/folder-node.js';
import { urlFolder, type FolderAccess } from '../formats/folder.js';
import { parseModelRef } from '../hub/model-ref.js';
import { openHubModel, type HubProvenance } from '../hub/hub-folder-node.js';
import type { FileProgress } from '../hub/download-node.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import { readJson as readJsonAny, readSafetensors } from '../check/files.js';
import { runProgram } from '../engine/recorder.js';
import { WeightLoader } from '../models/weights.js';
import { UNet2DConditionModel } from '../models/unet/unet.js';
import { parseUNetConfig } from '../models/unet/config.js';
import { AutoencoderKL } from '../models/vae/autoencoder.js';
import { parseVaeConfig } from '../models/vae/config.js';
import { ClipTextModel } from '../models/clip/text-encoder.js';
import { parseClipTextConfig } from '../models/clip/config.js';
import { ClipTokenizer } from '../models/clip/tokenizer.js';
import { loadDiffusersPipeline } from '../models/pipeline.js';
import { DegradationModel } from '../models/silo/cnn.js';
import { AggregationNetwork } from '../models/silo/readout.js';
import { aggregationConfig, inferDegradationConfig } from '../models/silo/config.js';
import { DDPMScheduler } from '../solvers/schedulers/ddpm.js';
import { SD15_SCHEDULER_CONFIG } from '../solvers/schedulers/config.js';
import type { RestoreMethod, RestoreModels } from '../solvers/restore.js';

type Json = Record<string, unknown>;

const readJson = (folder: Parameters<typeof readJsonAny>[0], name: string) => readJsonAny<Json>(folder, name);

export interface ModelSource {
  /** A diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), its URL, or a hub repo id org/name[@revision]. */
  model?: string;
  /** Hub repo ids: the cache only (also HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Hub downloads' progress. */
  onDownload?: (p: FileProgress) => void;
  /** ../shared/golden: the tiny models. */
  golden?: string;
  /** The operator: CNN weights (.safetensors) or a readout folder (config.json + weights.safetensors). */
  operator?: string;
  /** A safetensors file holding e_sigma, optionally ":tensor" (default the first [1, D] tensor). */
  sigmaEmb?: string;
  prompt: string;
  negativePrompt?: string;
  /** Whether classifier-free guidance needs the negative prompt's embedding. */
  needUncond: boolean;
  method: RestoreMethod;
  log: (line: string) => void;
  /** Load weights holding NaN/Inf anyway (WeightLoaderOptions.allowNonFinite); default: a WeightError. */
  allowNonFinite?: boolean;
}

export interface LoadedRestoreModels {
  models: RestoreModels;
  /** Notes for the report (what was loaded from where). */
  notes: string[];
  /** The latent side the operator is built for (SILO's operators fix 64), when there is one. */
  operatorLatentSize?: number;
  /** Where --model came from, for the report: the hub's repo, revision, commit and each file's etag/sha256. */
  model?: HubProvenance | { folder: string } | { url: string };
  dispose(): void;
}

function splitPath(p: string): { dir: string; name: string } {
  const i = p.lastIndexOf('/');
  return i < 0 ? { dir: '.', name: p } : { dir: p.slice(0, i) || '/', name: p.slice(i + 1) };
}

/** Runs the text encoder on the prompt: [1, 77, D]. */
async function embedPrompt(engine: Engine, tokenizer: ClipTokenizer, encoder: ClipTextModel, prompt: string): Promise<Tensor> {
  const ids = tokenizer.call(prompt).inputIds;
  const { result } = await runProgram(engine, 'restore/text_encoder', (rec) => encoder.forward(rec, ids, [1, ids.length]));
  result.pooledOutput.dispose();
  return result.lastHiddenState;
}

/** The FolderAccess that --model names. */
async function openModelSource(src: ModelSource): Promise<{ folder: FolderAccess; variant?: string; info: NonNullable<LoadedRestoreModels['model']> }> {
  const { stat } = await import('node:fs/promises');
  const ref = await parseModelRef(src.model!, (p) => stat(p).then((s) => s.isDirectory(), () => false));
  if (ref.kind === 'folder') return { folder: dirFolder(ref.path), info: { folder: ref.path } };
  if (ref.kind === 'url') return { folder: urlFolder(ref.url), info: { url: ref.url } };
  const hub = await openHubModel(ref.repoId, { revision: ref.revision, offline: src.offline || undefined, log: src.log, onProgress: src.onDownload });
  const p = hub.provenance;
  src.log(`${p.repo}@${p.revision}: commit ${p.commit}, ${p.files.length} files in ${hub.snapshotDir}${p.fetchedBytes ? `, ${p.fetchedBytes} bytes fetched` : ', nothing fetched'}`);
  return { folder: hub.folder, variant: hub.variant, info: p };
}

export async function loadRestoreModels(engine: Engine, src: ModelSource): Promise<LoadedRestoreModels> {
  const disposers: (() => void)[] = [];
  const notes: string[] = [];
  const dispose = () => disposers.splice(0).reverse().forEach((d) => d());
  const build = <T>(source: SafetensorsFile, make: (w: WeightLoader) => T): T => {
    let loader: WeightLoader | undefined;
    const m = WeightLoader.build(engine, source, { dtype: 'f32', allowNonFinite: src.allowNonFinite }, (w) => {
      loader = w;
      return make(w);
    });
    disposers.push(() => loader!.disposeAll());
    return m;
  };
  try {
    let unet: UNet2DConditionModel;
    let vae: AutoencoderKL;
    let tokenizer: ClipTokenizer;
    let encoder: ClipTextModel;
    let schedulerConfig: Json = { ...SD15_SCHEDULER_CONFIG };
    let goldenSigma: string | undefined;
    let modelInfo: LoadedRestoreModels['model'];
    if (src.golden) {
      const root = dirFolder(src.golden);
      const unetDir = dirFolder(`${src.golden}/unet_mini`);
      const vaeDir = dirFolder(`${src.golden}/vae_mini`);
      const clipDir = dirFolder(`${src.golden}/clip_text_mini`);
      if (!(await root.exists('unet_mini/config.json'))) throw new SiloError(`${src.golden}: not the golden folder (no unet_mini/config.json)`);
      const unetCfg = parseUNetConfig(await readJson(unetDir, 'config.json'), `${unetDir.location}/config.json`);
      unet = build(await readSafetensors(unetDir, 'diffusion_pytorch_model.safetensors'), (w) => new UNet2DConditionModel(w, unetCfg));
      const vaeCfg = parseVaeConfig(await readJson(vaeDir, 'config.json'));
      vae = build(await readSafetensors(vaeDir, 'diffusion_pytorch_model.safetensors'), (w) => new AutoencoderKL(w, vaeCfg));
      const tokens = await readJson(clipDir, 'tokens.json');
      tokenizer = await ClipTokenizer.fromBpeGzip(await clipDir.bytes('bpe_simple_vocab_16e6.txt.gz'), {
        padTokenId: tokens['pad'] as number,
        contextLength: tokens['context_length'] as number,
      });
      const clipCfg = parseClipTextConfig(await readJson(clipDir, 'config.json'), `${clipDir.location}/config.json`);
      encoder = build(await readSafetensors(clipDir, 'model.safetensors'), (w) => new ClipTextModel(w, clipCfg));
      notes.push(`tiny golden models from ${src.golden}: unet_mini, vae_mini, clip_text_mini; SD-1.5 DDPM scheduler config`);
      goldenSigma = `${src.golden}/silo_cnn/golden.safetensors:input.sigma_emb`;
    } else if (src.model) {
      // --model: a folder on disk (an existing directory wins), a URL, or a hub repo id.
      const { folder, variant, info } = await openModelSource(src);
      modelInfo = info;
      const pipe = await loadDiffusersPipeline(engine, folder, {
        variant,
        allowNonFinite: src.allowNonFinite,
        onProgress: (p) => {
          if (p.phase === 'upload' && p.total && p.loaded === p.total) src.log(`loaded ${p.component} (${p.total} tensors)`);
        },
      });
      disposers.push(() => pipe.dispose());
      unet = pipe.unet!;
      vae = pipe.vae!;
      tokenizer = pipe.tokenizer!;
      encoder = pipe.textEncoder!;
      schedulerConfig = pipe.schedulerConfig!;
      notes.push(`diffusers pipeline from ${src.model}`);
    } else {
      throw new SiloError('restore: give --model <diffusers folder> or --golden <../shared/golden>');
    }
    // The weights' NaN/Inf checks, before the text encoder first runs.
    await WeightLoader.verify(engine);
    const models: RestoreModels = { unet, vae, scheduler: new DDPMScheduler(schedulerConfig), text: await embedPrompt(engine, tokenizer, encoder, src.prompt) };
    disposers.push(() => models.text.dispose());
    if (src.needUncond) {
      models.uncond = await embedPrompt(engine, tokenizer, encoder, src.negativePrompt ?? '');
      disposers.push(() => models.uncond!.dispose());
    }

    // The operator.
    if (src.method === 'silo-cnn') {
      const path = src.operator ?? (src.golden ? `${src.golden}/silo_cnn/weights.safetensors` : undefined);
      if (!path) throw new SiloError('restore: method silo-cnn needs --operator <cnn weights.safetensors>');
      if (!path.endsWith('.safetensors')) throw new SiloError(`${path}: operators are read from .safetensors; convert a PyTorch checkpoint first with 'silo convert ${path} out.safetensors'`);
      const { dir, name } = splitPath(path);
      const weights = await readSafetensors(dirFolder(dir), name);
      const cfg = inferDegradationConfig(weights);
      models.cnn = build(weights, (w) => new DegradationModel(w, cfg));
      notes.push(`CNN operator ${path} (sigma_condition ${cfg.sigmaCondition})`);
    } else if (src.method === 'silo-rg') {
      if (!src.operator) throw new SiloError('restore: method silo-rg needs --operator <folder with config.json and weights.safetensors>');
      const folder = dirFolder(src.operator);
      const cfg = aggregationConfig(await readJson(folder, 'config.json'));
      models.readout = build(await readSafetensors(folder, 'weights.safetensors'), (w) => new AggregationNetwork(w, cfg));
      notes.push(`readout operator ${src.operator}`);
    }

    // e_sigma: supplied, or (golden models) the silo_cnn case's, since the mini UNet's time embedding is too narrow.
    const opCfg = models.cnn?.config ?? models.readout?.config;
    const sigmaPath = src.sigmaEmb ?? (opCfg?.sigmaCondition && opCfg.sigmaEmbDim !== unet.config.timeEmbedDim ? goldenSigma : undefined);
    if (sigmaPath && opCfg?.sigmaCondition) {
      const [file, tensorName] = sigmaPath.split(':') as [string, string | undefined];
      const { dir, name } = splitPath(file);
      const st = await readSafetensors(dirFolder(dir), name);
      const key = tensorName ?? st.names().find((n) => st.info(n).shape.length === 2);
      if (!key || !st.has(key)) throw new SiloError(`${file}: no tensor "${tensorName ?? '[1, D]'}" for the sigma embedding`);
      const shape = st.info(key).shape;
      const values = st.getF32(key).subarray(0, shape[shape.length - 1]!);
      models.sigmaEmb = engine.tensor(values, [1, values.length], 'f32', 'sigma_emb');
      disposers.push(() => models.sigmaEmb!.dispose());
      notes.push(`sigma embedding ${file}:${key}[0] (the UNet's ${unet.config.timeEmbedDim}-d time embedding cannot feed the operator's ${opCfg.sigmaEmbDim}-d sigma branch)`);
    }
    await WeightLoader.verify(engine);
    return { models, notes, operatorLatentSize: opCfg?.latentSize, model: modelInfo, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}

