// 2-D convolutions on NCHW tensors with PyTorch weight layouts: conv2d (implicit GEMM, register
// blocked, any kernel size / stride / zero padding / groups, fused bias + activation),
// convTranspose2d (gather form of the same kernel) and conv2dNaive (the one-thread-per-output
// baseline that benchmarks compare against).

import source from '../../../kernels/conv2d.wgsl';
import activations from '../../../kernels/activations.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { paramDtype, shapeString } from '../dtype.js';
import { activationCode, type Activation } from './elementwise.js';
import { conv3x3Winograd, winogradFits } from './winograd.js';
import { tapStrides } from './conv-taps.js';
import { grid1d, workgroupSize, workgroupTilesFit } from './grid.js';
import type { Engine } from '../device.js';

export type Pair = number | [number, number];

export interface Conv2dOptions {
  stride?: Pair;
  padding?: Pair;
  /**
   * Extra zero rows / columns after the input's end (bottom, right), on top of `padding`: the same as
   * F.pad(x, (0, right, 0, bottom)) before the conv (diffusers' Downsample2D with padding=0 pads
   * (0, 1, 0, 1)). Only the output size changes: the kernel already reads taps past the end as zero.
   */
  padEnd?: Pair;
  groups?: number;
  act?: Activation;
  /** Leaky-ReLU slope when act is 'leaky_relu'. */
  alpha?: number;
  op?: string;
}

export interface ConvTranspose2dOptions {
  stride?: Pair;
  padding?: Pair;
  outputPadding?: Pair;
  groups?: number;
  act?: Activation;
  alpha?: number;
  op?: string;
}

/** Threads per workgroup (at most); each thread owns 4 output pixels. */
const WG_MAX = 64;
/** Output channels per thread (the register tile): 8 x 4 accumulators. */
const CO_MAX = 8;

function pair(v: Pair | undefined, dflt: number, what: string, name: string): [number, number] {
  const p: [number, number] = typeof v === 'number' ? [v, v] : v === undefined ? [dflt, dflt] : [v[0], v[1]];
  assertArg(p.every((d) => Number.isInteger(d)), `${name}: ${what} must be integers, got ${JSON.stringify(v)}`);
  return p;
}

/** The output [Ho, Wo] of a convolution with PyTorch's arithmetic: floor((H + 2 p + padEnd - K) / s) + 1. */
export function convOutputSize(h: number, w: number, kh: number, kw: number, stride: [number, number], pad: [number, number], end: [number, number] = [0, 0]): [number, number] {
  return [Math.floor((h + 2 * pad[0] + end[0] - kh) / stride[0]) + 1, Math.floor((w + 2 * pad[1] + end[1] - kw) / stride[1]) + 1];
}

/** Smallest power of two >= n, clamped to [lo, hi]. */
function pow2Tile(n: number, lo: number, hi: number): number {
  let t = lo;
  while (t < n && t < hi) t *= 2;
  return t;
}

/** Smallest power of two >= channels per group, capped at CO_MAX (depthwise gets 1). */
function channelTile(cog: number): number {
  return pow2Tile(cog, 1, CO_MAX);
}

interface Geometry {
  name: string;
  n: number;
  cin: number;
  h: number;
  w: number;
  kh: number;
  kw: number;
  groups: number;
}

function checkInputs(name: string, x: Tensor, weight: Tensor, bias: Tensor | undefined, groups: number, transposed: boolean): Geometry {
  assertArg(x.rank === 4, `${name}: input must be [N, C, H, W], got ${shapeString(x.shape)}`);
  assertArg(weight.rank === 4, `${name}: weight must be rank 4, got ${shapeString(weight.shape)}`);
  paramDtype(`${name}: weight`, x.dtype, weight.dtype);
  assertArg(Number.isInteger(groups) && groups >= 1, `${name}: groups must be a positive integer, got ${groups}`);
  const [n, cin, h, w] = x.shape as [number, number, number, number];
  const [w0, w1, kh, kw] = weight.shape as [number, number, number, number];
  assertArg(cin % groups === 0, `${name}: groups ${groups} does not divide the ${cin} input channels of ${shapeString(x.shape)}`);
  if (transposed) {
    assertArg(w0 === cin, `${name}: weight ${shapeString(weight.shape)} expects ${w0} input channels, input ${shapeString(x.shape)} has ${cin}`);
  } else {
    assertArg(w0 % groups === 0, `${name}: groups ${groups} does not divide the ${w0} output channels of weight ${shapeString(weight.shape)}`);
    assertArg(
      w1 * groups === cin,
      `${name}: weight ${shapeString(weight.shape)} with groups ${groups} expects ${w1 * groups} input channels, input ${shapeString(x.shape)} has ${cin}`,
    );
  }
  assertArg(kh >= 1 && kw >= 1, `${name}: empty kernel in weight ${shapeString(weight.shape)}`);
  const cout = transposed ? w1 * groups : w0;
  if (bias) {
    assertArg(bias.rank === 1 && bias.shape[0] === cout, `${name}: bias must be [${cout}], got ${shapeString(bias.shape)}`);
    assertArg(bias.dtype === weight.dtype, `${name}: bias is ${bias.dtype} but weight is ${weight.dtype}`);
  }
  return { name, n, cin, h, w, kh, kw, groups };
}

