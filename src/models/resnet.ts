// diffusers' ResnetBlock2D ("default" time-embedding norm, no up/down-sampling inside the block):
//   h = conv1(silu(norm1(x))) [+ time_emb_proj(silu(temb))[:, :, None, None]]
//   h = conv2(silu(norm2(h)));  out = (shortcut(x) + h) / output_scale_factor
// `hidden` is h after conv2, before the skip add: the feature SILO's readout operator consumes; `pre` is
// h before norm2 (conv1's output plus the time embedding): all a VJP needs besides x to skip conv1.

import type { Recorder } from '../engine/recorder.js';
import type { Tensor } from '../engine/tensor.js';
import { add, scale } from '../engine/ops/elementwise.js';
import { Conv2d, GroupNorm, Linear } from './layers.js';
import type { WeightLoader } from './weights.js';

export interface ResnetOptions {
  /** Width of the time embedding (UNet); omit for the VAE's blocks. */
  tembChannels?: number;
  groups?: number;
  eps?: number;
  outputScaleFactor?: number;
}

export class ResnetBlock2D {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly timeEmbProj?: Linear;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly convShortcut?: Conv2d;
  readonly outputScaleFactor: number;

  constructor(w: WeightLoader, readonly inChannels: number, readonly outChannels: number, opts: ResnetOptions = {}) {
    const groups = opts.groups ?? 32;
    const eps = opts.eps ?? 1e-5;
    this.norm1 = new GroupNorm(w, 'norm1', groups, inChannels, eps);
    this.conv1 = new Conv2d(w, 'conv1', inChannels, outChannels, 3, { padding: 1 });
    if (opts.tembChannels) this.timeEmbProj = new Linear(w, 'time_emb_proj', opts.tembChannels, outChannels);
    this.norm2 = new GroupNorm(w, 'norm2', groups, outChannels, eps);
    this.conv2 = new Conv2d(w, 'conv2', outChannels, outChannels, 3, { padding: 1 });
    if (inChannels !== outChannels) this.convShortcut = new Conv2d(w, 'conv_shortcut', inChannels, outChannels, 1);
    this.outputScaleFactor = opts.outputScaleFactor ?? 1;
  }

  /** h = conv1(silu(norm1(x))) (+ the time embedding's per-channel bias): norm2's input (`pre`). */
  norm2Input(rec: Recorder, x: Tensor, tembSilu?: Tensor): Tensor {
    return rec.engine.tidy(() => {
      const h = this.conv1.forward(rec, this.norm1.forward(rec, x, 'silu'));
      if (!this.timeEmbProj) return h;
      if (!tembSilu) throw new Error('ResnetBlock2D: this block needs a time embedding');
      const t = this.timeEmbProj.forward(rec, tembSilu);
      return add(rec, h, t.reshape([t.shape[0]!, t.shape[1]!, 1, 1]));
    });
  }

  /**
   * x [N, Cin, H, W]; tembSilu = silu(temb) [N, tembChannels] (computed once by the caller and shared by
   * every block). With keepHidden the conv2 output is returned too, with keepPre norm2's input (the
   * caller owns them).
   */
  forward(rec: Recorder, x: Tensor, tembSilu?: Tensor, keepHidden = false, keepPre = false): { out: Tensor; hidden?: Tensor; pre?: Tensor } {
    const engine = rec.engine;
    return engine.tidy(() => {
      const h = this.norm2Input(rec, x, tembSilu);
      const hidden = this.conv2.forward(rec, this.norm2.forward(rec, h, 'silu'));
      const skip = this.convShortcut ? this.convShortcut.forward(rec, x) : x;
      let out = add(rec, skip, hidden);
      if (this.outputScaleFactor !== 1) out = scale(rec, out, 1 / this.outputScaleFactor);
      return { out, hidden: keepHidden ? hidden : undefined, pre: keepPre ? h : undefined };
    });
  }
}
