// Image-space degradations y = A(x) on GPU tensors in [-1, 1] NCHW, as SILO evaluates them.

export type { Degradation } from './types.js';
export { BlurOperator, gaussianBlurKernel, gaussianKernel1d, kernelSupportRadius, type BlurOptions } from './blur.js';
export { SuperResolutionOperator, SeparableResize, resizerMatrix, bicubicAAMatrix, cubicKernel, type SuperResolutionOptions } from './superres.js';
export { InpaintingOperator, boxMask, centerBox, randomBox, type Box } from './inpaint.js';
export { addMeasurementNoise, SILO_NOISE_SIGMA } from './noise.js';
export { AvgPoolOperator, avgPoolMatrix } from './avgpool.js';
export { loadBlurKernel, parseBlurKernel, motionBlurOperator, normalizeBlurKernel, KernelFileError, type BlurKernel, type KernelFileFormat, type KernelMatrix } from './kernel-file.js';
export {
  makeDegradation,
  isDegradationTask,
  DEGRADATION_TASKS,
  type DegradationTask,
  type DegradationTaskOptions,
  type DegradationSetup,
} from './tasks.js';
export { JpegOperator, jpegRoundTrip, type JpegOperatorOptions } from './jpeg.js';
