// One training run from settings, images and an autoencoder: what `silo train` and the page both build
// (browser-safe; reading files and saving bytes are the surfaces' job). It makes the operator (new, with
// PyTorch's default init, or from a checkpoint), the degradation, the crop sampler, the pair source
// (live or cached), the validation set and the checkpoint metadata, checks a resume against the settings
// it was started with, and runs the loop.

import type { Engine } from '../../engine/device.js';
import { ArgumentError, assertArg } from '../../engine/errors.js';
import type { TensorSource } from '../../formats/safetensors.js';
import type { LossKind } from '../../engine/ops/loss.js';
import { WeightLoader, type LoadedModel } from '../../models/weights.js';
import { DegradationModel } from '../../models/silo/cnn.js';
import { AggregationNetwork } from '../../models/silo/readout.js';
import { aggregationConfig, degradationConfig, inferDegradationConfig, sd15AggregationArgs, type AggregationNetworkConfig, type DegradationModelConfig } from '../../models/silo/config.js';
import type { UNet2DConditionModel } from '../../models/unet/unet.js';
import type { BlurKernel } from '../degradations/kernel-file.js';
import { isDegradationTask, makeDegradation, DEGRADATION_TASKS, type DegradationSetup, type DegradationTask } from '../degradations/tasks.js';
import { learningRateSchedule, type ScheduleKind } from './schedule.js';
import { checkpointInfo, checkpointParameters, CheckpointError, resumeOptimizer, stateShape } from './checkpoint.js';
import { readoutArgsFromShapes } from '../../hub/silo-checkpoint.js';
import { newAggregationNetwork, newDegradationModel } from './init.js';
import { cnnOperator, readoutOperator, type ReadoutPrior, type TrainableOperator } from './operators.js';
import { CropSampler, packImages, validationCrop, type NamedImage } from './data.js';
import type { ColorJitterOptions } from './jitter.js';
import type { LatentCodec } from './latent-codec.js';
import type { SigmaEmbedder } from './sigma-embedding.js';
import { LatentPairCache, liveSource, type PairSource } from './sources.js';
import { OperatorTrainer } from './trainer.js';
import { exportBytes, trainLoop, type TrainLoopOptions, type TrainLoopResult, type ValidationSetup } from './loop.js';

/** The settings a run is defined by; a resumed run must keep them (steps and intervals may change). */
export interface TrainSettings {
  operator: 'cnn' | 'readout';
  task: DegradationTask;
  /** Training crops are size x size; the latent side is size / the encoder's factor. */
  size: number;
  batch: number;
  /** Micro-batches summed per optimizer step (effective batch = batch x micro). */
  micro: number;
  lr: number;
  schedule: ScheduleKind;
  warmup: number;
  /** Total steps the schedule decays over (linear / cosine). */
  scheduleSteps?: number;
  maxGradNorm?: number;
  loss: LossKind;
  /** Clamp of the target ([-4, 4] in SILO), or none. */
  clamp?: [number, number];
  sigmaRange: [number, number];
  /** Crop area fraction range (RandomResizedCrop's scale). */
  cropScale: [number, number];
  jitter: ColorJitterOptions;
  /** 0: new crops every step; N: N fixed crops encoded once. */
  cache: number;
  seed: number;
  /** The operator's hidden widths times this (absent: 1, SILO's module; see DegradationModelConfig.width). */
  width?: number;
}

export const CNN_DEFAULTS: Omit<TrainSettings, 'task' | 'size'> = {
  operator: 'cnn',
  batch: 16,
  micro: 1,
  lr: 1e-4,
  schedule: 'constant',
  warmup: 0,
  loss: 'l1',
  clamp: [-4, 4],
  sigmaRange: [0, 0.04],
  cropScale: [0.75, 1],
  jitter: { brightness: 0.1, contrast: 0.1, saturation: 0.1, hue: 0.02 },
  cache: 0,
  seed: 0,
};