/**
 * The specialised kernels for 3x3, stride 1, padding 1 convolutions with an output the size of the input
 * (forward, or transposed: the input gradient) and one group: Winograd F(2x2, 3x3) when the image has at
 * least WINOGRAD_MIN_TILES 2x2 tiles, both channel counts reach convTuning.winogradMinChannels and its
 * intermediates fit a binding, else conv3x3_px8 for rows of whole
 * 8-pixel runs, else none (the general kernel). Profiled on lavapipe, conv 3x3 320 ch @ 32x32, 640 @ 16x16,
 * 1280 @ 8x8, 320 @ 64x64: Winograd 75 / 83 / 291 / 235 ms, conv3x3_px8 210 / 177 / 164 / 716 ms, the
 * general kernel 238 / 253 / 224 / 850 ms; on SwiftShader conv3x3_px8 502 / 588 / 507 / 2057 ms against
 * the general kernel's 1074 / 1255 / 1117 / 4502 ms.
 */
export function conv3x3Path(
  g: Pick<Geometry, 'kh' | 'kw' | 'groups' | 'h' | 'w' | 'n' | 'cin'>,
  cout: number,
  out: [number, number],
  stride: [number, number],
  pad: [number, number],
  maxBinding: number,
  tuned?: string,
  caps: ConvCaps = {},
): 'winograd' | 'px8' | 'igemm' | undefined {
  const allowed = conv3x3Variants(g, cout, out, stride, pad, maxBinding, caps);
  // A measured choice (tuning.ts) wins when it is one of this shape's variants.
  if (tuned && (allowed as string[]).includes(tuned)) return tuned === 'general' ? undefined : (tuned as 'winograd' | 'px8' | 'igemm');
  if (allowed.includes('winograd') && g.n * Math.ceil(g.h / 2) * Math.ceil(g.w / 2) >= WINOGRAD_MIN_TILES) return 'winograd';
  // GPUs: the workgroup-memory implicit GEMM, unless most of its 64-channel block would idle (conv_out's
  // 4 channels: 28x slower than px8 on lavapipe); CPU adapters: 8-pixel runs in registers.
  if (caps.gpu && allowed.includes('igemm') && cout >= 32) return 'igemm';
  return allowed.includes('px8') ? 'px8' : undefined;
}

export type Conv3x3Variant = 'winograd' | 'px8' | 'igemm' | 'general';

/** What the adapter allows: `igemm` (256 threads, 8 KiB of workgroup memory) and whether it is a GPU (the default then prefers igemm). */
export interface ConvCaps {
  igemm?: boolean;
  gpu?: boolean;
}

/** The caps of an engine's adapter. */
export function convCaps(engine: Engine): ConvCaps {
  return { igemm: workgroupTilesFit(engine), gpu: !engine.info.software };
}

/**
 * The kernels that may run a convolution ('general' always): Winograd where the channel counts reach
 * convTuning.winogradMinChannels (its rounding is kept away from narrow ReLU models) and its
 * intermediates fit a binding, conv3x3_px8 for 3x3 / stride 1 / padding 1 rows of whole 8-pixel runs,
 * conv3x3_igemm for any 3x3 / stride 1 / padding 1 where the adapter allows it (caps.igemm).
 */
