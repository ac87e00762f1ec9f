// Public entry of silo-webgpu (browser and Node). The Node-only safetensors file reader lives in
// src/formats/safetensors-node.ts so browser bundles never include node: modules.

export { Engine, type EngineOptions, type AdapterReport, type EngineLimits } from './engine/device.js';
export { Tensor } from './engine/tensor.js';
export { Recorder, runProgram, type ProgramReport, type DispatchArgs, type OpStats } from './engine/recorder.js';
export { captureProgram, ReplayProgram, PreparedReplay, type ReplayReport, type ReplayOptions } from './engine/replay.js';
export { stepParam, mapScalar, isStepValue, type StepValue, type StepParams, type Scalar } from './engine/step-value.js';
export { Tuning, loadTuning, adapterKey, opfsTuningStore, localStorageTuningStore, browserTuningStore, type TuningStore, type TuningTable } from './engine/tuning.js';
export { tuneConv3x3, conv3x3Candidates, type Conv3x3Shape, type TuneResult, type TuneOptions } from './engine/tune.js';
export { unetConv3x3Shapes, SD15_UNET_WIDTHS, type UNetWidths } from './models/unet/conv-shapes.js';
export { Kernel, type KernelSpec } from './engine/kernel.js';
export { SiloError, KernelError, DeviceLostError, LimitError, ArgumentError } from './engine/errors.js';
export { type DType, f32ToF16Bits, f16BitsToF32, f32ToBf16Bits, bf16BitsToF32 } from './engine/dtype.js';
export * from './formats/safetensors.js';
export { philox4x32, uniformCPU, normalCPU } from './engine/random.js';

export * from './engine/ops/elementwise.js';
export * from './engine/ops/matmul.js';
export * from './engine/ops/conv2d.js';
export * from './engine/ops/norm.js';
export * from './engine/ops/softmax.js';
export * from './engine/ops/attention.js';
export * from './engine/ops/resample.js';
export * from './engine/ops/layout.js';
export * from './engine/ops/embedding.js';
export * from './engine/ops/gather.js';
export * from './engine/ops/reduce.js';
export * from './engine/ops/random.js';
export * from './engine/ops/region.js';
export * from './engine/ops/gaussian.js';

// Loading models and running restorations.
export { urlFolder, type FolderAccess } from './formats/folder.js';
export { loadDiffusersPipeline, type DiffusersPipeline, type PipelineOptions, type PipelineProgress } from './models/pipeline.js';
export { UNet2DConditionModel } from './models/unet/unet.js';
export { sampleVjp } from './models/unet/vjp.js';
export { readoutSampleVjp, readoutForward } from './models/unet/readout-vjp.js';
export { AutoencoderKL } from './models/vae/autoencoder.js';
export { decodeVjp, encodeMeanVjp } from './models/vae/vjp.js';
export { ClipTextModel } from './models/clip/text-encoder.js';
export { ClipTokenizer } from './models/clip/tokenizer.js';
export { TinyAutoencoder } from './models/taesd/autoencoder.js';
export { taesdDecodeVjp, taesdEncodeVjp } from './models/taesd/vjp.js';
export { DegradationModel } from './models/silo/cnn.js';
export { AggregationNetwork } from './models/silo/readout.js';
export { PreserveDegradationNetwork } from './models/silo/preserve.js';
export { preserveNetworkVjp } from './models/silo/preserve-vjp.js';
export { inferDegradationConfig, inferPreserveConfig, preserveConfig, aggregationConfig, sigmaTimestep } from './models/silo/config.js';
export { WeightLoader } from './models/weights.js';
export * from './solvers/schedulers/index.js';
export * from './solvers/degradations/index.js';
export { makeDegradation, DEGRADATION_TASKS, type DegradationTask } from './solvers/degradations/tasks.js';
export * from './solvers/metrics.js';
export { restore, RestoreAbortedError, NonFiniteStepError, type RestoreModels, type RestoreOptions, type RestoreReport, type RestoreProgress } from './restore/loop.js';
export { SAMPLERS, RESTORE_METHODS, samplerFor, isRestoreMethod, type RestoreMethod } from './restore/registry.js';
export type { Sampler, StepInputs, OperatorKind } from './restore/sampler.js';
export { RESTORE_DEFAULTS, methodEta, defaultMethod } from './restore/defaults.js';
export { LATENT_FACTOR, measurementFactor, checkMeasurementShape, resolveSize } from './restore/size.js';
export { loadModels, type ModelSpec, type LoadedModels, type FileRef } from './restore/models.js';
export { parseBatchList, folderItems, parseShard, shardItems, batchSummary, BatchError, type BatchItem, type Shard } from './restore/batch.js';
export { RELEASED_OPERATORS, releasedOperator, SILO_RELEASE, OperatorNotReleasedError, type ReleasedOperator } from './hub/silo-operators.js';
export { RestorationSession, type RestoreRequest, type RestorationResult, type RunOptions, type Preview, type ResolvedSettings } from './restore/session.js';
// In a web page (a worker): model sources streamed into a verified weight cache, picked folders, limit advice.
export { resolveBrowserModels, type BrowserModelSource, type BrowserOperatorSource, type ResolvedBrowserModels } from './restore/models-browser.js';
export { openHubModelInBrowser, openUrlFolderInBrowser, type BrowserHubOptions, type BrowserSourceOptions, type StoredFolder } from './hub/hub-browser.js';
export { openWeightStore, StoreError, type WeightStore, type StoredFile, type StoreKind, type PutExpect, type StoreErrorCode } from './hub/weight-store.js';
export { pickedFilesFolder, directoryHandleFolder, blobByteReader } from './formats/picked-folder.js';
export { ChunkedBytes } from './formats/chunked-bytes.js';
export { Sha256, sha256Hex } from './hub/sha256.js';
export { limitAdvice, restorationBytesPerPixel, sizeThatFits } from './restore/limit-advice.js';
export { siloStep, cnnMeasurement } from './solvers/samplers/silo.js';
export { latentDpsStep, psldStep, pixelMeasurement } from './solvers/samplers/pixel.js';
export { guidedStep, type LatentMeasurement, type GuidedStep } from './solvers/samplers/guided.js';
export { unetEpsModel, type EpsModel, type EpsPass } from './solvers/samplers/eps-model.js';
export type { DiffusionPrior } from './solvers/samplers/denoiser.js';
export * from './io/index.js';
