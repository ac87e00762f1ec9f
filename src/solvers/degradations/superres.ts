// Super-resolution: DPS/SILO's SuperResolutionOperator (Shocher's Resizer: MATLAB-style imresize with
// the Keys cubic, a = -0.5, stretched by 1/scale for antialiasing, mirrored borders) and the upsampling
// SILO applies to y before encoding it (torchvision resize BICUBIC, antialias=True). Both are separable
// linear maps, built here as dense 1-D matrices M (out x in) in float64 and applied on the GPU as two
// matmuls: y = M_h x M_w^T per plane.

import type { Engine } from '../../engine/device.js';
import type { DType } from '../../engine/dtype.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { matmul } from '../../engine/ops/matmul.js';
import type { Degradation } from './types.js';

/** Keys' cubic convolution kernel with a = -0.5 (MATLAB's imresize 'cubic', the Resizer's `cubic`). */
export function cubicKernel(x: number): number {
  const ax = Math.abs(x);
  const ax2 = ax * ax;
  const ax3 = ax2 * ax;
  if (ax <= 1) return 1.5 * ax3 - 2.5 * ax2 + 1;
  if (ax <= 2) return -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2;
  return 0;
}

/**
 * The Resizer's 1-D matrix [outLen, inLen] for `scale` (< 1 shrinks): output pixel o (1-based) sits
 * at input coordinate u = (o - (outLen - inLen scale) / 2) / scale + (1 - 1/scale) / 2; taps
 * floor(u - width/2) - 1 + [0, ceil(width) + 2) with width = 4 / scale when antialiasing (scale < 1),
 * weights scale * cubic(scale (u - tap - 1)) normalised to sum 1, taps outside [0, inLen) mirrored
 * with the edge repeated (index -1 -> 0). `border: 'replicate'` clamps them to the edge instead, which
 * is what MATLAB's imresize does (the Set5 x4 LR images are reproduced exactly with it).
 */
export function resizerMatrix(inLen: number, outLen: number, scale: number, antialias = true, border: 'mirror' | 'replicate' = 'mirror'): Float64Array {
  assertArg(Number.isInteger(inLen) && inLen >= 1 && Number.isInteger(outLen) && outLen >= 1, `resizerMatrix: lengths must be positive integers (${inLen} -> ${outLen})`);
  assertArg(scale > 0, `resizerMatrix: scale must be > 0, got ${scale}`);
  const aa = antialias && scale < 1;
  const width = aa ? 4 / scale : 4;
  const kernel = aa ? (t: number) => scale * cubicKernel(scale * t) : cubicKernel;
  const taps = Math.ceil(width) + 2;
  const m = new Float64Array(outLen * inLen);
  const period = 2 * inLen;
  const w = new Float64Array(taps);
  for (let o = 0; o < outLen; o++) {
    const u = (o + 1 - (outLen - inLen * scale) / 2) / scale + 0.5 * (1 - 1 / scale);
    const left = Math.floor(u - width / 2);
    let sum = 0;
    for (let k = 0; k < taps; k++) sum += w[k] = kernel(u - (left + k - 1) - 1);
    if (sum === 0) sum = 1;
    for (let k = 0; k < taps; k++) {
      let src: number;
      if (border === 'replicate') src = Math.min(inLen - 1, Math.max(0, left + k - 1));
      else {
        const j = (((left + k - 1) % period) + period) % period;
        src = j < inLen ? j : period - 1 - j;
      }
      m[o * inLen + src]! += w[k]! / sum;
    }
  }
  return m;
}

/** PyTorch's antialiased bicubic filter (a = -0.5). */
function aaCubic(x: number): number {
  const a = -0.5;
  const ax = Math.abs(x);
  if (ax < 1) return ((a + 2) * ax - (a + 3)) * ax * ax + 1;
  if (ax < 2) return (((ax - 5) * ax + 8) * ax - 4) * a;
  return 0;
}

/**
 * F.interpolate(mode='bicubic', align_corners=False, antialias=True) along one axis as a matrix
 * [outLen, inLen] (what torchvision's resize(BICUBIC, antialias=True) runs on float tensors): scale =
 * in / out, support 2 max(scale, 1), taps truncated to [0, inLen) and renormalised (no mirroring).
 */
