// The models a restoration runs, loaded from folders (FolderAccess: a directory in Node, a URL or a
// picked folder in the browser): a diffusers Stable Diffusion folder, or the tiny golden models of
// ../shared/golden (unet_mini, vae_mini, clip_text_mini, silo_cnn), which make the whole pipeline
// runnable on a CPU adapter; plus the operator a latent sampler needs. Browser-safe: resolving paths,
// URLs and hub ids to folders is models-node.ts's job.

import type { Engine } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import { ArgumentError, LimitError, SiloError } from '../engine/errors.js';
import type { DType } from '../engine/dtype.js';
import { subFolder, type FolderAccess } from '../formats/folder.js';
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
import { PreserveDegradationNetwork } from '../models/silo/preserve.js';
import { AggregationNetwork } from '../models/silo/readout.js';
import { aggregationConfig, inferDegradationConfig, inferPreserveConfig, isPreserveStateDict } from '../models/silo/config.js';
import { DDPMScheduler } from '../solvers/schedulers/ddpm.js';
import { SD15_SCHEDULER_CONFIG } from '../solvers/schedulers/config.js';
import type { RestoreModels } from './loop.js';

type Json = Record<string, unknown>;

const readJson = (folder: FolderAccess, name: string) => readJsonAny<Json>(folder, name);

/** A file in a folder, with the name users know it by. */
export interface FileRef {
  folder: FolderAccess;
  name: string;
  label: string;
}

/** What to load. Exactly one of `pipeline` and `golden`. */
export interface ModelSpec {
  /** A diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/). */
  pipeline?: { folder: FolderAccess; variant?: string; label: string };
  /** ../shared/golden: the tiny models. */
  golden?: FolderAccess;
  /**
   * The operator: CNN weights (a .safetensors file: SILO's DegradationModel, or its preserve
   * LatentDegradationNetwork, told apart by the state dict) or a readout folder (config.json + weights.safetensors).
   */
  operator?: { kind: 'cnn'; file: FileRef } | { kind: 'readout'; folder: FolderAccess; label: string };
  /** A safetensors file holding e_sigma, optionally naming the tensor (default the first [1, D] tensor). */
  sigmaEmb?: FileRef & { tensor?: string };
  /** Load weights holding NaN/Inf anyway (WeightLoaderOptions.allowNonFinite); default: a WeightError. */
  allowNonFinite?: boolean;
  /**
   * The parameters' storage (default 'f32'). 'f16' halves the weights' memory; activations, kept tapes
   * and gradients stay f32 (mixed precision; needs shader-f16). 'auto': f16 where the adapter has it.
   */
  weights?: WeightsDtype;
  log?: (line: string) => void;
}

export type WeightsDtype = DType | 'auto';

/** The storage dtype `weights` asks for on this engine ('auto': f16 where the adapter has shader-f16). */
export function resolveWeightsDtype(engine: Engine, weights: WeightsDtype = 'f32'): DType {
  if (weights === 'auto') return engine.hasF16 ? 'f16' : 'f32';
  if (weights !== 'f32' && weights !== 'f16') throw new ArgumentError(`restore: weights must be 'f32', 'f16' or 'auto', got ${JSON.stringify(weights)}`);
  if (weights === 'f16' && !engine.hasF16) throw new LimitError('restore: f16 weights need the shader-f16 feature, which this adapter does not offer (use f32 or auto)');
  return weights;
}

/** Loaded models; prompts are embedded on demand (and cached) by `embed`. */
export interface LoadedModels {
  /** The prior, the autoencoder, the scheduler and the operator (no prompt embedding: see embed). */
  base: Omit<RestoreModels, 'text' | 'uncond'>;
  /** Notes for the report (what was loaded from where). */
  notes: string[];
  /** The latent side the operator is built for (SILO's operators fix 64), when there is one (the preserve CNN takes any). */
  operatorLatentSize?: number;
  /** The weights' storage dtype (activations and gradients are f32 either way). */
  weights: DType;
  /** The text encoder's output for a prompt, [1, 77, D]; cached per prompt, owned by this object. */
  embed(prompt: string): Promise<Tensor>;
  dispose(): void;
}

