// CPU references for the region family (crop / paste / diffusers' blend_v and blend_h) on NCHW arrays.

export interface Arr4 {
  data: Float32Array;
  shape: [number, number, number, number];
}

export function cropRef(x: Arr4, y0: number, x0: number, h: number, w: number): Arr4 {
  const [n, c, H, W] = x.shape;
  const out = new Float32Array(n * c * h * w);
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) out[(p * h + y) * w + xx] = x.data[(p * H + y0 + y) * W + x0 + xx]!;
  return { data: out, shape: [n, c, h, w] };
}

/** diffusers' blend_v (in place on b): rows y < e of b fade from a's last e rows. */
export function blendVRef(a: Arr4, b: Arr4, extent: number): void {
  const [n, c, ah, w] = a.shape;
  const bh = b.shape[2];
  const e = Math.min(ah, bh, extent);
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < e; y++)
      for (let x = 0; x < w; x++) {
        const t = y / e;
        const bi = (p * bh + y) * w + x;
        b.data[bi] = a.data[(p * ah + ah - e + y) * w + x]! * (1 - t) + b.data[bi]! * t;
      }
}

/** diffusers' blend_h (in place on b): columns x < e of b fade from a's last e columns. */
export function blendHRef(a: Arr4, b: Arr4, extent: number): void {
  const [n, c, h, aw] = a.shape;
  const bw = b.shape[3];
  const e = Math.min(aw, bw, extent);
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < e; x++) {
        const t = x / e;
        const bi = (p * h + y) * bw + x;
        b.data[bi] = a.data[(p * h + y) * aw + aw - e + x]! * (1 - t) + b.data[bi]! * t;
      }
}

/**
 * diffusers' tiled loop (tiled_encode / tiled_decode after the per-tile model calls), on the host:
 * `tiles[i][j]` are the raw outputs of the tiles in row-major order; blends happen in place in
 * diffusers' order, each tile is cut to `keep` rows / columns and the cuts are concatenated.
 */
export function tiledBlendRef(tiles: Arr4[][], blend: number, keep: number): Arr4 {
  const rows = tiles.map((r) => r.map((t) => ({ data: t.data.slice(), shape: t.shape })));
  const kept: Arr4[][] = [];
  rows.forEach((row, i) => {
    kept.push(
      row.map((tile, j) => {
        if (i > 0) blendVRef(rows[i - 1]![j]!, tile, blend);
        if (j > 0) blendHRef(row[j - 1]!, tile, blend);
        return cropRef(tile, 0, 0, Math.min(keep, tile.shape[2]), Math.min(keep, tile.shape[3]));
      }),
    );
  });
  const [n, c] = kept[0]![0]!.shape;
  const H = kept.reduce((s, r) => s + r[0]!.shape[2], 0);
  const W = kept[0]!.reduce((s, t) => s + t.shape[3], 0);
  const out = new Float32Array(n * c * H * W);
  let oy = 0;
  for (const r of kept) {
    let ox = 0;
    for (const t of r) {
      const [, , th, tw] = t.shape;
      for (let p = 0; p < n * c; p++)
        for (let y = 0; y < th; y++) for (let x = 0; x < tw; x++) out[(p * H + oy + y) * W + ox + x] = t.data[(p * th + y) * tw + x]!;
      ox += tw;
    }
    oy += r[0]!.shape[2];
  }
  return { data: out, shape: [n, c, H, W] };
}
