// Tiled VAE encode / decode with diffusers' semantics (AutoencoderKL.tiled_encode / tiled_decode,
// v0.27): square input tiles of `tile` pixels (latent or image) start every floor(tile * (1 - overlap));
// each tile's output is blended in place with its finished upper and left neighbours over
// floor(outTile * overlap) rows / columns (blend_v, blend_h), and its leading outTile - blend rows and
// columns are kept and concatenated. Tiles at the right / bottom edge are smaller; seams differ from
// an untiled run because every tile normalises with its own GroupNorm statistics.
//
// The plan: a tile size whose every activation fits one storage binding (maxStorageBufferBindingSize,
// and maxBufferSize), found by walking the architecture's activation shapes.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import type { DType } from '../../engine/dtype.js';
import { bytesPerElement } from '../../engine/dtype.js';
import { LimitError, assertArg } from '../../engine/errors.js';
import { blendEdge, cropRect, pasteRect } from '../../engine/ops/region.js';
import { vaeDownFactor, type VaeConfig } from './config.js';

/** diffusers' tile_sample_min_size, tile_latent_min_size and tile_overlap_factor. */
export interface TileSettings {
  sampleSize: number;
  latentSize: number;
  overlap: number;
}

export type TilingMode = 'auto' | 'on' | 'off';

export interface TilingOptions {
  /**
   * 'auto' (default): tile only when some full-size activation would not fit one storage binding,
   * with the largest fitting tile up to the config's sample_size; 'on': diffusers' enable_tiling()
   * (tile whenever the input exceeds the tile); 'off': never.
   */
  tiling?: TilingMode;
  /** Tile geometry for 'on' (default: the config's sample_size, or the plan when that does not fit). */
  tiles?: TileSettings;
}

/** diffusers' defaults: tiles of sample_size pixels, sample_size / 2^(blocks - 1) latents, overlap 0.25. */
export function defaultTiles(cfg: VaeConfig): TileSettings {
  return { sampleSize: cfg.sampleSize, latentSize: Math.floor(cfg.sampleSize / vaeDownFactor(cfg)), overlap: 0.25 };
}

/** Largest activation (elements) of the decoder on a latent of h x w, batch n. */
export function decoderPeakElements(cfg: VaeConfig, n: number, h: number, w: number): number {
  const rev = [...cfg.blockOutChannels].reverse();
  let area = h * w;
  let peak = Math.max(cfg.latentChannels, rev[0]!) * area;
  rev.forEach((c, i) => {
    const cin = i === 0 ? rev[0]! : rev[i - 1]!;
    peak = Math.max(peak, Math.max(cin, c) * area);
    if (i < rev.length - 1) {
      area *= 4; // nearest x2, then conv at the new size
      peak = Math.max(peak, c * area);
    }
  });
  return n * Math.max(peak, cfg.outChannels * area);
}

/** Largest activation (elements) of the encoder on an image of h x w, batch n. */
export function encoderPeakElements(cfg: VaeConfig, n: number, h: number, w: number): number {
  const boc = cfg.blockOutChannels;
  let peak = Math.max(cfg.inChannels, boc[0]!) * h * w;
  boc.forEach((c, i) => {
    const cin = i === 0 ? boc[0]! : boc[i - 1]!;
    peak = Math.max(peak, Math.max(cin, c) * h * w);
    if (i < boc.length - 1) {
      // F.pad (0, 1, 0, 1) then 3x3 stride 2: floor(h / 2)
      h = Math.floor(h / 2);
      w = Math.floor(w / 2);
    }
  });
  return n * Math.max(peak, 2 * cfg.latentChannels * h * w);
}

/** Bytes one binding may hold on this engine. */
export function bindingLimit(limits: { maxStorageBufferBindingSize: number; maxBufferSize: number }): number {
  return Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
}

export interface PlanOptions {
  /** Bytes per binding (default: the engine's bindingLimit). */
  limit: number;
  dtype: DType;
  batch: number;
}

/** Largest activation in bytes of one tile pass in `direction` at the given tile geometry. */
export function tilePeakBytes(cfg: VaeConfig, direction: 'encode' | 'decode', t: TileSettings, dtype: DType, batch: number): number {
  const el =
    direction === 'decode'
      ? decoderPeakElements(cfg, batch, t.latentSize, t.latentSize)
      : encoderPeakElements(cfg, batch, t.sampleSize, t.sampleSize);
  return el * bytesPerElement(dtype);
}

/**
 * Whether diffusers' loop tiles seamlessly with these settings: the kept part of each output tile
 * (outTile - blend) must equal the input step times the scale factor, or the concatenation has the
 * wrong size. diffusers' defaults (multiples of 4 with overlap 0.25) always do.
 */
export function tilesConsistent(t: TileSettings, factor: number): boolean {
  const decode = Math.floor(t.latentSize * (1 - t.overlap)) * factor === t.sampleSize - Math.floor(t.sampleSize * t.overlap);
  const encode = Math.floor(t.sampleSize * (1 - t.overlap)) === (t.latentSize - Math.floor(t.latentSize * t.overlap)) * factor;
  return decode && encode && t.sampleSize === t.latentSize * factor;
}

/**
 * The tile geometry for `direction`: diffusers' default when it fits, otherwise the largest latent tile
 * (image tile = latent tile * 2^(blocks - 1)) that tiles seamlessly and whose every activation fits `limit`.
 */
