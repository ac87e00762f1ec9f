// Image-space degradations y = A(x) on GPU tensors in [-1, 1] NCHW, as SILO evaluates them.

export type { Degradation } from './types.js';
export { BlurOperator, gaussianBlurKernel, gaussianKernel1d, kernelSupportRadius, type BlurOptions } from './blur.js';
export { SuperResolutionOperator, resizerMatrix, bicubicAAMatrix, cubicKernel, type SuperResolutionOptions } from './superres.js';
export { InpaintingOperator, boxMask, centerBox, randomBox, type Box } from './inpaint.js';
export { addMeasurementNoise, SILO_NOISE_SIGMA } from './noise.js';
