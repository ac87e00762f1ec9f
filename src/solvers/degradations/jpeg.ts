// SILO's JPEG task: y = decode(encode(x, quality 10)) as PIL makes it (libjpeg: IJG-scaled Annex K
// tables, 4:2:0, JFIF YCbCr), here without the entropy coding, which is lossless, so the GPU can
// record it and the baselines (Latent-DPS, PSLD) can differentiate through a surrogate of it.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { jpegAdjoint, jpegBlocks, jpegToRgb, jpegToYcc, type JpegColour, type JpegSampling } from '../../engine/ops/jpeg.js';
import { encodeJpeg, SUBSAMPLING_FACTORS, type JpegSubsampling } from '../../io/jpeg-encode.js';
import { decodeJpeg } from '../../io/jpeg-decode.js';
import { DCT8, RGB_TO_YCC, YCC_TO_RGB, jpegQuantTables } from '../../io/jpeg-tables.js';
import type { Degradation } from './types.js';

export interface JpegOperatorOptions {
  /** IJG quality 1..100; default 10 (SILO). */
  quality?: number;
  /** Chroma subsampling; default '4:2:0' (PIL's default). */
  subsampling?: JpegSubsampling;
}

/**
 * apply(x), x [N, 3, H, W] in [-1, 1]: RGB = 127.5 (x + 1) -> JFIF YCbCr; luma edge-replicated to
 * whole 8x8 blocks, chroma averaged over 2x2 cells (4:2:0) of the image edge-replicated to whole
 * 16x16 MCUs; per block: DCT, q * round(F / q) with the IJG tables for `quality`, IDCT, clamp to
 * [0, 255]; chroma upsampled with libjpeg's triangular filter; YCbCr -> RGB, clamp to [0, 255], back
 * to [-1, 1]. This is src/io/jpeg.ts's encode + decode without the entropy coding and without the
 * decoder's final rounding to 8 bits: on 8-bit inputs jpegRoundTrip differs from it by <= 0.5 level
 * (tested), unless an f32 coefficient lands within ~1e-5 of a quantisation boundary. PIL / libjpeg
 * quantise 8-bit YCbCr with an integer DCT instead, so their y differs from this one where a
 * coefficient sits near a boundary (41-48 dB PSNR between the two at q10; same PSNR to the clean image).
 *
 * adjoint(g) is the straight-through surrogate: rounding and both clamps taken as the identity, what
 * is left is linear, A_lin = M^-1 diag(1, U D, U D) M (M the colour matrix, D the chroma cell average,
 * U the upsampling; the DCT, quantisation scaling and IDCT cancel, C^T diag(q) diag(1/q) C = 1), and
 * adjoint returns A_lin^T g exactly. applyLinear(x) records A_lin x itself.
 */
export class JpegOperator implements Degradation {
  readonly name: string;
  readonly quality: number;
  readonly subsampling: JpegSubsampling;
  /** The quantisation tables (natural order) libjpeg uses at this quality. */
  readonly tables: { luma: Uint16Array; chroma: Uint16Array };
  private readonly sampling: JpegSampling;
  private readonly colour: JpegColour = { rgbToYcc: RGB_TO_YCC, yccToRgb: YCC_TO_RGB };

  constructor(opts: JpegOperatorOptions = {}) {
    this.quality = opts.quality ?? 10;
    this.subsampling = opts.subsampling ?? '4:2:0';
    assertArg(this.subsampling in SUBSAMPLING_FACTORS, `JpegOperator: unknown subsampling ${String(this.subsampling)}`);
    this.tables = jpegQuantTables(this.quality);
    const [sx, sy] = SUBSAMPLING_FACTORS[this.subsampling];
    this.sampling = { sx, sy };
    this.name = `jpeg${this.quality}`;
  }

  private check(x: Tensor, what: string): void {
    assertArg(x.rank === 4 && x.shape[1] === 3, `${this.name}.${what}: expected an RGB image [N, 3, H, W], got ${shapeString(x.shape)}`);
  }

  private run(rec: Recorder, x: Tensor, quantize: boolean): Tensor {
    const [, , h, w] = x.shape as [number, number, number, number];
    return rec.scope(this.name, () => {
      const { luma, chroma } = jpegToYcc(rec, x, this.sampling, this.colour);
      const lumaQ = jpegBlocks(rec, luma, DCT8, this.tables.luma, quantize);
      luma.dispose();
      const chromaQ = jpegBlocks(rec, chroma, DCT8, this.tables.chroma, quantize);
      chroma.dispose();
      const y = jpegToRgb(rec, lumaQ, chromaQ, { height: h, width: w }, this.sampling, this.colour, quantize, x.dtype);
      lumaQ.dispose();
      chromaQ.dispose();
      return y;
    });
  }

  apply(rec: Recorder, x: Tensor): Tensor {
    this.check(x, 'apply');
    return this.run(rec, x, true);
  }

  /** The linear surrogate A_lin x (no rounding, no clamping). */
  applyLinear(rec: Recorder, x: Tensor): Tensor {
    this.check(x, 'applyLinear');
    return this.run(rec, x, false);
  }

  adjoint(rec: Recorder, gradY: Tensor, inputShape: readonly number[]): Tensor {
    this.check(gradY, 'adjoint');
    assertArg(
      inputShape.length === 4 && inputShape.every((d, i) => d === gradY.shape[i]),
      `${this.name}.adjoint: the gradient ${shapeString(gradY.shape)} must have the input's shape ${shapeString(inputShape)}`,
    );
    return rec.scope(this.name, () => jpegAdjoint(rec, gradY, this.sampling, this.colour));
  }

  dispose(): void {
    // Tables travel as uniforms: nothing on the GPU to free.
  }
}

/**
 * decode(encode(rgb8)) with this project's codec (HxWx3 interleaved 8-bit in and out): the real JPEG
 * measurement on the CPU, entropy coding included.
 */
export function jpegRoundTrip(rgb8: Uint8Array, width: number, height: number, quality: number, subsampling: JpegSubsampling = '4:2:0'): Uint8Array {
  return decodeJpeg(encodeJpeg(rgb8, width, height, quality, { subsampling }), 'jpegRoundTrip').data;
}
