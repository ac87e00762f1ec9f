// Public entry of silo-webgpu (browser and Node). The Node-only safetensors file reader lives in
// src/engine/safetensors-node.ts so browser bundles never include node: modules.

export { Engine, type EngineOptions, type AdapterReport, type EngineLimits } from './engine/device.js';
export { Tensor } from './engine/tensor.js';
export { Recorder, runProgram, type ProgramReport, type DispatchArgs, type OpStats } from './engine/recorder.js';
export { Kernel, type KernelSpec } from './engine/kernel.js';
export { SiloError, KernelError, DeviceLostError, LimitError, ArgumentError } from './engine/errors.js';
export { type DType, f32ToF16Bits, f16BitsToF32, f32ToBf16Bits, bf16BitsToF32 } from './engine/dtype.js';
export * from './engine/safetensors.js';
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
