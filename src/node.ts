// Node entry of the published package (exports condition "node"): the whole browser-safe API of
// index.ts plus the helpers that read and write files. WebGPU comes from the optional peer
// dependency `webgpu`, loaded on the first Engine.create().

export * from './index.js';
export { dirFolder } from './formats/folder-node.js';
export { readSafetensorsFile, readSafetensorsIndex, writeSafetensorsFile, type WriteFileOptions } from './formats/safetensors-node.js';
export { readTorchCheckpointFile } from './formats/torch-checkpoint-node.js';
export { fileTuningStore, defaultTuningPath, cliTuningStore } from './cli/tuning-file.js';
export { readImageFile, writePng } from './io/image-node.js';
export { openHubModel, type HubFolder, type HubFolderOptions, type HubProvenance } from './hub/hub-folder-node.js';
export { resolveModelSpec, ModelsUnavailableError, type ModelPaths, type ResolvedModels } from './restore/models-node.js';
export { resolveReleasedOperator, pullOperators, siloCacheDir, type ResolvedOperator } from './hub/silo-release-node.js';
