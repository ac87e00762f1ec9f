// JPEG's lossy stages without entropy coding, on [-1, 1] NCHW RGB images (kernels/jpeg.wgsl): colour
// conversion + chroma subsampling into padded planes, the blockwise DCT -> quantise -> IDCT, chroma
// upsampling + colour conversion back, and the transpose of the linear surrogate. The tables (DCT
// basis, quantisation, colour matrices) are the caller's, so this layer holds no JPEG constants.

import source from '../../../kernels/jpeg.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString, type DType } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

/** The colour model: row-major 3x3 matrices (RGB -> (Y, Cb - 128, Cr - 128) and its inverse). */
export interface JpegColour {
  rgbToYcc: ArrayLike<number>;
  yccToRgb: ArrayLike<number>;
}

/** Chroma subsampling factors along x and y (1 or 2 each). */
export interface JpegSampling {
  sx: number;
  sy: number;
}

/** Plane sizes for an h x w image: luma and chroma padded to whole 8x8 blocks of whole MCUs. */
export function jpegPlaneShape(h: number, w: number, s: JpegSampling): { yh: number; yw: number; ch: number; cw: number; crh: number; crw: number } {
  const crh = Math.ceil(h / s.sy);
  const crw = Math.ceil(w / s.sx);
  return { yh: 8 * Math.ceil(h / 8), yw: 8 * Math.ceil(w / 8), ch: 8 * Math.ceil(crh / 8), cw: 8 * Math.ceil(crw / 8), crh, crw };
}

/** A 3x3 row-major matrix as three vec4 rows (the uniform layout). */
function rows3(m: ArrayLike<number>, what: string): number[] {
  assertArg(m.length === 9, `${what}: expected a 3x3 matrix (9 values), got ${m.length}`);
  return [m[0]!, m[1]!, m[2]!, 0, m[3]!, m[4]!, m[5]!, 0, m[6]!, m[7]!, m[8]!, 0];
}

function checkSampling(s: JpegSampling, op: string): void {
  assertArg((s.sx === 1 || s.sx === 2) && (s.sy === 1 || s.sy === 2), `${op}: subsampling factors must be 1 or 2, got ${s.sx}x${s.sy}`);
}

function checkImage(x: Tensor, op: string): [number, number, number] {
  assertArg(x.rank === 4 && x.shape[1] === 3, `${op}: expected an RGB image [N, 3, H, W], got ${shapeString(x.shape)}`);
  const [n, , h, w] = x.shape as [number, number, number, number];
  assertArg(n >= 1 && h >= 1 && w >= 1, `${op}: empty image ${shapeString(x.shape)}`);
  return [n, h, w];
}

/**
 * x [N, 3, H, W] in [-1, 1] (any storage dtype) -> luma [N, 1, yh, yw] (Y in [0, 255], edge-
 * replicated) and chroma [N, 2, ch, cw] (Cb, Cr averaged over sx x sy cells, + 128), both f32 (f16
 * would hold samples near 255 to 1/8 of a level, enough to move coefficients across quantisation
 * boundaries).
 */
export function jpegToYcc(rec: Recorder, x: Tensor, sampling: JpegSampling, colour: JpegColour): { luma: Tensor; chroma: Tensor } {
  const op = 'jpeg_to_ycc';
  checkSampling(sampling, op);
  const [n, h, w] = checkImage(x, op);
  const p = jpegPlaneShape(h, w, sampling);
  const engine = rec.engine;
  const luma = engine.empty([n, 1, p.yh, p.yw], 'f32', 'jpeg_luma');
  const chroma = engine.empty([n, 2, p.ch, p.cw], 'f32', 'jpeg_chroma');
  const wg = workgroupSize(engine);
  const total = luma.size + chroma.size;
  const g = grid1d(engine, total, wg);
  const k = engine.kernel({ family: 'jpeg', source, entry: 'jpeg_to_ycc', dtype: x.dtype, consts: { WG: wg } });
  rec.dispatch(k, {
    op,
    bindings: { jy_x: x, jy_luma: luma, jy_chroma: chroma },
    uniforms: {
      n: total, row: g.row, h, w, yh: p.yh, yw: p.yw, ch: p.ch, cw: p.cw, sx: sampling.sx, sy: sampling.sy,
      n_luma: luma.size, rgb2ycc: rows3(colour.rgbToYcc, op),
    },
    workgroups: g.workgroups,
  });
  return { luma, chroma };
}

/**
 * Per 8x8 block of planes [N, C, PH, PW] (PH, PW multiples of 8): DCT (basis `dct`, C[u * 8 + x]),
 * q * round(F / q) with round half away from zero, IDCT, clamp to [0, 255]. `quantize: false` is the
 * linear surrogate (no rounding, no clamp).
 */
