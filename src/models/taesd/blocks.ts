// TAESD's layers with taesd.py's parameter names: the 3x3 "conv" (padding 1), Block (three 3x3 convs
// with ReLUs between, a skip that is the identity or a 1x1 conv without bias, ReLU after the sum),
// the FLUX.2 variant's pooling branch (x + pool(x) before the block), and the decoder's soft clamp.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { add, relu, scale, unary } from '../../engine/ops/elementwise.js';
import { Conv2d, GroupNorm } from '../layers.js';
import type { WeightLoader } from '../weights.js';

function disposeAll(ts: Array<Tensor | undefined>): void {
  for (const t of ts) t?.dispose();
}

/** taesd.py's conv(n_in, n_out, **kw): nn.Conv2d(n_in, n_out, 3, padding=1, ...). */
export class TaesdConv {
  readonly conv: Conv2d;
  constructor(w: WeightLoader, name: string, cin: number, cout: number, opts: { stride?: 1 | 2; bias?: boolean } = {}) {
    this.conv = new Conv2d(w, name, cin, cout, 3, { padding: 1, stride: opts.stride ?? 1, bias: opts.bias ?? true });
  }
  forward(rec: Recorder, x: Tensor, act?: 'relu'): Tensor {
    return this.conv.forward(rec, x, act);
  }
  dispose(): void {
    disposeAll([this.conv.weight, this.conv.bias]);
  }
}

/** FLUX.2 variant: pool = Sequential(conv1x1 no bias, GroupNorm, ReLU, conv1x1 no bias); names pool.0/1/3. */
export class TaesdPool {
  readonly expand: Conv2d;
  readonly norm: GroupNorm;
  readonly project: Conv2d;
  constructor(w: WeightLoader, channels: number, expansion: number, groups: number) {
    const hidden = channels * expansion;
    this.expand = new Conv2d(w, 'pool.0', channels, hidden, 1, { bias: false });
    this.norm = new GroupNorm(w, 'pool.1', groups, hidden, 1e-5);
    this.project = new Conv2d(w, 'pool.3', hidden, channels, 1, { bias: false });
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => this.project.forward(rec, relu(rec, this.norm.forward(rec, this.expand.forward(rec, x)))));
  }
  dispose(): void {
    disposeAll([this.expand.weight, this.norm.weight, this.norm.bias, this.project.weight]);
  }
}

/** taesd.py's Block(n_in, n_out[, use_midblock_gn]): relu(conv(x') + skip(x')), x' = x + pool(x) if pooled. */
export class TaesdBlock {
  readonly conv0: TaesdConv;
  readonly conv2: TaesdConv;
  readonly conv4: TaesdConv;
  readonly skip?: Conv2d;
  readonly pool?: TaesdPool;

  constructor(w: WeightLoader, readonly cin: number, readonly cout: number, pool?: { expansion: number; groups: number }) {
    this.conv0 = new TaesdConv(w, 'conv.0', cin, cout);
    this.conv2 = new TaesdConv(w, 'conv.2', cout, cout);
    this.conv4 = new TaesdConv(w, 'conv.4', cout, cout);
    if (cin !== cout) this.skip = new Conv2d(w, 'skip', cin, cout, 1, { bias: false });
    // taesd.py sizes the pool from n_in (the branch runs on the block's input).
    if (pool) this.pool = new TaesdPool(w, cin, pool.expansion, pool.groups);
  }

  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => {
      const input = this.pool ? add(rec, x, this.pool.forward(rec, x)) : x;
      let h = this.conv0.forward(rec, input, 'relu');
      h = this.conv2.forward(rec, h, 'relu');
      h = this.conv4.forward(rec, h);
      const skip = this.skip ? this.skip.forward(rec, input) : input;
      return add(rec, h, skip, { act: 'relu' });
    });
  }

  dispose(): void {
    this.conv0.dispose();
    this.conv2.dispose();
    this.conv4.dispose();
    this.skip?.weight.dispose();
    this.pool?.dispose();
  }
}

/**
 * taesd.py's Clamp: tanh(x / 3) * 3, written as 6 sigmoid(2x / 3) - 3 (tanh(u) = 2 sigmoid(2u) - 1) so it
 * uses the existing activations; in f32 the two forms differ by ~1e-7 absolute.
 */
export function softClamp3(rec: Recorder, x: Tensor): Tensor {
  return rec.engine.tidy(() => scale(rec, unary(rec, x, { act: 'sigmoid', scale: 2 / 3, op: 'tanh_clamp' }), 6, -3));
}
