// torch.optim.Adam / AdamW over a list of named f32 parameters, on the GPU: zero-initialised f32 moments
// per parameter, the step count, a learning rate that may follow a schedule, optional clipping of the
// gradients by their global L2 norm (torch.nn.utils.clip_grad_norm_, computed on the GPU: nothing is
// read back), and a gradient scale for accumulated gradients (1 / accumulation steps). Each step records
// one fused dispatch per parameter (src/engine/ops/adam.ts) and, with clipping, one norm per gradient.

import type { Engine } from '../../engine/device.js';
import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { adamStep, checkAdamHyper, type AdamHyper } from '../../engine/ops/adam.js';
import { reduceTensor } from '../../engine/ops/reduce.js';

export interface NamedParameter {
  name: string;
  tensor: Tensor;
  /** The tensor holds the state dict's [rows, cols] matrix transposed (nn.Linear weights on CPU adapters). */
  transposed?: boolean;
}

export interface AdamOptions {
  /** A learning rate, or a schedule: the rate for step t (1, 2, ...). Default 1e-3 (torch's). */
  lr?: number | ((step: number) => number);
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** AdamW (decoupled weight decay; torch.optim.AdamW's default decay is 1e-2, give it explicitly). */
  decoupled?: boolean;
  /** Clip the gradients' global L2 norm to this before each step (torch.nn.utils.clip_grad_norm_). */
  maxGradNorm?: number;
}

export class Adam {
  /** Steps taken so far (torch's state['step']). */
  step = 0;
  readonly m: Tensor[];
  readonly v: Tensor[];
  private readonly hyper: Omit<AdamHyper, 'lr'>;
  private readonly lr: AdamOptions['lr'];
  private readonly maxGradNorm?: number;

  constructor(
    readonly engine: Engine,
    readonly params: readonly NamedParameter[],
    opts: AdamOptions = {},
  ) {
    const what = opts.decoupled ? 'AdamW' : 'Adam';
    assertArg(params.length > 0, `${what}: no parameters to optimise`);
    const names = new Set<string>();
    for (const p of params) {
      assertArg(!names.has(p.name), `${what}: parameter "${p.name}" is listed twice`);
      names.add(p.name);
      assertArg(p.tensor.dtype === 'f32', `${what}: parameter "${p.name}" is ${p.tensor.dtype}; training keeps f32 master weights`);
    }
    const [beta1, beta2] = opts.betas ?? [0.9, 0.999];
    this.hyper = { beta1, beta2, eps: opts.eps ?? 1e-8, weightDecay: opts.weightDecay ?? 0, decoupled: !!opts.decoupled };
    this.lr = opts.lr ?? 1e-3;
    checkAdamHyper(what, { ...this.hyper, lr: typeof this.lr === 'number' ? this.lr : 0 });
    if (opts.maxGradNorm !== undefined) {
      assertArg(Number.isFinite(opts.maxGradNorm) && opts.maxGradNorm > 0, `${what}: max gradient norm ${opts.maxGradNorm} must be finite and > 0`);
      this.maxGradNorm = opts.maxGradNorm;
    }
    this.m = params.map((p) => engine.zeros(p.tensor.shape, 'f32', `${p.name}:exp_avg`));
    this.v = params.map((p) => engine.zeros(p.tensor.shape, 'f32', `${p.name}:exp_avg_sq`));
  }

  /** The learning rate step t uses. */
  lrAt(step: number): number {
    return typeof this.lr === 'number' ? this.lr : this.lr!(step);
  }

  /**
   * Records one optimizer step: `grads[i]` is the gradient of params[i] (same shape, f32). gradScale
   * multiplies every gradient first (before clipping, as when dividing an accumulated sum).
   */
  update(rec: Recorder, grads: readonly Tensor[], opts: { gradScale?: number } = {}): void {
    const what = this.hyper.decoupled ? 'AdamW' : 'Adam';
    assertArg(grads.length === this.params.length, `${what}: ${grads.length} gradients for ${this.params.length} parameters`);
    grads.forEach((g, i) => {
      const p = this.params[i]!;
      assertArg(
        g.dtype === 'f32' && g.rank === p.tensor.rank && g.shape.every((d, j) => d === p.tensor.shape[j]),
        `${what}: the gradient of "${p.name}" is ${g.dtype} ${shapeString(g.shape)}, the parameter f32 ${shapeString(p.tensor.shape)}`,
      );
    });
    const step = this.step + 1;
    const lr = this.lrAt(step);
    checkAdamHyper(`${what} step ${step}`, { ...this.hyper, lr });
    const gradScale = opts.gradScale ?? 1;
    rec.scope(what.toLowerCase(), () => {
      let norms: Tensor | undefined;
      if (this.maxGradNorm !== undefined) {
        // Each gradient's norm into one slot of `norms` (the kernel applies gradScale to their total).
        norms = rec.engine.empty([grads.length], 'f32', 'grad_norms');
        grads.forEach((g, i) => reduceTensor(rec, g, 'l2', { op: 'grad_norm', into: { tensor: norms!, slot: i } }));
      }
      grads.forEach((g, i) =>
        adamStep(rec, this.params[i]!.tensor, g, this.m[i]!, this.v[i]!, {
          ...this.hyper,
          lr,
          step,
          gradScale,
          clip: norms ? { norms, maxNorm: this.maxGradNorm! } : undefined,
        }),
      );
      norms?.dispose();
    });
    this.step = step;
  }

  /** The hyperparameters (for checkpoints); a schedule is not serialisable and is reported as such. */
  settings(): { lr: number | 'schedule'; betas: [number, number]; eps: number; weightDecay: number; decoupled: boolean; maxGradNorm?: number } {
    const h = this.hyper;
    return { lr: typeof this.lr === 'number' ? this.lr : 'schedule', betas: [h.beta1, h.beta2], eps: h.eps, weightDecay: h.weightDecay, decoupled: h.decoupled, maxGradNorm: this.maxGradNorm };
  }

  /** Resumes from saved moments (f32 values in each parameter's held layout) after `step` steps. */
  restore(step: number, m: readonly Float32Array[], v: readonly Float32Array[]): void {
    assertArg(Number.isInteger(step) && step >= 0, `Adam: a resumed step count must be an integer >= 0, got ${step}`);
    assertArg(m.length === this.params.length && v.length === this.params.length, `Adam: ${m.length} / ${v.length} saved moments for ${this.params.length} parameters`);
    this.params.forEach((p, i) => {
      for (const [what, vals, t] of [['exp_avg', m[i]!, this.m[i]!], ['exp_avg_sq', v[i]!, this.v[i]!]] as const) {
        assertArg(vals.length === p.tensor.size, `Adam: saved ${what} of "${p.name}" has ${vals.length} values, the parameter ${p.tensor.size}`);
        this.engine.write(t, vals);
      }
    });
    this.step = step;
  }

  dispose(): void {
    for (const t of [...this.m, ...this.v]) t.dispose();
  }
}
