// Parameterised layers shared by the models, with PyTorch's parameter names and layouts.

import type { Recorder } from '../engine/recorder.js';
import type { Tensor } from '../engine/tensor.js';
import { conv2d, convTranspose2d, type Pair } from '../engine/ops/conv2d.js';
import { linear as linearOp, matmul } from '../engine/ops/matmul.js';
import { groupNorm, layerNorm } from '../engine/ops/norm.js';
import type { Activation } from '../engine/ops/elementwise.js';
import type { WeightLoader } from './weights.js';

export class Conv2d {
  readonly weight: Tensor;
  readonly bias?: Tensor;
  constructor(
    w: WeightLoader,
    name: string,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernel: number | [number, number],
    readonly opts: { stride?: Pair; padding?: Pair; groups?: number; bias?: boolean } = {},
  ) {
    const [kh, kw] = typeof kernel === 'number' ? [kernel, kernel] : kernel;
    const groups = opts.groups ?? 1;
    this.weight = w.get(`${name}.weight`, [outChannels, inChannels / groups, kh, kw]);
    if (opts.bias !== false) this.bias = w.get(`${name}.bias`, [outChannels]);
  }
  forward(rec: Recorder, x: Tensor, act?: Activation): Tensor {
    return conv2d(rec, x, this.weight, this.bias, { stride: this.opts.stride, padding: this.opts.padding, groups: this.opts.groups, act });
  }
}

export class ConvTranspose2d {
  readonly weight: Tensor;
  readonly bias?: Tensor;
  constructor(
    w: WeightLoader,
    name: string,
    inChannels: number,
    outChannels: number,
    kernel: number,
    readonly opts: { stride?: Pair; padding?: Pair; outputPadding?: Pair; bias?: boolean } = {},
  ) {
    this.weight = w.get(`${name}.weight`, [inChannels, outChannels, kernel, kernel]);
    if (opts.bias !== false) this.bias = w.get(`${name}.bias`, [outChannels]);
  }
  forward(rec: Recorder, x: Tensor, act?: Activation): Tensor {
    return convTranspose2d(rec, x, this.weight, this.bias, { ...this.opts, act } as Parameters<typeof convTranspose2d>[4]);
  }
}

export class Linear {
  /** [out, in] as stored, or [in, out] when `transposed` (the loader's linearLayout 'in_out'). */
  readonly weight: Tensor;
  readonly bias?: Tensor;
  readonly transposed: boolean;
  constructor(w: WeightLoader, name: string, readonly inFeatures: number, readonly outFeatures: number, bias = true) {
    this.transposed = w.linearLayout === 'in_out';
    this.weight = w.get(`${name}.weight`, [outFeatures, inFeatures], undefined, { transpose: this.transposed });
    if (bias) this.bias = w.get(`${name}.bias`, [outFeatures]);
  }
  /** `residual`: added after the activation in the same dispatch (a residual connection). */
  forward(rec: Recorder, x: Tensor, act?: Activation, residual?: Tensor): Tensor {
    return linearOp(rec, x, this.weight, this.bias, { act, residual, transposed: this.transposed });
  }
  /** The input gradient of forward (no activation) for g [..., out]: g W [..., in], plus `acc` in the same dispatch. */
  gradX(rec: Recorder, g: Tensor, acc?: Tensor): Tensor {
    return matmul(rec, g, this.weight, { op: 'linear_grad_x', residual: acc, transB: this.transposed });
  }
}

export class GroupNorm {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(w: WeightLoader, name: string, readonly groups: number, readonly channels: number, readonly eps = 1e-5) {
    this.weight = w.get(`${name}.weight`, [channels]);
    this.bias = w.get(`${name}.bias`, [channels]);
  }
  forward(rec: Recorder, x: Tensor, act: 'silu' | 'none' = 'none'): Tensor {
    return groupNorm(rec, x, this.groups, this.weight, this.bias, { eps: this.eps, act });
  }
}

export class LayerNorm {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(w: WeightLoader, name: string, readonly shape: number[], readonly eps = 1e-5) {
    this.weight = w.get(`${name}.weight`, shape);
    this.bias = w.get(`${name}.bias`, shape);
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return layerNorm(rec, x, this.shape, this.weight, this.bias, { eps: this.eps });
  }
}