/** SILO's readout training: AdamW (weight decay 0), lr 2e-4, sigma ~ U(0, 0.1). */
export const READOUT_DEFAULTS: Omit<TrainSettings, 'task' | 'size'> = {
  ...CNN_DEFAULTS,
  operator: 'readout',
  lr: 2e-4,
  sigmaRange: [0, 0.1],
};

export interface TrainSessionInput {
  settings: TrainSettings;
  codec: LatentCodec;
  /** Required for a sigma-conditioned operator (every one we build). */
  embedder: SigmaEmbedder;
  train: NamedImage[];
  /** Held-out images (removed from training by name if also listed there). */
  validate: NamedImage[];
  /** Resume from this checkpoint (its metadata must match the settings). */
  resume?: TensorSource & { metadata?: Record<string, string> };
  /** A saved latent cache to reuse (cache > 0). */
  cacheFile?: TensorSource & { metadata?: Record<string, string> };
  /** Encoding progress of the cache. */
  onCacheProgress?: (done: number, total: number) => void;
  /** motion_blur's kernel (required for that task, refused for the others). */
  motionKernel?: BlurKernel;
  /** The frozen prior UNet and the empty prompt's embedding: the readout operator's input (readout only). */
  prior?: ReadoutPrior;
}

/** A kernel's identity for checkpoints and caches: its side and an FNV-1a hash of its taps. */
export function kernelFingerprint(k: BlurKernel): string {
  let h = 0x811c9dc5;
  for (const b of new Uint8Array(new Float64Array(k.kernel).buffer)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return `${k.size}x${k.size} fnv1a:${h.toString(16).padStart(8, '0')}`;
}

export function checkSettings(s: TrainSettings): void {
  const int = (v: number, what: string, min: number) => assertArg(Number.isInteger(v) && v >= min, `train: ${what} ${v} must be an integer >= ${min}`);
  assertArg(s.operator === 'cnn' || s.operator === 'readout', `train: operator "${String(s.operator)}" must be cnn or readout`);
  assertArg(isDegradationTask(s.task), `train: unknown task "${String(s.task)}" (known: ${DEGRADATION_TASKS.join(', ')})`);
  int(s.size, 'crop size', 8);
  int(s.batch, 'batch', 1);
  int(s.micro, 'micro-batches', 1);
  int(s.warmup, 'warm-up', 0);
  int(s.cache, 'cache size', 0);
  int(s.seed, 'seed', 0);
  assertArg(s.seed <= 0xffffffff, `train: seed ${s.seed} must be below 2^32`);
  assertArg(Number.isFinite(s.lr) && s.lr > 0, `train: learning rate ${s.lr} must be > 0`);
  assertArg(s.loss === 'l1' || s.loss === 'mse', `train: loss "${String(s.loss)}" must be l1 or mse`);
  if (s.width !== undefined) int(s.width, 'width', 1);
  assertArg(s.operator === 'cnn' || (s.width ?? 1) === 1, `train: width ${s.width} widens the CNN operator only (the readout operator keeps SILO's widths)`);
  assertArg(s.cropScale[0] > 0 && s.cropScale[0] <= s.cropScale[1] && s.cropScale[1] <= 1, `train: crop scale [${s.cropScale.join(', ')}] must satisfy 0 < lo <= hi <= 1`);
}

/** The operator SILO's CNN would be for this encoder and crop size (latent side = size / factor). */
export function cnnConfigFor(codec: LatentCodec, embedder: SigmaEmbedder, size: number, width = 1): DegradationModelConfig {
  if (size % codec.factor !== 0) throw new ArgumentError(`train: crop size ${size} is not a multiple of the encoder's factor ${codec.factor}`);
  return degradationConfig({ latent_dim: codec.channels, sigma_condition: true, latent_size: size / codec.factor, sigma_emb_dim: embedder.dim, width });
}

/**
 * SILO's readout operator (silo_utils' SD-1.5 construction) for this prior, encoder and crop size: one
 * feature per up-block ResNet of the UNet (their widths), the sigma map and head at the latent side
 * (SILO: 64, for 512 crops), e_sigma of the embedder's width, the head's output the encoder's channels.
 */
export function readoutConfigFor(codec: LatentCodec, embedder: SigmaEmbedder, unet: UNet2DConditionModel, size: number): AggregationNetworkConfig {
  if (size % codec.factor !== 0) throw new ArgumentError(`train: crop size ${size} is not a multiple of the encoder's factor ${codec.factor}`);
  const n = size / codec.factor;
  if (unet.config.inChannels !== codec.channels) throw new ArgumentError(`train: the prior UNet takes ${unet.config.inChannels}-channel latents, the encoder ${codec.name} makes ${codec.channels}`);
  if (n % unet.sizeMultiple !== 0) throw new ArgumentError(`train: crop size ${size} gives a ${n}x${n} latent; the prior UNet needs a multiple of ${unet.sizeMultiple} (crops a multiple of ${unet.sizeMultiple * codec.factor})`);
  return aggregationConfig({
    ...sd15AggregationArgs(),
    feature_dims: unet.upBlocks.flatMap((b) => b.resnets.map((r) => r.outChannels)),
    output_head_channels: codec.channels,
    latent_size: n,
    sigma_emb_dim: embedder.dim,
  });
}

/**
 * The settings that define the stream of batches and the model (a resume must keep every one), as JSON
 * with sorted keys: the CLI and the page build their settings in different orders.
 */
function fixedPart(s: TrainSettings, extra: Record<string, unknown> = {}): string {
  // Width 1 is SILO's module, written as no width at all: checkpoints from before the option still match.
  const { scheduleSteps: _, width, ...rest } = s;
  if (width !== undefined && width !== 1) (rest as Record<string, unknown>)['width'] = width;
  const sorted = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, x]) => [k, sorted(x)])) : v;
  return JSON.stringify(sorted({ ...rest, ...extra }));
}

