// SILO's / DPS's Gaussian deblurring operator (GaussialBlurOperator): a 61x61 kernel built as
// scipy.ndimage.gaussian_filter of a centred delta (std 3, truncate 4 -> support +-12 px, zeros
// elsewhere), stored in float32, applied per channel after nn.ReflectionPad2d(kernel_size // 2).

import type { Engine } from '../../engine/device.js';
import type { DType } from '../../engine/dtype.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { conv2d, convTranspose2d } from '../../engine/ops/conv2d.js';
import { pad2d } from '../../engine/ops/pad.js';
import { pad2dBackward } from '../../engine/ops/pad-backward.js';
import type { Degradation } from './types.js';

/** scipy.ndimage's 1-D Gaussian: exp(-x^2 / (2 sigma^2)) for |x| <= int(truncate sigma + 0.5), normalised to sum 1. */
export function gaussianKernel1d(sigma: number, truncate = 4.0): Float64Array {
  assertArg(sigma > 0, `gaussianKernel1d: sigma must be > 0, got ${sigma}`);
  const radius = Math.floor(truncate * sigma + 0.5);
  const g = new Float64Array(2 * radius + 1);
  const c = -0.5 / (sigma * sigma);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) sum += g[i + radius] = Math.exp(c * i * i);
  for (let i = 0; i < g.length; i++) g[i]! /= sum;
  return g;
}

/**
 * Blurkernel('gaussian', size, std): gaussian_filter(delta at the centre of size x size, std) in
 * float64 (row-major [size, size]). Away from the borders the filter of a delta is the outer product
 * of the 1-D kernel with itself; the taps that reach past the square (size < 2 radius + 1) are cut.
 */
export function gaussianBlurKernel(size: number, std: number, truncate = 4.0): Float64Array {
  assertArg(Number.isInteger(size) && size >= 1 && size % 2 === 1, `gaussianBlurKernel: size must be an odd integer, got ${size}`);
  const g = gaussianKernel1d(std, truncate);
  const r = (g.length - 1) / 2;
  const c = (size - 1) / 2;
  assertArg(r <= c, `gaussianBlurKernel: std ${std} needs a ${g.length}x${g.length} support, more than the ${size}x${size} kernel (scipy would reflect it at the border)`);
  const k = new Float64Array(size * size);
  for (let i = -r; i <= r; i++) for (let j = -r; j <= r; j++) k[(c + i) * size + c + j] = g[i + r]! * g[j + r]!;
  return k;
}

/** Half-width of the smallest centred square holding every nonzero tap of an odd size x size kernel. */
export function kernelSupportRadius(kernel: ArrayLike<number>, size: number): number {
  const c = (size - 1) / 2;
  let r = 0;
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) if (kernel[y * size + x] !== 0) r = Math.max(r, Math.abs(y - c), Math.abs(x - c));
  return r;
}

export interface BlurOptions {
  /** Kernel side (odd); default 61 (SILO). */
  size?: number;
  /** Gaussian std in pixels; default 3.0 (SILO). */
  std?: number;
  /**
   * An explicit odd size x size kernel (row-major) instead of the Gaussian (motion blur etc.), used
   * as torch's Conv2d weight (a correlation, as DPS's Blurkernel); taken as given, not normalised.
   */
  kernel?: ArrayLike<number>;
  /** The operator's name (default 'gaussian_blur', or 'blur' with an explicit kernel). */
  name?: string;
}

/**
 * y = conv(ReflectionPad2d(size // 2)(x), k) per channel. The zero rows/columns around the kernel's
 * support change nothing, so only the support (25x25 for std 3) is convolved, after a reflect pad of
 * its radius: the same sums as the 61x61 conv, 6x fewer taps, and images smaller than 31 px work.
 */