export function conv3x3Variants(
  g: Pick<Geometry, 'kh' | 'kw' | 'groups' | 'h' | 'w' | 'n' | 'cin'>,
  cout: number,
  out: [number, number],
  stride: [number, number],
  pad: [number, number],
  maxBinding: number,
  caps: ConvCaps = {},
): Conv3x3Variant[] {
  const fits =
    g.kh === 3 && g.kw === 3 && g.groups === 1 && stride[0] === 1 && stride[1] === 1 && pad[0] === 1 && pad[1] === 1 &&
    out[0] === g.h && out[1] === g.w;
  if (!fits) return ['general'];
  const v: Conv3x3Variant[] = [];
  if (Math.min(g.cin, cout) >= convTuning.winogradMinChannels && winogradFits(maxBinding, g.n, g.cin, g.h, g.w, cout)) v.push('winograd');
  if (g.w % 8 === 0) v.push('px8');
  if (caps.igemm) v.push('igemm');
  v.push('general');
  return v;
}

/** The tuning table's key of a 3x3 convolution (forward or transposed, i.e. an input gradient). */
export function conv3x3Key(n: number, cin: number, h: number, w: number, cout: number, transposed: boolean): string {
  return `${transposed ? 'T' : 'F'}${n}x${cin}x${h}x${w}>${cout}`;
}

/** Below this many 2x2 tiles the 16 matmuls are too narrow and the weight transform dominates (8x8: 1.8x slower). */
const WINOGRAD_MIN_TILES = 64;

/**
 * Kernel choices tests and tuning may change. winogradMinChannels: Winograd needs at least this many input
 * and output channels. Its rounding differs from the direct kernel's by a few ulps of the products; narrow
 * models with ReLU (SILO's CNN operator: at most 128 channels) have gradients that jump where an
 * activation crosses zero, so they keep the direct kernel, which their golden VJP cases were matched with.
 * SD's UNet (320+) and VAE (256+ at the sizes where it pays) take Winograd.
 */
export const convTuning = { winogradMinChannels: 256 };

function recordConv3x3(
  rec: Recorder,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  g: Geometry,
  cout: number,
  transposed: boolean,
  act: Activation | undefined,
  alpha: number,
): Tensor {
  const engine = rec.engine;
  const result = engine.empty([g.n, cout, g.h, g.w], x.dtype, g.name);
  if (result.size === 0) return result;
  const co = channelTile(cout);
  const quads = (g.n * g.h * g.w) / 8;
  const wg = pow2Tile(quads, 8, WG_MAX);
  const k = engine.kernel({
    family: 'conv2d',
    source,
    includes: [activations],
    entry: 'conv3x3_px8',
    dtype: x.dtype,
    wdtype: weight.dtype,
    consts: { WG: wg, CO: co, ACT: activationCode(act), HAS_BIAS: bias !== undefined, TRANSPOSED: false },
  });
  // x is bound twice: as scalars and as vec4s.
  rec.dispatch(k, {
    op: g.name,
    bindings: { q3x: x, q3x4: x, q3w: weight, q3b: bias ?? weight, q3y: result },
    uniforms: {
      cin: g.cin,
      h: g.h,
      w: g.w,
      cout,
      quads,
      ...tapStrides(g.cin, cout, transposed),
      alpha,
    },
    workgroups: [Math.ceil(quads / wg), Math.ceil(cout / co), 1],
  });
  return result;
}

/** conv3x3_igemm: 64 output channels x 64 pixels per workgroup (forward, or transposed like recordConv3x3). */
function recordIgemm(
  rec: Recorder,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  g: Geometry,
  cout: number,
  transposed: boolean,
  act: Activation | undefined,
  alpha: number,
): Tensor {
  const engine = rec.engine;
  const result = engine.empty([g.n, cout, g.h, g.w], x.dtype, g.name);
  if (result.size === 0) return result;
  const pixels = g.n * g.h * g.w;
  const k = engine.kernel({
    family: 'conv2d',
    source,
    includes: [activations],
    entry: 'conv3x3_igemm',
    dtype: x.dtype,
    wdtype: weight.dtype,
    consts: { WG: 64, CO: 1, ACT: activationCode(act), HAS_BIAS: bias !== undefined, TRANSPOSED: false },
  });
  rec.dispatch(k, {
    op: g.name,
    bindings: { igx: x, igw: weight, igb: bias ?? weight, igy: result },
    uniforms: {
      cin: g.cin,
      h: g.h,
      w: g.w,
      cout,
      pixels,
      k: g.cin * 9,
      ...tapStrides(g.cin, cout, transposed),
      alpha,
    },
    workgroups: [Math.ceil(pixels / 64), Math.ceil(cout / 64), 1],
  });
  return result;
}