/**
 * What a latent cache holds depends on the crops (data, size, scale, jitter, seed), the pairs (task, sigma
 * range, one sigma per batch of `batch`, the encoder) and its length, not on the optimizer or the loss:
 * a cache is reused by any run that agrees on these, e.g. at another learning rate.
 */
function cacheKey(s: TrainSettings, encoder: string, data: string[], kernel?: string): string {
  const { task, size, batch, sigmaRange, cropScale, jitter, cache, seed } = s;
  return fixedPart({ task, size, batch, sigmaRange, cropScale, jitter, cache, seed } as TrainSettings, { encoder, data, ...(kernel ? { kernel } : {}) });
}

/** What identifies the frozen prior in a checkpoint: the UNet's shape and the prompt the features are read at. */
function priorName(p: ReadoutPrior): string {
  const c = p.unet.config;
  return JSON.stringify({ unet: { in: c.inChannels, blocks: c.blockOutChannels, layers: c.layersPerBlock, context: p.context.shape[2] }, timestep: 0, prompt: '' });
}

export class TrainSession {
  private constructor(
    readonly settings: TrainSettings,
    readonly trainer: OperatorTrainer,
    readonly source: PairSource,
    readonly validation: ValidationSetup['images'],
    readonly degradation: DegradationSetup,
    private readonly loaded: LoadedModel<DegradationModel | AggregationNetwork>,
    private readonly op: TrainableOperator,
    readonly metadata: Record<string, string>,
    /** The operator's config: DegradationModelConfig (cnn) or AggregationNetworkConfig (readout). */
    readonly operatorConfig: DegradationModelConfig | AggregationNetworkConfig,
    /** The cache (when settings.cache > 0), for saving. */
    readonly cache?: LatentPairCache,
  ) {}