export async function loadModels(engine: Engine, spec: ModelSpec): Promise<LoadedModels> {
  const disposers: (() => void)[] = [];
  const notes: string[] = [];
  const dispose = () => disposers.splice(0).reverse().forEach((d) => d());
  const weights = resolveWeightsDtype(engine, spec.weights);
  const build = <T>(source: SafetensorsFile, make: (w: WeightLoader) => T): T => {
    let loader: WeightLoader | undefined;
    const m = WeightLoader.build(engine, source, { dtype: weights, activations: 'f32', allowNonFinite: spec.allowNonFinite }, (w) => {
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
    let goldenSigma: FileRef & { tensor?: string } | undefined;
    if (spec.golden && spec.pipeline) throw new SiloError('restore: give either a diffusers folder or the golden folder, not both');
    if (spec.golden) {
      const root = spec.golden;
      if (!(await root.exists('unet_mini/config.json'))) throw new SiloError(`${root.location}: not the golden folder (no unet_mini/config.json)`);
      const unetDir = subFolder(root, 'unet_mini');
      const vaeDir = subFolder(root, 'vae_mini');
      const clipDir = subFolder(root, 'clip_text_mini');
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
      notes.push(`tiny golden models from ${root.location}: unet_mini, vae_mini, clip_text_mini; SD-1.5 DDPM scheduler config`);
      goldenSigma = { folder: subFolder(root, 'silo_cnn'), name: 'golden.safetensors', tensor: 'input.sigma_emb', label: `${root.location}/silo_cnn/golden.safetensors` };
    } else if (spec.pipeline) {
      const pipe = await loadDiffusersPipeline(engine, spec.pipeline.folder, {
        variant: spec.pipeline.variant,
        dtype: weights,
        activations: 'f32',
        allowNonFinite: spec.allowNonFinite,
        onProgress: (p) => {
          if (p.phase === 'upload' && p.total && p.loaded === p.total) spec.log?.(`loaded ${p.component} (${p.total} tensors)`);
        },
      });
      disposers.push(() => pipe.dispose());
      unet = pipe.unet!;
      vae = pipe.vae!;
      tokenizer = pipe.tokenizer!;
      encoder = pipe.textEncoder!;
      schedulerConfig = pipe.schedulerConfig!;
      notes.push(`diffusers pipeline from ${spec.pipeline.label}`);
    } else {
      throw new SiloError('restore: no models given (a diffusers folder, a hub repo id, or the golden folder)');
    }
    // The weights' NaN/Inf checks, before the text encoder first runs.
    await WeightLoader.verify(engine);
    const base: LoadedModels['base'] = { unet, vae, scheduler: new DDPMScheduler(schedulerConfig) };

    if (spec.operator?.kind === 'cnn') {
      const f = spec.operator.file;
      if (!f.name.endsWith('.safetensors')) throw new SiloError(`${f.label}: operators are read from .safetensors; convert a PyTorch checkpoint first with 'silo convert ${f.label} out.safetensors'`);
      const weights = await readSafetensors(f.folder, f.name);
      if (isPreserveStateDict(weights)) {
        const cfg = inferPreserveConfig(weights);
        base.preserve = build(weights, (w) => new PreserveDegradationNetwork(w, cfg));
        notes.push(`preserve CNN operator (LatentDegradationNetwork) ${f.label} (base ${cfg.baseChannels}, ${cfg.numBlocks} blocks, max_noise ${cfg.maxNoise})`);
      } else {
        const cfg = inferDegradationConfig(weights);
        base.cnn = build(weights, (w) => new DegradationModel(w, cfg));
        notes.push(`CNN operator ${f.label} (sigma_condition ${cfg.sigmaCondition})`);
      }
    } else if (spec.operator?.kind === 'readout') {
      const { folder, label } = spec.operator;
      const cfg = aggregationConfig(await readJson(folder, 'config.json'));
      base.readout = build(await readSafetensors(folder, 'weights.safetensors'), (w) => new AggregationNetwork(w, cfg));
      notes.push(`readout operator ${label}`);
    }

    // e_sigma: supplied, or (golden models) the silo_cnn case's, since the mini UNet's time embedding is too narrow.
    const opCfg = base.cnn?.config ?? base.readout?.config;
    const sigmaRef = spec.sigmaEmb ?? (opCfg?.sigmaCondition && opCfg.sigmaEmbDim !== unet.config.timeEmbedDim ? goldenSigma : undefined);
    if (sigmaRef && opCfg?.sigmaCondition) {
      const st = await readSafetensors(sigmaRef.folder, sigmaRef.name);
      const key = sigmaRef.tensor ?? st.names().find((n) => st.info(n).shape.length === 2);
      if (!key || !st.has(key)) throw new SiloError(`${sigmaRef.label}: no tensor "${sigmaRef.tensor ?? '[1, D]'}" for the sigma embedding`);
      const shape = st.info(key).shape;
      const values = st.getF32(key).subarray(0, shape[shape.length - 1]!);
      base.sigmaEmb = engine.tensor(values, [1, values.length], 'f32', 'sigma_emb');
      disposers.push(() => base.sigmaEmb!.dispose());
      notes.push(`sigma embedding ${sigmaRef.label}:${key}[0] (the UNet's ${unet.config.timeEmbedDim}-d time embedding cannot feed the operator's ${opCfg.sigmaEmbDim}-d sigma branch)`);
    }
    await WeightLoader.verify(engine);

    const prompts = new Map<string, Tensor>();
    disposers.push(() => {
      for (const t of prompts.values()) t.dispose();
      prompts.clear();
    });
    const embed = async (prompt: string): Promise<Tensor> => {
      let t = prompts.get(prompt);
      if (!t) {
        const ids = tokenizer.call(prompt).inputIds;
        const { result } = await runProgram(engine, 'restore/text_encoder', (rec) => encoder.forward(rec, ids, [1, ids.length]));
        result.pooledOutput.dispose();
        t = result.lastHiddenState;
        prompts.set(prompt, t);
      }
      return t;
    };
    if (weights === 'f16') notes.push('weights stored in f16, activations and gradients in f32 (mixed precision)');
    return { base, notes, weights, operatorLatentSize: opCfg?.latentSize, embed, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}