/** Records one conv2d-family dispatch (exported for the backward ops, which need custom output sizes). */
export function record(
  rec: Recorder,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  g: Geometry,
  cout: number,
  out: [number, number],
  stride: [number, number],
  pad: [number, number],
  transposed: boolean,
  act: Activation | undefined,
  alpha: number,
): Tensor {
  const engine = rec.engine;
  const tuned = engine.tuning.get('conv3x3', conv3x3Key(g.n, g.cin, g.h, g.w, cout, transposed));
  const path = conv3x3Path(g, cout, out, stride, pad, engine.limits.maxStorageBufferBindingSize, tuned, convCaps(engine));
  if (path === 'winograd') return conv3x3Winograd(rec, x, weight, bias, { cout, transposed, act, alpha, op: g.name });
  if (path === 'px8') return recordConv3x3(rec, x, weight, bias, g, cout, transposed, act, alpha);
  if (path === 'igemm') {
    // One workgroup per 64 pixels along x: beyond the dimension limit, 8-pixel runs or the general kernel.
    if (Math.ceil((g.n * g.h * g.w) / 64) <= engine.limits.maxComputeWorkgroupsPerDimension) return recordIgemm(rec, x, weight, bias, g, cout, transposed, act, alpha);
    if (g.w % 8 === 0) return recordConv3x3(rec, x, weight, bias, g, cout, transposed, act, alpha);
  }
  const cig = g.cin / g.groups;
  const cog = cout / g.groups;
  const co = channelTile(cog);
  const [oh, ow] = out;
  const [sy, sx] = stride;
  // Transposed: one z-slice per stride phase class, each a ceil(OH/sy) x ceil(OW/sx) pixel grid.
  const ph = transposed ? Math.ceil(oh / sy) : oh;
  const pw = transposed ? Math.ceil(ow / sx) : ow;
  const pixels = g.n * ph * pw;
  // Small images (SD's 8x8 level, tests) get smaller workgroups so few threads idle on padding.
  const wg = pow2Tile(Math.ceil(pixels / 4), 8, WG_MAX);
  const k = engine.kernel({
    family: 'conv2d',
    source,
    includes: [activations],
    entry: 'conv2d',
    dtype: x.dtype,
    wdtype: weight.dtype,
    consts: { WG: wg, CO: co, ACT: activationCode(act), HAS_BIAS: bias !== undefined, TRANSPOSED: transposed },
  });
  const result = engine.empty([g.n, cout, oh, ow], x.dtype, g.name);
  if (result.size === 0) return result;
  const coTiles = Math.ceil(cog / co);
  const kk = g.kh * g.kw;
  rec.dispatch(k, {
    op: g.name,
    // Without a bias the weight stands in for the binding; HAS_BIAS=false never reads it.
    bindings: { cx: x, cwt: weight, cbias: bias ?? weight, cy: result },
    uniforms: {
      cin: g.cin,
      hw: g.h * g.w,
      h: g.h,
      w: g.w,
      cout,
      oh,
      ow,
      cig,
      cog,
      co_tiles: coTiles,
      kh: g.kh,
      kw: g.kw,
      sy,
      sx,
      py: pad[0],
      px: pad[1],
      ph,
      pw,
      pixels,
      wco: transposed ? kk : cig * kk,
      wci: transposed ? cog * kk : kk,
      alpha,
    },
    workgroups: [Math.ceil(pixels / (wg * 4)), g.groups * coTiles, transposed ? sy * sx : 1],
  });
  return result;
}

/**
 * PyTorch conv2d: x [N, Cin, H, W], weight [Cout, Cin/groups, KH, KW], bias [Cout] ->
 * [N, Cout, floor((H + 2 py - KH) / sy) + 1, floor((W + 2 px - KW) / sx) + 1], zero padding, with an
 * optional fused activation applied after the bias.
 */
export function conv2d(rec: Recorder, x: Tensor, weight: Tensor, bias?: Tensor, opts: Conv2dOptions = {}): Tensor {
  const name = opts.op ?? 'conv2d';
  const groups = opts.groups ?? 1;
  const g = checkInputs(name, x, weight, bias, groups, false);
  const stride = pair(opts.stride, 1, 'stride', name);
  const pad = pair(opts.padding, 0, 'padding', name);
  const end = pair(opts.padEnd, 0, 'padEnd', name);
  assertArg(stride[0] >= 1 && stride[1] >= 1, `${name}: stride must be >= 1, got ${stride.join('x')}`);
  assertArg(pad[0] >= 0 && pad[1] >= 0, `${name}: padding must be >= 0, got ${pad.join('x')}`);
  assertArg(end[0] >= 0 && end[1] >= 0, `${name}: padEnd must be >= 0, got ${end.join('x')}`);
  const [oh, ow] = convOutputSize(g.h, g.w, g.kh, g.kw, stride, pad, end);
  assertArg(
    oh >= 1 && ow >= 1,
    `${name}: kernel ${g.kh}x${g.kw} with padding ${pad.join('x')} is larger than the input ${shapeString(x.shape)}`,
  );
  return record(rec, x, weight, bias, g, weight.shape[0]!, [oh, ow], stride, pad, false, opts.act, opts.alpha ?? 0.01);
}