export function bicubicAAMatrix(inLen: number, outLen: number): Float64Array {
  assertArg(Number.isInteger(inLen) && inLen >= 1 && Number.isInteger(outLen) && outLen >= 1, `bicubicAAMatrix: lengths must be positive integers (${inLen} -> ${outLen})`);
  const scale = inLen / outLen;
  const support = scale >= 1 ? 2 * scale : 2;
  const inv = scale >= 1 ? 1 / scale : 1;
  const m = new Float64Array(outLen * inLen);
  for (let o = 0; o < outLen; o++) {
    const center = scale * (o + 0.5);
    // C++ int64 casts truncate toward zero.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inLen);
    let total = 0;
    for (let j = xmin; j < xmax; j++) total += m[o * inLen + j] = aaCubic((j - center + 0.5) * inv);
    if (total !== 0) for (let j = xmin; j < xmax; j++) m[o * inLen + j]! /= total;
  }
  return m;
}

/** [rows, cols] -> [cols, rows] (row-major). */
function transpose(m: ArrayLike<number>, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = m[r * cols + c]!;
  return t;
}

/**
 * A separable linear resize y[p] = M_h x[p] M_w^T for every plane p of an NCHW tensor, its matrices
 * uploaded once per dtype (float32, as SILO's Resizer stores its weights); `adjoint` applies the
 * transposed matrices, x[p] = M_h^T y[p] M_w (uploaded on first use).
 */
export class SeparableResize {
  private readonly mats = new Map<DType, { mh: Tensor; mwT: Tensor }>();
  private readonly adjointMats = new Map<DType, { mhT: Tensor; mw: Tensor }>();
  constructor(
    private readonly engine: Engine,
    readonly inH: number,
    readonly inW: number,
    readonly outH: number,
    readonly outW: number,
    /** [outH, inH] and [outW, inW], row-major. */
    readonly mh: ArrayLike<number>,
    readonly mw: ArrayLike<number>,
    private readonly op: string,
  ) {}

  apply(rec: Recorder, x: Tensor): Tensor {
    assertArg(
      x.rank === 4 && x.shape[2] === this.inH && x.shape[3] === this.inW,
      `${this.op}: built for [N, C, ${this.inH}, ${this.inW}] inputs, got ${shapeString(x.shape)}`,
    );
    let m = this.mats.get(x.dtype);
    if (!m) {
      m = {
        mh: this.engine.keep(this.engine.tensor(Float32Array.from(this.mh), [this.outH, this.inH], x.dtype, `${this.op}_mh`)),
        mwT: this.engine.keep(this.engine.tensor(transpose(this.mw, this.outW, this.inW), [this.inW, this.outW], x.dtype, `${this.op}_mwT`)),
      };
      this.mats.set(x.dtype, m);
    }
    const [n, c] = x.shape as [number, number];
    const rows = x.reshape([n * c * this.inH, this.inW]);
    const alongW = matmul(rec, rows, m.mwT, { op: `${this.op}/w` }); // [N C inH, outW]
    rows.dispose();
    const planes = alongW.reshape([n * c, this.inH, this.outW]);
    alongW.dispose();
    const y = matmul(rec, m.mh, planes, { op: `${this.op}/h` }); // [N C, outH, outW]
    planes.dispose();
    const out = y.reshape([n, c, this.outH, this.outW], this.op);
    y.dispose();
    return out;
  }

