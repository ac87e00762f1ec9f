// Reverse-mode kernels for conv2d and conv_transpose2d (NCHW, PyTorch weight layouts), f32 only.
//   conv2d:           dX = conv_transpose2d(dY, W) with the input's size as output (the forward
//                     conv2d kernel's gather form); dW = conv2d_grad_weight(L = dY, G = x).
//   conv_transpose2d: dX = conv2d(dY, W) (same stride / padding / groups); dW = conv2d_grad_weight
//                     (L = x, G = dY).
//   dBias = dY summed over batch and pixels (sumToShape).
// A fused activation is not differentiated here: callers apply unaryBackward to the pre-activation.

import source from '../../../kernels/conv2d.wgsl';
import activations from '../../../kernels/activations.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { conv2d, convOutputSize, record, type Pair } from './conv2d.js';
import { sumToShape } from './elementwise-backward.js';

export interface Conv2dBackwardOptions {
  stride?: Pair;
  padding?: Pair;
  /** The forward's extra zero rows / columns after the input's end (see Conv2dOptions.padEnd). */
  padEnd?: Pair;
  groups?: number;
  /** Which gradients to compute (default: x and weight; bias only when asked). */
  needs?: { x?: boolean; weight?: boolean; bias?: boolean };
  op?: string;
}

export interface ConvTranspose2dBackwardOptions {
  stride?: Pair;
  padding?: Pair;
  outputPadding?: Pair;
  groups?: number;
  needs?: { x?: boolean; weight?: boolean; bias?: boolean };
  op?: string;
}

export interface ConvGrads {
  gradX?: Tensor;
  gradWeight?: Tensor;
  /** [Cout]. */
  gradBias?: Tensor;
}

/** Threads per workgroup (at most) and output channels per thread of the weight-gradient kernel. */
const WG_MAX = 64;
const CO_MAX = 8;

function pair(v: Pair | undefined, dflt: number): [number, number] {
  return typeof v === 'number' ? [v, v] : v === undefined ? [dflt, dflt] : [v[0], v[1]];
}

function pow2Tile(n: number, lo: number, hi: number): number {
  let t = lo;
  while (t < n && t < hi) t *= 2;
  return t;
}

/** Activations and gradients are f32; the weight (`param`) may be f16 (mixed precision). */
function dims4(name: string, what: string, t: Tensor, param = false): [number, number, number, number] {
  assertArg(t.rank === 4, `${name}: ${what} must be rank 4, got ${shapeString(t.shape)}`);
  assertArg(t.dtype === 'f32' || (param && t.dtype === 'f16'), `${name}: ${what} must be f32${param ? ' or f16' : ''}, got ${t.dtype}`);
  return t.shape as [number, number, number, number];
}

/**
 * dW[o, i, kh, kw] = sum over (img, ly, lx) of L[img, group(o) cog + o, ly, lx] *
 * G[img, group(o) cig + i, ly sy - py + kh, lx sx - px + kw]: weight [groups * cog, cig, KH, KW].
 */
function gradWeight(
  rec: Recorder,
  l: Tensor,
  g: Tensor,
  groups: number,
  cig: number,
  k: [number, number],
  stride: [number, number],
  pad: [number, number],
  op: string,
): Tensor {
  const engine = rec.engine;
  const [n, lc, lh, lw] = l.shape as [number, number, number, number];
  const [, gc, gh, gw] = g.shape as [number, number, number, number];
  const cog = lc / groups;
  const taps = cig * k[0] * k[1];
  const co = pow2Tile(cog, 1, CO_MAX);
  const wg = pow2Tile(Math.ceil(taps / 4), 8, WG_MAX);
  const kernel = engine.kernel({
    family: 'conv2d',
    source,
    includes: [activations],
    entry: 'conv2d_grad_weight',
    dtype: 'f32',
    consts: { WG: wg, CO: co, ACT: 0, HAS_BIAS: false, TRANSPOSED: false },
  });
  const out = engine.empty([lc, cig, k[0], k[1]], 'f32', op);
  const coTiles = Math.ceil(cog / co);
  rec.dispatch(kernel, {
    op,
    bindings: { dw_l: l, dw_g: g, dw_out: out },
    uniforms: {
      nimg: n,
      lc,
      lh,
      lw,
      gc,
      gh,
      gw,
      cig,
      cog,
      co_tiles: coTiles,
      kh: k[0],
      kw: k[1],
      taps,
      sy: stride[0],
      sx: stride[1],
      py: pad[0],
      px: pad[1],
    },
    workgroups: [Math.ceil(taps / (wg * 4)), groups * coTiles, 1],
  });
  return out;
}

function biasGrad(rec: Recorder, gradOut: Tensor, op: string): Tensor {
  const c = gradOut.shape[1]!;
  const s = sumToShape(rec, gradOut, [c, 1, 1], { op });
  const r = s.reshape([c]);
  s.dispose();
  return r;
}

