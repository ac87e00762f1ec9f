// The matrix products an SD-style UNet step sends to `matmul` at a given latent size: what `silo tune`
// measures for the matmul variants. The transformer blocks' linear layers (weights held [out, in]: the
// forward reads B transposed and the input gradients row-major; held [in, out]: the other way round), the
// cross-attention keys and values of the text context, and the 16 batched products of each Winograd
// convolution. Attention itself has its own kernels.

import type { MatmulShape } from '../../engine/tune.js';
import type { Conv3x3Shape } from '../../engine/tune.js';
import type { LinearLayout } from '../weights.js';

export interface UNetTransformerWidths {
  /** Channels of each level with a transformer (SD-1.5: the first three down levels; the mid block uses the last). */
  attentionWidths: readonly number[];
  /** Channels of the mid block's transformer, at the lowest level. */
  midWidth: number;
  /** Levels below the latent (each halves the side). */
  levels: number;
  /** The text context's width (CLIP ViT-L: 768) and length (77). */
  contextDim: number;
  contextLength: number;
}

export const SD15_TRANSFORMER_WIDTHS: UNetTransformerWidths = { attentionWidths: [320, 640, 1280], midWidth: 1280, levels: 4, contextDim: 768, contextLength: 77 };

/** Distinct matmul shapes of a guided step (forward and input gradients) at `latent` x `latent`, batch `n`. */
export function unetMatmulShapes(u: UNetTransformerWidths, latent: number, n = 1, winograd: readonly Conv3x3Shape[] = [], layout: LinearLayout = 'out_in'): MatmulShape[] {
  const seen = new Set<string>();
  const shapes: MatmulShape[] = [];
  const add = (batches: number, m: number, k: number, nn: number, transB = false) => {
    const key = `${batches}x${m}x${k}x${nn}${transB ? 'T' : ''}`;
    if (nn % 4 === 0 && !seen.has(key)) {
      seen.add(key);
      shapes.push({ batches, m, k, n: nn, ...(transB ? { transB } : {}) });
    }
  };
  const levels: [number, number][] = u.attentionWidths.map((d, i) => [d, Math.ceil(latent / 2 ** i)]);
  levels.push([u.midWidth, Math.ceil(latent / 2 ** (u.levels - 1))]);
  for (const [d, side] of levels) {
    const tokens = n * side * side;
    // Forward: x W^T, with W [out, in] (B transposed) or held as W^T [in, out] (B row-major); input
    // gradients: g W, the other way round.
    const fw = layout === 'out_in';
    add(1, tokens, d, d, fw); // q, k, v, out (self), q and out (cross)
    add(1, tokens, d, 8 * d, fw); // GEGLU projection
    add(1, tokens, 4 * d, d, fw); // feed-forward output
    add(1, n * u.contextLength, u.contextDim, d, fw); // cross-attention keys and values
    add(1, tokens, d, d, !fw); // the input gradients of the d -> d layers
    add(1, tokens, 8 * d, d, !fw); // GEGLU projection's input gradient
    add(1, tokens, d, 4 * d, !fw); // feed-forward output's input gradient
  }
  // Winograd: [16, cout, cin] x [16, cin, tiles].
  for (const s of winograd) add(16, s.cout, s.cin, s.n * Math.ceil(s.h / 2) * Math.ceil(s.w / 2));
  return shapes;
}
