// diffusers' Downsample2D and Upsample2D (use_conv=True), shared by the UNet and the VAE, each with the
// chain stage (../vjp-stages.ts) that runs it forward and backward.
//   Downsample2D: conv 3x3 stride 2 with `padding`; padding 0 means F.pad(x, (0, 1, 0, 1)) first (the
//                 VAE's, and any UNet with downsample_padding 0).
//   Upsample2D:   nearest x2, then conv 3x3 padding 1.

import type { Recorder } from '../engine/recorder.js';
import type { Tensor } from '../engine/tensor.js';
import { conv2d } from '../engine/ops/conv2d.js';
import { upsampleNearest2x } from '../engine/ops/resample.js';
import { upsampleNearest2xBackward } from '../engine/ops/resample-backward.js';
import { Conv2d } from './layers.js';
import type { WeightLoader } from './weights.js';
import { convGradX, convOutShape, type Stage } from './vjp-stages.js';

export class Downsample2D {
  readonly conv: Conv2d;
  /** Zero rows / columns added after the input's end (1 where padding is 0). */
  readonly padEnd: number;
  constructor(w: WeightLoader, channels: number, readonly padding: number) {
    this.conv = new Conv2d(w, 'conv', channels, channels, 3, { stride: 2, padding });
    this.padEnd = padding === 0 ? 1 : 0;
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    const c = this.conv;
    return conv2d(rec, x, c.weight, c.bias, { stride: 2, padding: this.padding, padEnd: this.padEnd, op: 'downsample' });
  }
  stage(name: string, skip: Pick<Stage, 'pushSkip'> = {}): Stage {
    return {
      name,
      ...skip,
      forward: (rec, x) => this.forward(rec, x),
      vjp: (rec, x, g) => convGradX(rec, this.conv, x, g, this.padEnd),
      outShape: (s) => convOutShape(this.conv, s, this.padEnd),
    };
  }
}

export class Upsample2D {
  readonly conv: Conv2d;
  constructor(w: WeightLoader, channels: number) {
    this.conv = new Conv2d(w, 'conv', channels, channels, 3, { padding: 1 });
  }
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => this.conv.forward(rec, upsampleNearest2x(rec, x)));
  }
  stage(name: string): Stage {
    return {
      name,
      forward: (rec, x) => this.forward(rec, x),
      vjp: (rec, x, g) => {
        const up = upsampleNearest2x(rec, x);
        const dUp = convGradX(rec, this.conv, up, g);
        up.dispose();
        return upsampleNearest2xBackward(rec, dUp, x.shape);
      },
      outShape: ([n, , h, w]) => [n!, this.conv.outChannels, 2 * h!, 2 * w!],
    };
  }
}