/**
 * Gradients of y = conv2d(x, weight, bias, {stride, padding, padEnd, groups}) given dy: dx [N, Cin, H, W],
 * dW [Cout, Cin/groups, KH, KW], db [Cout].
 */
export function conv2dBackward(rec: Recorder, x: Tensor, weight: Tensor, gradOut: Tensor, opts: Conv2dBackwardOptions = {}): ConvGrads {
  const name = opts.op ?? 'conv2d_backward';
  const needs = { x: true, weight: true, bias: false, ...opts.needs };
  const [n, cin, h, w] = dims4(name, 'input', x);
  const [cout, cig, kh, kw] = dims4(name, 'weight', weight, true);
  dims4(name, 'gradOut', gradOut);
  const groups = opts.groups ?? 1;
  const stride = pair(opts.stride, 1);
  const pad = pair(opts.padding, 0);
  const end = pair(opts.padEnd, 0);
  assertArg(cig * groups === cin && cout % groups === 0, `${name}: weight ${shapeString(weight.shape)} with groups ${groups} does not fit input ${shapeString(x.shape)}`);
  const [oh, ow] = convOutputSize(h, w, kh, kw, stride, pad, end);
  const expect = [n, cout, oh, ow];
  assertArg(
    gradOut.shape.every((d, i) => d === expect[i]),
    `${name}: gradOut ${shapeString(gradOut.shape)} should be ${shapeString(expect)}`,
  );
  const grads: ConvGrads = {};
  if (needs.x) {
    // Transposed conv of dy with the same weight ([Cout, Cin/groups, ...] is the transposed layout
    // [in, out/groups, ...]), cut to the input's size: rows / columns the forward never read (the
    // padEnd rows, or the floor of the stride) get no taps or are not stored.
    grads.gradX = record(
      rec,
      gradOut,
      weight,
      undefined,
      { name: `${name}/x`, n, cin: cout, h: oh, w: ow, kh, kw, groups },
      cin,
      [h, w],
      stride,
      pad,
      true,
      undefined,
      0.01,
    );
  }
  if (needs.weight) grads.gradWeight = gradWeight(rec, gradOut, x, groups, cig, [kh, kw], stride, pad, `${name}/weight`);
  if (needs.bias) grads.gradBias = biasGrad(rec, gradOut, `${name}/bias`);
  return grads;
}

/**
 * Gradients of y = conv_transpose2d(x, weight, bias, {stride, padding, outputPadding, groups}) given dy:
 * dx [N, Cin, H, W], dW [Cin, Cout/groups, KH, KW], db [Cout].
 */
export function convTranspose2dBackward(
  rec: Recorder,
  x: Tensor,
  weight: Tensor,
  gradOut: Tensor,
  opts: ConvTranspose2dBackwardOptions = {},
): ConvGrads {
  const name = opts.op ?? 'conv_transpose2d_backward';
  const needs = { x: true, weight: true, bias: false, ...opts.needs };
  const [n, cin, h, w] = dims4(name, 'input', x);
  const [wcin, cog, kh, kw] = dims4(name, 'weight', weight, true);
  dims4(name, 'gradOut', gradOut);
  const groups = opts.groups ?? 1;
  const stride = pair(opts.stride, 1);
  const pad = pair(opts.padding, 0);
  const opad = pair(opts.outputPadding, 0);
  assertArg(wcin === cin && cin % groups === 0, `${name}: weight ${shapeString(weight.shape)} with groups ${groups} does not fit input ${shapeString(x.shape)}`);
  const cout = cog * groups;
  const oh = (h - 1) * stride[0] - 2 * pad[0] + kh + opad[0];
  const ow = (w - 1) * stride[1] - 2 * pad[1] + kw + opad[1];
  const expect = [n, cout, oh, ow];
  assertArg(
    gradOut.shape.every((d, i) => d === expect[i]),
    `${name}: gradOut ${shapeString(gradOut.shape)} should be ${shapeString(expect)}`,
  );
  const grads: ConvGrads = {};
  // conv2d of dy with the same weight: [Cin, Cout/groups, ...] is conv2d's [out, in/groups, ...]; the
  // output size floor((OH + 2p - K) / s) + 1 is H because outputPadding < stride.
  if (needs.x) grads.gradX = conv2d(rec, gradOut, weight, undefined, { stride, padding: pad, groups, op: `${name}/x` });
  if (needs.weight) grads.gradWeight = gradWeight(rec, x, gradOut, groups, cog, [kh, kw], stride, pad, `${name}/weight`);
  if (needs.bias) grads.gradBias = biasGrad(rec, gradOut, `${name}/bias`);
  return grads;
}
