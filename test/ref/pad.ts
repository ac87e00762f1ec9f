// CPU reference for spatial padding (torch ReflectionPad2d / ReplicationPad2d / zero padding).

export type PadModeRef = 'reflect' | 'replicate' | 'zeros';

function source(i: number, len: number, mode: PadModeRef): number {
  if (i >= 0 && i < len) return i;
  if (mode === 'zeros') return -1;
  if (mode === 'replicate') return Math.min(Math.max(i, 0), len - 1);
  return i < 0 ? -i : 2 * (len - 1) - i;
}

/** x [N, C, H, W] padded by [top, bottom, left, right]. */
export function pad2dRef(x: ArrayLike<number>, shape: number[], pad: [number, number, number, number], mode: PadModeRef): Float32Array {
  const [n, c, h, w] = shape as [number, number, number, number];
  const [top, bottom, left, right] = pad;
  const oh = h + top + bottom;
  const ow = w + left + right;
  const out = new Float32Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < oh; y++)
      for (let xx = 0; xx < ow; xx++) {
        const sy = source(y - top, h, mode);
        const sx = source(xx - left, w, mode);
        out[(p * oh + y) * ow + xx] = sy < 0 || sx < 0 ? 0 : x[(p * h + sy) * w + sx]!;
      }
  return out;
}