  static async create(engine: Engine, input: TrainSessionInput): Promise<TrainSession> {
    const s = input.settings;
    checkSettings(s);
    const { codec, embedder, prior } = input;
    const readout = s.operator === 'readout';
    assertArg(!readout || prior, 'train: the readout operator reads the prior UNet\'s features: give the prior (a Stable Diffusion model with its UNet and text encoder)');
    assertArg(readout || !prior, 'train: a prior UNet is only used by the readout operator');
    const heldOut = new Set(input.validate.map((v) => v.name));
    const train = input.train.filter((t) => !heldOut.has(t.name));
    assertArg(train.length > 0, `train: no training images left (${input.train.length} given, all of them held out)`);
    const config = readout ? readoutConfigFor(codec, embedder, prior!.unet, s.size) : cnnConfigFor(codec, embedder, s.size, s.width);
    const kernel = input.motionKernel;
    assertArg(s.task !== 'motion_blur' || kernel, 'train: motion_blur needs its blur kernel (a kernel file: .npy, text, .safetensors or PNG)');
    assertArg(s.task === 'motion_blur' || !kernel, `train: a blur kernel is only used by motion_blur (the task is ${s.task})`);
    const metadata: Record<string, string> = {
      train_settings: fixedPart(s),
      operator_config: JSON.stringify(config),
      encoder: codec.name,
      sigma_embedding: `${embedder.kind} (${embedder.dim})`,
      data: JSON.stringify(train.map((t) => t.name)),
      ...(kernel ? { kernel: kernelFingerprint(kernel) } : {}),
      ...(readout ? { prior: priorName(prior!) } : {}),
    };

    let loaded: LoadedModel<DegradationModel | AggregationNetwork>;
    if (input.resume) {
      const file = input.resume;
      checkpointInfo(file);
      const meta = file.metadata ?? {};
      for (const k of ['train_settings', 'encoder', 'sigma_embedding', 'data', 'kernel', 'prior'] as const) {
        if (meta[k] !== metadata[k]) {
          throw new CheckpointError(`${file.source}: the checkpoint was trained with ${k} ${meta[k] ?? '(none)'}; this run has ${metadata[k] ?? '(none)'}. Resume with the same settings and data (only the step count and the intervals may change)`);
        }
      }
      const params = checkpointParameters(file);
      if (readout) {
        if (meta['operator_config'] !== metadata['operator_config']) throw new CheckpointError(`${file.source}: the operator in the checkpoint is ${meta['operator_config'] ?? '(not recorded)'}, this run needs ${metadata['operator_config']}`);
        loaded = WeightLoader.load(engine, params, { dtype: 'f32' }, (w) => new AggregationNetwork(w, config as AggregationNetworkConfig, { trainable: true }));
      } else {
        const got = inferDegradationConfig(params);
        if (JSON.stringify(got) !== JSON.stringify(config)) throw new CheckpointError(`${file.source}: the operator in the checkpoint is ${JSON.stringify(got)}, this run needs ${JSON.stringify(config)}`);
        loaded = WeightLoader.load(engine, params, { dtype: 'f32' }, (w) => new DegradationModel(w, config as DegradationModelConfig));
      }
    } else if (readout) loaded = await newAggregationNetwork(engine, config as AggregationNetworkConfig, s.seed);
    else loaded = await newDegradationModel(engine, config as DegradationModelConfig, s.seed);

    let degradation: DegradationSetup | undefined;
    let trainer: OperatorTrainer | undefined;
    let op: TrainableOperator | undefined;
    try {
      if (loaded.model instanceof AggregationNetwork) {
        await loaded.model.syncMixing();
        op = readoutOperator(loaded.model, prior!);
      } else op = cnnOperator(loaded.model);
      degradation = makeDegradation(engine, s.task, s.size, s.size, kernel ? { motionKernel: kernel } : {});
      const lr = s.schedule === 'constant' && s.warmup === 0 ? s.lr : learningRateSchedule({ kind: s.schedule, lr: s.lr, warmup: s.warmup, total: s.scheduleSteps });
      trainer = new OperatorTrainer(
        engine,
        op,
        { codec, embedder, degradation: degradation.operator, sigmaRange: s.sigmaRange, loss: s.loss, clamp: s.clamp, seed: s.seed },
        // SILO: Adam for the CNN, AdamW with weight decay 0 for the readout operator (the same update).
        { lr, maxGradNorm: s.maxGradNorm, ...(readout ? { decoupled: true, weightDecay: 0 } : {}) },
      );
      const sampler = new CropSampler(train, { size: s.size, scale: s.cropScale, jitter: s.jitter }, s.seed);
      let source: PairSource;
      let cache: LatentPairCache | undefined;
      if (s.cache > 0) {
        const key = cacheKey(s, codec.name, train.map((t) => t.name), metadata['kernel']);
        cache = input.cacheFile ? LatentPairCache.fromSafetensors(input.cacheFile, key, s.seed) : await LatentPairCache.build(trainer, sampler, s.cache, s.batch, key, input.onCacheProgress);
        assertArg(cache.size === s.cache, `train: the cache holds ${cache.size} crops, the settings ask for ${s.cache}`);
        source = cache.source(engine, s.batch, s.micro);
      } else source = liveSource(trainer, sampler, s.batch, s.micro);
      if (input.resume) {
        resumeOptimizer(input.resume, trainer.params, trainer.opt);
        let state: unknown;
        try {
          state = JSON.parse(input.resume.metadata?.['data_state'] ?? '');
        } catch {
          throw new CheckpointError(`${input.resume.source}: metadata data_state is not JSON: the data position cannot be resumed`);
        }
        source.restore(state);
      }
      const validation = input.validate.map((v) => ({ name: v.name, ...packImages([validationCrop(v.image, s.size)]) }));
      return new TrainSession(s, trainer, source, validation, degradation, loaded, op, metadata, config, cache);
    } catch (e) {
      trainer?.dispose();
      op?.dispose();
      degradation?.operator.dispose();
      loaded.dispose();
      throw e;
    }
  }

