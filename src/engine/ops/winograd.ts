// Winograd F(2x2, 3x3) convolution (kernels/winograd.wgsl) for 3x3 / stride 1 / padding 1 / one group,
// forward or as the input gradient (flipped taps, swapped weight strides): weight and input transforms, 16
// batched matmuls over the channels, and the output transform with bias and activation. 2.25x fewer
// multiply-adds than the direct kernel, for 4x the input and output sizes in f32 intermediates, so it is
// used only when those fit one storage binding.

import source from '../../../kernels/winograd.wgsl';
import activations from '../../../kernels/activations.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { activationCode, type Activation } from './elementwise.js';
import { grid1d, workgroupSize } from './grid.js';
import { matmul } from './matmul.js';
import { tapStrides } from './conv-taps.js';

export interface WinogradConv {
  /** Output channels; the input's channels are x.shape[1]. */
  cout: number;
  /** The weight is a transposed convolution's [Cin, Cout, 3, 3] (the input gradient of a convolution). */
  transposed: boolean;
  act?: Activation;
  alpha: number;
  op: string;
}

/** Whether the f32 intermediates of a Winograd convolution of x [N, Cin, H, W] to cout channels fit a binding. */
export function winogradFits(maxBinding: number, n: number, cin: number, h: number, w: number, cout: number): boolean {
  const tiles = n * Math.ceil(h / 2) * Math.ceil(w / 2);
  return 16 * 4 * Math.max(cin, cout) * tiles <= maxBinding && 16 * 4 * cin * cout <= maxBinding;
}

export function conv3x3Winograd(rec: Recorder, x: Tensor, weight: Tensor, bias: Tensor | undefined, c: WinogradConv): Tensor {
  const engine = rec.engine;
  const [n, cin, h, w] = x.shape as [number, number, number, number];
  const { cout } = c;
  const th = Math.ceil(h / 2);
  const tw = Math.ceil(w / 2);
  const tiles = n * th * tw;
  const wg = workgroupSize(engine, 64);
  // Only the output transform reads ACT and HAS_BIAS: the transforms before it share one pipeline each.
  // The weight and bias bindings take the weight's dtype (f16 weights with f32 activations).
  const kernel = (entry: string, act = 0, hasBias = false) =>
    engine.kernel({ family: 'winograd', source, includes: [activations], entry, dtype: x.dtype, wdtype: weight.dtype, consts: { WG: wg, ACT: act, HAS_BIAS: hasBias } });
  const out = engine.empty([n, cout, h, w], x.dtype, c.op);
  if (out.size === 0) return out;

  const u = engine.empty([16, cout, cin], 'f32', `${c.op}:winograd_weights`);
  let g = grid1d(engine, cout * cin, wg);
  rec.dispatch(kernel('wino_weights'), {
    op: `${c.op}/winograd`,
    bindings: { ww_in: weight, ww_out: u },
    uniforms: { cout, cin, ...tapStrides(cin, cout, c.transposed), row: g.row },
    workgroups: g.workgroups,
  });
  const v = engine.empty([16, cin, tiles], 'f32', `${c.op}:winograd_input`);
  g = grid1d(engine, cin * tiles, wg);
  rec.dispatch(kernel('wino_input'), {
    op: `${c.op}/winograd`,
    bindings: { wi_x: x, wi_v: v },
    uniforms: { cin, h, w, th, tw, tiles, row: g.row },
    workgroups: g.workgroups,
  });
  const m = matmul(rec, u, v, { op: `${c.op}/winograd_matmul` });
  u.dispose();
  v.dispose();
  g = grid1d(engine, cout * tiles, wg);
  rec.dispatch(kernel('wino_output', activationCode(c.act), bias !== undefined), {
    op: `${c.op}/winograd`,
    // Without a bias the (dead, read-only) bias binding still needs a buffer: the weight stands in.
    bindings: { wo_m: m, wo_bias: bias ?? weight, wo_y: out },
    uniforms: { cout, h, w, th, tw, tiles, row: g.row, alpha: c.alpha },
    workgroups: g.workgroups,
  });
  m.dispose();
  return out;
}
