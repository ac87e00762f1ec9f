// The 3x3 / stride 1 convolutions an SD-style UNet runs at a given latent size, forward and as input
// gradients (a guided step's VJP): what `silo tune` measures. Derived from the block widths the way
// diffusers' UNet2DConditionModel wires them: conv_in, two convs per ResNet (down blocks, mid block, up
// blocks with the skip connections concatenated), one conv after each 2x upsample, conv_out. The
// downsamplers' stride-2 convs use the general kernel and are not listed.

import type { Conv3x3Shape } from '../../engine/tune.js';

export interface UNetWidths {
  inChannels: number;
  outChannels: number;
  blockOutChannels: readonly number[];
  /** ResNets per down block (up blocks have one more). */
  layersPerBlock: number;
}

/** Stable Diffusion 1.x's UNet. */
export const SD15_UNET_WIDTHS: UNetWidths = { inChannels: 4, outChannels: 4, blockOutChannels: [320, 640, 1280, 1280], layersPerBlock: 2 };

/** Distinct 3x3 convolution shapes of a forward pass and its input gradient at `latent` x `latent`, batch `n`. */
export function unetConv3x3Shapes(u: UNetWidths, latent: number, n = 1): Conv3x3Shape[] {
  const fwd: [number, number, number][] = []; // [cin, cout, side]
  const ch = u.blockOutChannels;
  const levels = ch.length;
  let side = latent;
  fwd.push([u.inChannels, ch[0]!, side]);
  const skips: number[] = [ch[0]!];
  let c = ch[0]!;
  for (let i = 0; i < levels; i++) {
    for (let j = 0; j < u.layersPerBlock; j++) {
      fwd.push([c, ch[i]!, side], [ch[i]!, ch[i]!, side]);
      c = ch[i]!;
      skips.push(c);
    }
    if (i < levels - 1) {
      side = Math.ceil(side / 2);
      skips.push(c);
    }
  }
  const mid = ch[levels - 1]!;
  for (let j = 0; j < 2; j++) fwd.push([mid, mid, side], [mid, mid, side]);
  c = mid;
  for (let k = 0; k < levels; k++) {
    const out = ch[levels - 1 - k]!;
    for (let j = 0; j <= u.layersPerBlock; j++) {
      const skip = skips.pop()!;
      fwd.push([c + skip, out, side], [out, out, side]);
      c = out;
    }
    if (k < levels - 1) {
      side *= 2;
      fwd.push([c, c, side]);
    }
  }
  fwd.push([c, u.outChannels, side]);
  const seen = new Set<string>();
  const shapes: Conv3x3Shape[] = [];
  const add = (s: Conv3x3Shape) => {
    const k = `${s.transposed}:${s.cin}:${s.cout}:${s.h}`;
    if (!seen.has(k)) {
      seen.add(k);
      shapes.push(s);
    }
  };
  for (const [cin, cout, s] of fwd) add({ n, cin, h: s, w: s, cout, transposed: false });
  // The VJP's input gradients: the transposed convolution from cout back to cin channels.
  for (const [cin, cout, s] of fwd) add({ n, cin: cout, h: s, w: s, cout: cin, transposed: true });
  return shapes;
}