  /** M_h^T g[p] M_w for g [N, C, outH, outW]: [N, C, inH, inW]. */
  adjoint(rec: Recorder, g: Tensor): Tensor {
    const op = `${this.op}_adjoint`;
    assertArg(
      g.rank === 4 && g.shape[2] === this.outH && g.shape[3] === this.outW,
      `${op}: takes [N, C, ${this.outH}, ${this.outW}] gradients (the output of a ${this.inH}x${this.inW} input), got ${shapeString(g.shape)}`,
    );
    let m = this.adjointMats.get(g.dtype);
    if (!m) {
      m = {
        mhT: this.engine.keep(this.engine.tensor(transpose(this.mh, this.outH, this.inH), [this.inH, this.outH], g.dtype, `${this.op}_mhT`)),
        mw: this.engine.keep(this.engine.tensor(Float32Array.from(this.mw), [this.outW, this.inW], g.dtype, `${this.op}_mw`)),
      };
      this.adjointMats.set(g.dtype, m);
    }
    const [n, c] = g.shape as [number, number];
    const rows = g.reshape([n * c * this.outH, this.outW]);
    const alongW = matmul(rec, rows, m.mw, { op: `${op}/w` }); // [N C outH, inW]
    rows.dispose();
    const planes = alongW.reshape([n * c, this.outH, this.inW]);
    alongW.dispose();
    const x = matmul(rec, m.mhT, planes, { op: `${op}/h` }); // [N C, inH, inW]
    planes.dispose();
    const out = x.reshape([n, c, this.inH, this.inW], op);
    x.dispose();
    return out;
  }

  dispose(): void {
    for (const m of this.mats.values()) {
      m.mh.dispose();
      m.mwT.dispose();
    }
    this.mats.clear();
    for (const m of this.adjointMats.values()) {
      m.mhT.dispose();
      m.mw.dispose();
    }
    this.adjointMats.clear();
  }
}

export interface SuperResolutionOptions {
  /** Down-sampling factor (4 or 8 in SILO); default 4. */
  factor?: number;
  /** Borders: 'mirror' as DPS/SILO's Resizer (default), 'replicate' as MATLAB's imresize. */
  border?: 'mirror' | 'replicate';
}

/**
 * SuperResolutionOperator(in_shape, scale_factor): y = Resizer(x, 1 / factor) to ceil(H / factor) x
 * ceil(W / factor); built for one input size. upsampleMeasurement brings y back to H x W with
 * torchvision's antialiased bicubic (as silo_sample.py does before encoding).
 */
export class SuperResolutionOperator implements Degradation {
  readonly name: string;
  readonly outH: number;
  readonly outW: number;
  private readonly down: SeparableResize;
  private readonly up: SeparableResize;

  constructor(engine: Engine, readonly height: number, readonly width: number, opts: SuperResolutionOptions = {}) {
    const factor = opts.factor ?? 4;
    assertArg(factor >= 1, `SuperResolutionOperator: factor must be >= 1, got ${factor}`);
    this.name = `sr${factor}`;
    const scale = 1 / factor;
    // The Resizer's output size: ceil(in * scale) in float64, as numpy computes it.
    this.outH = Math.ceil(height * scale);
    this.outW = Math.ceil(width * scale);
    this.down = new SeparableResize(
      engine, height, width, this.outH, this.outW,
      resizerMatrix(height, this.outH, scale, true, opts.border), resizerMatrix(width, this.outW, scale, true, opts.border), this.name,
    );
    this.up = new SeparableResize(
      engine, this.outH, this.outW, height, width,
      bicubicAAMatrix(this.outH, height), bicubicAAMatrix(this.outW, width), `${this.name}_upsample`,
    );
  }

  apply(rec: Recorder, x: Tensor): Tensor {
    return this.down.apply(rec, x);
  }

  /** A^T g = M_h^T g M_w per plane (g [N, C, outH, outW]); inputShape must be [N, C, height, width]. */
  adjoint(rec: Recorder, gradY: Tensor, inputShape: readonly number[]): Tensor {
    assertArg(
      inputShape.length === 4 && inputShape[2] === this.height && inputShape[3] === this.width && gradY.shape[0] === inputShape[0] && gradY.shape[1] === inputShape[1],
      `${this.name}_adjoint: built for [N, C, ${this.height}, ${this.width}] inputs, got input shape ${shapeString(inputShape)} with gradY ${shapeString(gradY.shape)}`,
    );
    return this.down.adjoint(rec, gradY);
  }

  upsampleMeasurement(rec: Recorder, y: Tensor): Tensor {
    return this.up.apply(rec, y);
  }

  /** The down-sampling matrices [outH, H] and [outW, W] (float64, row-major). */
  get resizeMatrices(): { h: ArrayLike<number>; w: ArrayLike<number> } {
    return { h: this.down.mh, w: this.down.mw };
  }

  dispose(): void {
    this.down.dispose();
    this.up.dispose();
  }
}