export function jpegBlocks(rec: Recorder, planes: Tensor, dct: ArrayLike<number>, quant: ArrayLike<number>, quantize = true): Tensor {
  const op = quantize ? 'jpeg_blocks' : 'jpeg_blocks_linear';
  assertArg(planes.rank === 4, `${op}: expected planes [N, C, H, W], got ${shapeString(planes.shape)}`);
  const [n, c, ph, pw] = planes.shape as [number, number, number, number];
  assertArg(planes.dtype === 'f32', `${op}: planes must be f32, got ${planes.dtype}`);
  assertArg(ph % 8 === 0 && pw % 8 === 0, `${op}: plane size must be a multiple of 8, got ${shapeString(planes.shape)}`);
  assertArg(dct.length === 64 && quant.length === 64, `${op}: the DCT basis and the quantisation table need 64 values each, got ${dct.length} and ${quant.length}`);
  for (let i = 0; i < 64; i++) assertArg(quant[i]! > 0, `${op}: quantisation table entry ${i} is ${quant[i]}, must be > 0`);
  const engine = rec.engine;
  const out = engine.empty(planes.shape, 'f32', op);
  const blocks = (n * c * ph * pw) / 64;
  if (blocks === 0) return out;
  // Each thread runs a whole block (~2k FLOPs), so workgroups stay small to spread blocks over cores.
  const wg = workgroupSize(engine, 64);
  const g = grid1d(engine, blocks, wg);
  const k = engine.kernel({ family: 'jpeg', source, entry: 'jpeg_blocks', dtype: 'f32', consts: { WG: wg } });
  rec.dispatch(k, {
    op,
    bindings: { jb_in: planes, jb_out: out },
    uniforms: { n: blocks, row: g.row, pw, ph, quantize: quantize ? 1 : 0, eight: 8, dct: Array.from(dct), quant: Array.from(quant) },
    workgroups: g.workgroups,
  });
  return out;
}

/** f32 luma [N, 1, yh, yw] + chroma [N, 2, ch, cw] -> RGB [N, 3, H, W] in [-1, 1] in `dtype` (clamped to the 8-bit range when clampOut). */
export function jpegToRgb(
  rec: Recorder,
  luma: Tensor,
  chroma: Tensor,
  size: { height: number; width: number },
  sampling: JpegSampling,
  colour: JpegColour,
  clampOut = true,
  dtype: DType = 'f32',
): Tensor {
  const op = 'jpeg_to_rgb';
  checkSampling(sampling, op);
  const { height: h, width: w } = size;
  const p = jpegPlaneShape(h, w, sampling);
  const n = luma.shape[0]!;
  assertArg(
    luma.rank === 4 && luma.shape[1] === 1 && luma.shape[2] === p.yh && luma.shape[3] === p.yw,
    `${op}: a ${h}x${w} image needs luma [N, 1, ${p.yh}, ${p.yw}], got ${shapeString(luma.shape)}`,
  );
  assertArg(
    chroma.rank === 4 && chroma.shape[0] === n && chroma.shape[1] === 2 && chroma.shape[2] === p.ch && chroma.shape[3] === p.cw,
    `${op}: a ${h}x${w} image with luma ${shapeString(luma.shape)} needs chroma [${n}, 2, ${p.ch}, ${p.cw}], got ${shapeString(chroma.shape)}`,
  );
  assertArg(luma.dtype === 'f32' && chroma.dtype === 'f32', `${op}: luma and chroma must be f32, got ${luma.dtype} and ${chroma.dtype}`);
  const engine = rec.engine;
  const out = engine.empty([n, 3, h, w], dtype, op);
  const wg = workgroupSize(engine);
  const g = grid1d(engine, n * h * w, wg);
  const k = engine.kernel({ family: 'jpeg', source, entry: 'jpeg_to_rgb', dtype, consts: { WG: wg } });
  rec.dispatch(k, {
    op,
    bindings: { jr_luma: luma, jr_chroma: chroma, jr_out: out },
    uniforms: {
      n: n * h * w, row: g.row, h, w, yh: p.yh, yw: p.yw, ch: p.ch, cw: p.cw, sx: sampling.sx, sy: sampling.sy,
      crh: p.crh, crw: p.crw, clamp_out: clampOut ? 1 : 0, ycc2rgb: rows3(colour.yccToRgb, op),
    },
    workgroups: g.workgroups,
  });
  return out;
}

/**
 * The transpose of the linear surrogate A_lin = M^-1 diag(1, U D, U D) M (colour matrix M, chroma box
 * average D, triangular upsampling U; the block transform is the identity once rounding is): g [N, 3,
 * H, W] -> A_lin^T g, same shape.
 */
export function jpegAdjoint(rec: Recorder, g: Tensor, sampling: JpegSampling, colour: JpegColour): Tensor {
  const op = 'jpeg_adjoint';
  checkSampling(sampling, op);
  const [n, h, w] = checkImage(g, op);
  const p = jpegPlaneShape(h, w, sampling);
  const engine = rec.engine;
  const out = engine.empty(g.shape, g.dtype, op);
  const wg = workgroupSize(engine);
  const grid = grid1d(engine, n * h * w, wg);
  const k = engine.kernel({ family: 'jpeg', source, entry: 'jpeg_adjoint', dtype: g.dtype, consts: { WG: wg } });
  rec.dispatch(k, {
    op,
    bindings: { ja_grad: g, ja_out: out },
    uniforms: {
      n: n * h * w, row: grid.row, h, w, sx: sampling.sx, sy: sampling.sy, crh: p.crh, crw: p.crw,
      rgb2ycc: rows3(colour.rgbToYcc, op), ycc2rgb: rows3(colour.yccToRgb, op),
    },
    workgroups: grid.workgroups,
  });
  return out;
}
