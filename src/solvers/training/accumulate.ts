// Gradient accumulation: effective batches larger than memory allows. Each micro-batch's gradients are
// summed on the GPU; the optimizer step then takes the sum with gradScale = 1 / micro-batches (the mean,
// as dividing each micro-batch loss by their count would give).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { add } from '../../engine/ops/elementwise.js';

export class GradAccumulator {
  private sums: Tensor[] | null = null;
  /** Micro-batches summed since the last take(). */
  count = 0;

  constructor(readonly names: readonly string[]) {}

  /** Adds one micro-batch's gradients (by name; each is consumed: the accumulator owns or frees it). */
  add(rec: Recorder, grads: Record<string, Tensor>): void {
    const list = this.names.map((n) => {
      const g = grads[n];
      assertArg(g !== undefined, `GradAccumulator: no gradient for "${n}"`);
      return g;
    });
    // Kept past any tidy() frame the caller has open: the sums outlive this micro-batch's program.
    if (!this.sums) this.sums = list.map((g) => rec.engine.keep(g));
    else {
      this.sums = this.sums.map((s, i) => {
        const g = list[i]!;
        assertArg(g.size === s.size, `GradAccumulator: the gradient of "${this.names[i]}" changed size (${g.size} vs ${s.size})`);
        const sum = rec.engine.keep(add(rec, s, g));
        s.dispose();
        g.dispose();
        return sum;
      });
    }
    this.count++;
  }

  /** The summed gradients in `names` order and the scale that makes them a mean; the caller frees them. */
  take(): { grads: Tensor[]; gradScale: number } {
    assertArg(this.sums !== null && this.count > 0, 'GradAccumulator: nothing accumulated');
    const out = { grads: this.sums, gradScale: 1 / this.count };
    this.sums = null;
    this.count = 0;
    return out;
  }
}