export class BlurOperator implements Degradation {
  readonly name: string;
  readonly size: number;
  /** The float32 kernel SILO's Conv2d holds ([size, size]). */
  readonly kernel: Float32Array;
  private readonly radius: number;
  private readonly support: Float32Array;
  private readonly weights = new Map<string, Tensor>();

  constructor(
    private readonly engine: Engine,
    opts: BlurOptions = {},
  ) {
    const size = opts.size ?? 61;
    assertArg(Number.isInteger(size) && size % 2 === 1, `BlurOperator: kernel size must be odd, got ${size}`);
    this.size = size;
    if (opts.kernel) assertArg(opts.kernel.length === size * size, `BlurOperator: kernel has ${opts.kernel.length} values, expected ${size}x${size}`);
    this.kernel = Float32Array.from(opts.kernel ?? gaussianBlurKernel(size, opts.std ?? 3.0));
    this.name = opts.name ?? (opts.kernel ? 'blur' : 'gaussian_blur');
    const r = kernelSupportRadius(this.kernel, size);
    const c = (size - 1) / 2;
    const s = 2 * r + 1;
    this.radius = r;
    this.support = new Float32Array(s * s);
    for (let y = 0; y < s; y++) for (let x = 0; x < s; x++) this.support[y * s + x] = this.kernel[(c - r + y) * size + c - r + x]!;
  }

  /** The depthwise weight [channels, 1, s, s] in dtype, uploaded once per (channels, dtype). */
  private weight(channels: number, dtype: DType): Tensor {
    const key = `${channels}/${dtype}`;
    let w = this.weights.get(key);
    if (!w) {
      const s = 2 * this.radius + 1;
      const data = new Float32Array(channels * s * s);
      for (let ch = 0; ch < channels; ch++) data.set(this.support, ch * s * s);
      w = this.engine.keep(this.engine.tensor(data, [channels, 1, s, s], dtype, 'blur_kernel'));
      this.weights.set(key, w);
    }
    return w;
  }

  apply(rec: Recorder, x: Tensor): Tensor {
    assertArg(x.rank === 4, `${this.name}: expected an NCHW tensor, got ${shapeString(x.shape)}`);
    const w = this.weight(x.shape[1]!, x.dtype);
    if (this.radius === 0) return conv2d(rec, x, w, undefined, { groups: x.shape[1]!, op: this.name });
    const padded = pad2d(rec, x, this.radius, 'reflect');
    const y = conv2d(rec, padded, w, undefined, { groups: x.shape[1]!, op: this.name });
    padded.dispose();
    return y;
  }

  /**
   * A^T g: the conv's adjoint is the transposed conv with the same weight (a correlation with the
   * flipped kernel, so non-symmetric motion kernels come out right), giving the gradient of the
   * reflect-padded image; pad2dBackward then folds its border back onto the mirrored interior pixels.
   * f32 only (as the engine's backward ops).
   */
  adjoint(rec: Recorder, gradY: Tensor, inputShape: readonly number[]): Tensor {
    const op = `${this.name}_adjoint`;
    assertArg(inputShape.length === 4, `${op}: input shape ${shapeString(inputShape)} is not NCHW`);
    assertArg(
      gradY.rank === 4 && gradY.shape.every((d, i) => d === inputShape[i]),
      `${op}: gradY ${shapeString(gradY.shape)} must have the input's shape ${shapeString(inputShape)} (blur keeps the size)`,
    );
    assertArg(gradY.dtype === 'f32', `${op}: takes f32 gradients, got ${gradY.dtype}`);
    const channels = gradY.shape[1]!;
    const w = this.weight(channels, gradY.dtype);
    const gradPadded = convTranspose2d(rec, gradY, w, undefined, { groups: channels, op });
    if (this.radius === 0) return gradPadded;
    const gx = pad2dBackward(rec, gradPadded, inputShape, this.radius, 'reflect');
    gradPadded.dispose();
    return gx;
  }

  dispose(): void {
    for (const w of this.weights.values()) w.dispose();
    this.weights.clear();
  }
}
