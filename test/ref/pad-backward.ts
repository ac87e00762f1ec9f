// CPU reference for the adjoint of spatial padding, in scatter form (each padded element adds its
// gradient to the input element it was copied from), independent of the kernel's gather form.

import type { PadModeRef } from './pad.js';

function source(i: number, len: number, mode: PadModeRef): number {
  if (i >= 0 && i < len) return i;
  if (mode === 'zeros') return -1;
  if (mode === 'replicate') return Math.min(Math.max(i, 0), len - 1);
  return i < 0 ? -i : 2 * (len - 1) - i;
}

/** d/dx of <pad2d(x), g> for x [N, C, H, W]: g [N, C, H + top + bottom, W + left + right], f64 sums. */
export function pad2dBackwardRef(g: ArrayLike<number>, inShape: number[], pad: [number, number, number, number], mode: PadModeRef): Float32Array {
  const [n, c, h, w] = inShape as [number, number, number, number];
  const [top, bottom, left, right] = pad;
  const oh = h + top + bottom;
  const ow = w + left + right;
  const acc = new Float64Array(n * c * h * w);
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < oh; y++)
      for (let xx = 0; xx < ow; xx++) {
        const sy = source(y - top, h, mode);
        const sx = source(xx - left, w, mode);
        if (sy >= 0 && sx >= 0) acc[(p * h + sy) * w + sx]! += g[(p * oh + y) * ow + xx]!;
      }
  return Float32Array.from(acc);
}
