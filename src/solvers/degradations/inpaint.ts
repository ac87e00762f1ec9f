// Box inpainting (SILO / DPS InpaintingOperator with mask_type 'box'): y = x * mask, masked pixels
// set to 0 (mid grey in [-1, 1]). The mask is ones with a zero box: centred (SILO's evaluation, 256 px
// at 512, 128 at 256) or at a seeded random position inside a margin (DPS's random_sq_bbox).

import type { Engine } from '../../engine/device.js';
import type { DType } from '../../engine/dtype.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { mul } from '../../engine/ops/elementwise.js';
import { uniformCPU, type U64 } from '../../engine/random.js';
import type { Degradation } from './types.js';

export interface Box {
  top: number;
  left: number;
  h: number;
  w: number;
}

/** The centred box of side h x w (top = (H - h) / 2, as center_sq_bbox; integer division). */
export function centerBox(height: number, width: number, h: number, w = h): Box {
  assertArg(h >= 0 && w >= 0 && h <= height && w <= width, `centerBox: a ${h}x${w} box does not fit in ${height}x${width}`);
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), h, w };
}

/**
 * A box at a random position as DPS's random_sq_bbox: top uniform in [margin, H - margin - h), left
 * likewise (numpy randint's half-open range), drawn from the seeded Philox uniform stream.
 */
export function randomBox(height: number, width: number, h: number, w: number, seed: U64, margin: [number, number] = [16, 16]): Box {
  const spanT = height - margin[0] - h - margin[0];
  const spanL = width - margin[1] - w - margin[1];
  assertArg(spanT > 0 && spanL > 0, `randomBox: a ${h}x${w} box with margins ${margin.join(', ')} leaves no room in ${height}x${width}`);
  const [ut, ul] = uniformCPU(2, seed);
  return { top: margin[0] + Math.floor(ut! * spanT), left: margin[1] + Math.floor(ul! * spanL), h, w };
}

/** Ones of [height, width] with zeros inside the box (row-major). */
export function boxMask(height: number, width: number, box: Box): Float32Array {
  assertArg(box.top >= 0 && box.left >= 0 && box.top + box.h <= height && box.left + box.w <= width, `boxMask: box ${JSON.stringify(box)} is outside ${height}x${width}`);
  const m = new Float32Array(height * width).fill(1);
  for (let y = box.top; y < box.top + box.h; y++) m.fill(0, y * width + box.left, y * width + box.left + box.w);
  return m;
}

export class InpaintingOperator implements Degradation {
  readonly name = 'inpaint_box';
  /** [height, width], 1 = kept, 0 = masked. */
  readonly mask: Float32Array;
  private readonly tensors = new Map<DType, Tensor>();

  constructor(
    private readonly engine: Engine,
    readonly height: number,
    readonly width: number,
    readonly box: Box,
  ) {
    this.mask = boxMask(height, width, box);
  }

  /** SILO's evaluation mask: a centred box of side `side` (default H / 2: 256 at 512). */
  static centered(engine: Engine, height: number, width: number, side = Math.floor(height / 2)): InpaintingOperator {
    return new InpaintingOperator(engine, height, width, centerBox(height, width, side));
  }

  static random(engine: Engine, height: number, width: number, seed: U64, side = Math.floor(height / 2), margin: [number, number] = [16, 16]): InpaintingOperator {
    return new InpaintingOperator(engine, height, width, randomBox(height, width, side, side, seed, margin));
  }

  /** The mask as a [1, 1, H, W] tensor in dtype (uploaded once). */
  maskTensor(dtype: DType = 'f32'): Tensor {
    let t = this.tensors.get(dtype);
    if (!t) {
      t = this.engine.keep(this.engine.tensor(this.mask, [1, 1, this.height, this.width], dtype, 'inpaint_mask'));
      this.tensors.set(dtype, t);
    }
    return t;
  }

  apply(rec: Recorder, x: Tensor): Tensor {
    assertArg(
      x.rank === 4 && x.shape[2] === this.height && x.shape[3] === this.width,
      `${this.name}: mask is ${this.height}x${this.width}, input is ${shapeString(x.shape)}`,
    );
    return mul(rec, x, this.maskTensor(x.dtype), { op: this.name });
  }

  /** The mask multiply is diagonal, so A^T = A: g * mask (gradY has the input's shape). */
  adjoint(rec: Recorder, gradY: Tensor, inputShape: readonly number[]): Tensor {
    assertArg(
      gradY.rank === 4 && inputShape.length === 4 && gradY.shape.every((d, i) => d === inputShape[i]),
      `${this.name}_adjoint: gradY ${shapeString(gradY.shape)} must have the input's shape ${shapeString(inputShape)}`,
    );
    return this.apply(rec, gradY);
  }

  dispose(): void {
    for (const t of this.tensors.values()) t.dispose();
    this.tensors.clear();
  }
}