export function planTiles(cfg: VaeConfig, direction: 'encode' | 'decode', opts: PlanOptions): TileSettings {
  const dflt = defaultTiles(cfg);
  if (tilePeakBytes(cfg, direction, dflt, opts.dtype, opts.batch) <= opts.limit) return dflt;
  const f = vaeDownFactor(cfg);
  for (let t = dflt.latentSize - 1; t >= 2; t--) {
    const tiles = { sampleSize: t * f, latentSize: t, overlap: dflt.overlap };
    if (tilesConsistent(tiles, f) && tilePeakBytes(cfg, direction, tiles, opts.dtype, opts.batch) <= opts.limit) return tiles;
  }
  throw new LimitError(
    `VAE ${direction}: even the smallest tile (batch ${opts.batch}, ${opts.dtype}) needs more than the adapter's ${opts.limit}-byte storage binding`,
  );
}

/**
 * The tiles diffusers' loop makes along one axis of `size` input pixels: start and extent of each input
 * tile, and the rows / columns each contributes to the output (the output size is their sum).
 * `outSize(n)` maps an input extent to the model's output extent.
 */
export function tileLayout(size: number, t: TileSettings, direction: 'encode' | 'decode', outSize: (n: number) => number): { starts: number[]; sizes: number[]; kept: number[]; total: number } {
  const tileIn = direction === 'decode' ? t.latentSize : t.sampleSize;
  const tileOut = direction === 'decode' ? t.sampleSize : t.latentSize;
  const starts = tileStarts(size, Math.floor(tileIn * (1 - t.overlap)));
  const sizes = starts.map((s) => Math.min(tileIn, size - s));
  const keep = tileOut - Math.floor(tileOut * t.overlap);
  const kept = sizes.map((n) => Math.min(keep, outSize(n)));
  return { starts, sizes, kept, total: kept.reduce((a, b) => a + b, 0) };
}

/** Start offsets of diffusers' tile loop: range(0, size, step). */
export function tileStarts(size: number, step: number): number[] {
  assertArg(Number.isInteger(step) && step >= 1, `tiling: tile step must be a positive integer, got ${step}`);
  const out: number[] = [];
  for (let i = 0; i < size; i += step) out.push(i);
  return out;
}

/**
 * diffusers' tiled loop on x [N, C, H, W]: `fn` maps an input tile of up to `tileIn` pixels to its
 * output; tiles start every `step` pixels, outputs are blended over `blend` rows / columns and cut to
 * `keep`. Returns the concatenation of the kept parts.
 */
export function tiledApply(rec: Recorder, x: Tensor, tileIn: number, step: number, blend: number, keep: number, fn: (tile: Tensor) => Tensor): Tensor {
  const engine = rec.engine;
  const [, , H, W] = x.shape as [number, number, number, number];
  const ys = tileStarts(H, step);
  const xs = tileStarts(W, step);
  let above: Tensor[] = [];
  const kept: Tensor[][] = [];
  for (const [i, y0] of ys.entries()) {
    const row: Tensor[] = [];
    const keptRow: Tensor[] = [];
    for (const [j, x0] of xs.entries()) {
      const tile = engine.tidy(() => {
        const input = cropRect(rec, x, { y: y0, x: x0, h: Math.min(tileIn, H - y0), w: Math.min(tileIn, W - x0) });
        return rec.scope(`tile_${i}_${j}`, () => fn(input));
      });
      if (i > 0) blendEdge(rec, above[j]!, tile, blend, 'vertical');
      if (j > 0) blendEdge(rec, row[j - 1]!, tile, blend, 'horizontal');
      const [, , th, tw] = tile.shape as [number, number, number, number];
      keptRow.push(cropRect(rec, tile, { y: 0, x: 0, h: Math.min(keep, th), w: Math.min(keep, tw) }));
      row.push(tile);
    }
    for (const t of above) t.dispose(); // the row below has been blended: no one reads these again
    above = row;
    kept.push(keptRow);
  }
  for (const t of above) t.dispose();
  const [n, c] = kept[0]![0]!.shape as [number, number];
  const outH = kept.reduce((s, r) => s + r[0]!.shape[2]!, 0);
  const outW = kept[0]!.reduce((s, t) => s + t.shape[3]!, 0);
  const out = engine.empty([n, c, outH, outW], x.dtype, 'tiled');
  let oy = 0;
  for (const r of kept) {
    let ox = 0;
    for (const t of r) {
      const [, , th, tw] = t.shape as [number, number, number, number];
      pasteRect(rec, t, { y: 0, x: 0, h: th, w: tw }, out, oy, ox);
      ox += tw;
      t.dispose();
    }
    oy += r[0]!.shape[2]!;
  }
  return out;
}

/** diffusers' tiled_decode loop: latent tiles of latentSize, image blend floor(sampleSize * overlap). */
export function tiledDecode(rec: Recorder, z: Tensor, t: TileSettings, decodeTile: (tile: Tensor) => Tensor): Tensor {
  const step = Math.floor(t.latentSize * (1 - t.overlap));
  const blend = Math.floor(t.sampleSize * t.overlap);
  return rec.scope('tiled_decode', () => tiledApply(rec, z, t.latentSize, step, blend, t.sampleSize - blend, decodeTile));
}

/** diffusers' tiled_encode loop: image tiles of sampleSize, latent blend floor(latentSize * overlap). */
export function tiledEncode(rec: Recorder, x: Tensor, t: TileSettings, encodeTile: (tile: Tensor) => Tensor): Tensor {
  const step = Math.floor(t.sampleSize * (1 - t.overlap));
  const blend = Math.floor(t.latentSize * t.overlap);
  return rec.scope('tiled_encode', () => tiledApply(rec, x, t.sampleSize, step, blend, t.latentSize - blend, encodeTile));
}
