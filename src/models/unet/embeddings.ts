// diffusers' Timesteps (parameter-free sinusoid) and TimestepEmbedding (linear_1 -> SiLU -> linear_2).
// The sinusoid's arguments reach ~1000 rad: plain numbers are embedded on the CPU (f64 sin/cos of the
// f32 arguments PyTorch forms) and uploaded; timesteps already on the GPU use the range-reduced kernel.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { timestepEmbedding, timestepEmbeddingCPU, type TimestepEmbeddingOptions } from '../../engine/ops/embedding.js';
import { Linear } from '../layers.js';
import { isStepValue, type StepValue } from '../../engine/step-value.js';
import type { WeightLoader } from '../weights.js';

/**
 * A timestep for the whole batch, one per sample, or an f32 tensor [N] (or [1]) of them; a StepValue
 * is a single timestep that a captured program recomputes per replay (step-value.ts).
 */
export type Timestep = number | readonly number[] | Tensor | StepValue;

export class Timesteps {
  constructor(
    readonly dim: number,
    readonly flipSinToCos: boolean,
    readonly freqShift: number,
  ) {}

  private get opts(): TimestepEmbeddingOptions {
    return { flipSinToCos: this.flipSinToCos, downscaleFreqShift: this.freqShift };
  }

  /** [T, dim] in `dtype` (T = 1 for a single number). */
  forward(rec: Recorder, t: Timestep, dtype: Tensor['dtype']): Tensor {
    if (isStepValue(t)) {
      assertArg(Number.isFinite(t.value), `Timesteps: timesteps must be finite numbers, got ${t.value}`);
      const embed = (v: number) => timestepEmbeddingCPU([v], this.dim, this.opts);
      const out = rec.engine.empty([1, this.dim], dtype, 'time_proj');
      rec.engine.write(out, embed(t.value), (p) => embed(t.at(p)));
      return out;
    }
    if (typeof t === 'number' || Array.isArray(t)) {
      const list = typeof t === 'number' ? [t] : (t as readonly number[]).slice();
      assertArg(list.length > 0 && list.every(Number.isFinite), `Timesteps: timesteps must be finite numbers, got ${JSON.stringify(t)}`);
      return rec.engine.tensor(timestepEmbeddingCPU(list, this.dim, this.opts), [list.length, this.dim], dtype, 'time_proj');
    }
    const tt = t as Tensor;
    assertArg(tt.rank === 1 && tt.dtype === 'f32', `Timesteps: a timestep tensor must be f32 [N], got ${tt.dtype} ${shapeString(tt.shape)}`);
    return timestepEmbedding(rec, tt, this.dim, { ...this.opts, dtype });
  }
}

export class TimestepEmbedding {
  readonly linear1: Linear;
  readonly linear2: Linear;
  constructor(w: WeightLoader, inChannels: number, readonly dim: number) {
    this.linear1 = new Linear(w, 'linear_1', inChannels, dim);
    this.linear2 = new Linear(w, 'linear_2', dim, dim);
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => this.linear2.forward(rec, this.linear1.forward(rec, x, 'silu')));
  }
}