/**
 * PyTorch conv_transpose2d: x [N, Cin, H, W], weight [Cin, Cout/groups, KH, KW], bias [Cout] ->
 * [N, Cout, (H - 1) sy - 2 py + KH + opy, (W - 1) sx - 2 px + KW + opx].
 */
export function convTranspose2d(rec: Recorder, x: Tensor, weight: Tensor, bias?: Tensor, opts: ConvTranspose2dOptions = {}): Tensor {
  const name = opts.op ?? 'conv_transpose2d';
  const groups = opts.groups ?? 1;
  const g = checkInputs(name, x, weight, bias, groups, true);
  const stride = pair(opts.stride, 1, 'stride', name);
  const pad = pair(opts.padding, 0, 'padding', name);
  const opad = pair(opts.outputPadding, 0, 'outputPadding', name);
  assertArg(stride[0] >= 1 && stride[1] >= 1, `${name}: stride must be >= 1, got ${stride.join('x')}`);
  assertArg(pad[0] >= 0 && pad[1] >= 0, `${name}: padding must be >= 0, got ${pad.join('x')}`);
  assertArg(
    opad[0] >= 0 && opad[1] >= 0 && opad[0] < stride[0] && opad[1] < stride[1],
    `${name}: outputPadding ${opad.join('x')} must be >= 0 and smaller than the stride ${stride.join('x')}`,
  );
  const oh = (g.h - 1) * stride[0] - 2 * pad[0] + g.kh + opad[0];
  const ow = (g.w - 1) * stride[1] - 2 * pad[1] + g.kw + opad[1];
  assertArg(oh >= 1 && ow >= 1, `${name}: padding ${pad.join('x')} leaves no output for input ${shapeString(x.shape)}`);
  const cout = weight.shape[1]! * groups;
  return record(rec, x, weight, bias, g, cout, [oh, ow], stride, pad, true, opts.act, opts.alpha ?? 0.01);
}

/** The one-thread-per-output baseline (scalar loop over Cin*KH*KW, groups 1): for benchmarks only. */
export function conv2dNaive(
  rec: Recorder,
  x: Tensor,
  weight: Tensor,
  bias?: Tensor,
  opts: { stride?: Pair; padding?: Pair } = {},
): Tensor {
  const name = 'conv2d_naive';
  const g = checkInputs(name, x, weight, bias, 1, false);
  const [sy, sx] = pair(opts.stride, 1, 'stride', name);
  const [py, px] = pair(opts.padding, 0, 'padding', name);
  assertArg(sy >= 1 && sx >= 1 && py >= 0 && px >= 0, `${name}: stride must be >= 1 and padding >= 0`);
  const oh = Math.floor((g.h + 2 * py - g.kh) / sy) + 1;
  const ow = Math.floor((g.w + 2 * px - g.kw) / sx) + 1;
  assertArg(oh >= 1 && ow >= 1, `${name}: kernel ${g.kh}x${g.kw} is larger than the padded input ${shapeString(x.shape)}`);
  const engine = rec.engine;
  const wg = workgroupSize(engine);
  const cout = weight.shape[0]!;
  const k = engine.kernel({
    family: 'conv2d',
    source,
    includes: [activations],
    entry: 'conv2d_naive',
    dtype: x.dtype,
    wdtype: weight.dtype,
    consts: { WG: wg, CO: 1, ACT: 0, HAS_BIAS: bias !== undefined, TRANSPOSED: false },
  });
  const out = engine.empty([g.n, cout, oh, ow], x.dtype, name);
  const total = out.size;
  const grid = grid1d(engine, total, wg);
  rec.dispatch(k, {
    op: name,
    bindings: { nx: x, nwt: weight, nbias: bias ?? weight, ny: out },
    uniforms: { total, row: grid.row, cin: g.cin, h: g.h, w: g.w, cout, oh, ow, kh: g.kh, kw: g.kw, sy, sx, py, px },
    workgroups: grid.workgroups,
  });
  return out;
}