  /** The operator being trained. */
  get model(): DegradationModel | AggregationNetwork {
    return this.loaded.model;
  }

  /** Runs the loop to `steps` optimizer steps (see TrainLoopOptions for the hooks). */
  run(o: Omit<TrainLoopOptions, 'trainer' | 'source' | 'validation' | 'metadata'> & { validation?: { sigma: number; every: number } }): Promise<TrainLoopResult> {
    const { validation, ...rest } = o;
    return trainLoop({
      ...rest,
      trainer: this.trainer,
      source: this.source,
      metadata: this.metadata,
      ...(validation && this.validation.length > 0 ? { validation: { ...validation, images: this.validation } } : {}),
    });
  }

  /**
   * The trained operator as `silo restore --operator` reads it (metadata says how it was trained): the CNN's
   * .safetensors, or the readout operator's weights.safetensors (beside config.json, see operatorFolderConfig).
   */
  exportOperator(): Promise<Uint8Array<ArrayBuffer>> {
    const { train_settings, operator_config, encoder, sigma_embedding, kernel, prior } = this.metadata;
    return exportBytes(this.trainer, {
      train_settings: train_settings!, operator_config: operator_config!, encoder: encoder!, sigma_embedding: sigma_embedding!,
      ...(kernel ? { kernel } : {}), ...(prior ? { prior } : {}), step: String(this.trainer.opt.step),
    });
  }

  /** A readout operator's config.json (SILO's constructor arguments); undefined for the CNN (its file says all). */
  operatorFolderConfig(): string | undefined {
    if (this.settings.operator !== 'readout') return undefined;
    // The arguments read off the tensors' shapes, as `silo convert` writes them for SILO's checkpoints.
    const { args } = readoutArgsFromShapes(new Map(this.trainer.params.map((p) => [p.name, stateShape(p)])), undefined, 'trained readout operator');
    return JSON.stringify(args, null, 1) + '\n';
  }

  dispose(): void {
    this.trainer.dispose();
    this.op.dispose();
    this.degradation.operator.dispose();
    this.loaded.dispose();
  }
}
