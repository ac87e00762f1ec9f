// Average pooling, the A of DPS's super-resolution baseline (F.avg_pool2d(x, factor): kernel = stride =
// factor, no padding, so the output is floor(H / factor) x floor(W / factor) and trailing rows /
// columns that do not fill a window are dropped). Separable: each axis is a [out, in] matrix with
// 1 / factor in the columns of its window, run on the GPU through SeparableResize's two matmuls; the
// adjoint applies the transposed matrices (each gradient spread as g / factor^2 over its window).

import type { Engine } from '../../engine/device.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { SeparableResize, bicubicAAMatrix } from './superres.js';
import type { Degradation } from './types.js';

/** The 1-D pooling matrix [floor(inLen / factor), inLen]: row o averages inputs [o f, o f + f). */
export function avgPoolMatrix(inLen: number, factor: number): Float64Array {
  assertArg(Number.isInteger(factor) && factor >= 1, `avgPoolMatrix: factor must be a positive integer, got ${factor}`);
  assertArg(Number.isInteger(inLen) && inLen >= factor, `avgPoolMatrix: length ${inLen} is smaller than the pooling window ${factor}`);
  const outLen = Math.floor(inLen / factor);
  const m = new Float64Array(outLen * inLen);
  for (let o = 0; o < outLen; o++) m.fill(1 / factor, o * inLen + o * factor, o * inLen + o * factor + factor);
  return m;
}

/** y = avg_pool2d(x, factor) on NCHW tensors of any size (one pair of matrices per input size). */
export class AvgPoolOperator implements Degradation {
  readonly name: string;
  private readonly pools = new Map<string, SeparableResize>();
  private readonly ups = new Map<string, SeparableResize>();

  constructor(
    private readonly engine: Engine,
    readonly factor: number,
  ) {
    assertArg(Number.isInteger(factor) && factor >= 1, `AvgPoolOperator: factor must be a positive integer, got ${factor}`);
    this.name = `avgpool${factor}`;
  }

  /** [floor(H / factor), floor(W / factor)]. */
  outputSize(height: number, width: number): [number, number] {
    return [Math.floor(height / this.factor), Math.floor(width / this.factor)];
  }

  private pool(height: number, width: number): SeparableResize {
    const key = `${height}x${width}`;
    let p = this.pools.get(key);
    if (!p) {
      assertArg(
        height >= this.factor && width >= this.factor,
        `${this.name}: a ${height}x${width} input is smaller than the ${this.factor}x${this.factor} pooling window`,
      );
      const [oh, ow] = this.outputSize(height, width);
      p = new SeparableResize(this.engine, height, width, oh, ow, avgPoolMatrix(height, this.factor), avgPoolMatrix(width, this.factor), this.name);
      this.pools.set(key, p);
    }
    return p;
  }

  apply(rec: Recorder, x: Tensor): Tensor {
    assertArg(x.rank === 4, `${this.name}: expected an NCHW tensor, got ${shapeString(x.shape)}`);
    return this.pool(x.shape[2]!, x.shape[3]!).apply(rec, x);
  }

  /** A^T g: each g[o] / factor^2 spread over its window; the dropped trailing rows / columns get 0. */
  adjoint(rec: Recorder, gradY: Tensor, inputShape: readonly number[]): Tensor {
    const op = `${this.name}_adjoint`;
    assertArg(inputShape.length === 4, `${op}: input shape ${shapeString(inputShape)} is not NCHW`);
    const [n, c, h, w] = inputShape as [number, number, number, number];
    const want = [n, c, ...this.outputSize(h, w)];
    assertArg(
      gradY.rank === 4 && gradY.shape.every((d, i) => d === want[i]),
      `${op}: gradY ${shapeString(gradY.shape)} must be ${shapeString(want)} for input ${shapeString(inputShape)}`,
    );
    return this.pool(h, w).adjoint(rec, gradY);
  }

  /**
   * y brought back to factor x its size with the antialiased bicubic SILO applies to SR measurements
   * before encoding them (the pooled image is SR-like: SILO encodes E(y) at full size).
   */
  upsampleMeasurement(rec: Recorder, y: Tensor): Tensor {
    assertArg(y.rank === 4, `${this.name}: expected an NCHW measurement, got ${shapeString(y.shape)}`);
    const [h, w] = [y.shape[2]!, y.shape[3]!];
    const key = `${h}x${w}`;
    let u = this.ups.get(key);
    if (!u) {
      const [H, W] = [h * this.factor, w * this.factor];
      u = new SeparableResize(this.engine, h, w, H, W, bicubicAAMatrix(h, H), bicubicAAMatrix(w, W), `${this.name}_upsample`);
      this.ups.set(key, u);
    }
    return u.apply(rec, y);
  }

  dispose(): void {
    for (const p of [...this.pools.values(), ...this.ups.values()]) p.dispose();
    this.pools.clear();
    this.ups.clear();
  }
}
