// Spatial rectangles of NCHW tensors for tiled processing (diffusers' tiled VAE encode/decode):
// crop a tile, paste a tile into a larger tensor, and blend a tile's leading rows / columns with its
// finished neighbour in place (diffusers' blend_v / blend_h).

import source from '../../../kernels/region.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { shapeString } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

function nchw(op: string, x: Tensor): [number, number, number, number] {
  assertArg(x.rank === 4, `${op}: expected an NCHW tensor, got shape ${shapeString(x.shape)}`);
  return x.shape as [number, number, number, number];
}

export interface Rect {
  y: number;
  x: number;
  h: number;
  w: number;
}

function checkRect(op: string, what: string, r: Rect, t: Tensor): void {
  const [, , h, w] = t.shape as [number, number, number, number];
  assertArg(
    [r.y, r.x, r.h, r.w].every((v) => Number.isInteger(v) && v >= 0) && r.y + r.h <= h && r.x + r.w <= w,
    `${op}: ${what} rectangle ${r.h}x${r.w} at (${r.y}, ${r.x}) does not fit in ${shapeString(t.shape)}`,
  );
}

/** Copies src[:, :, from.y : from.y + h, from.x : from.x + w] into dst at (toY, toX); dst is written in place. */
export function pasteRect(rec: Recorder, src: Tensor, from: Rect, dst: Tensor, toY: number, toX: number): void {
  const op = 'paste_rect';
  const [n, c, sh, sw] = nchw(op, src);
  const [dn, dc, dh, dw] = nchw(op, dst);
  assertArg(n === dn && c === dc, `${op}: source ${shapeString(src.shape)} and destination ${shapeString(dst.shape)} differ in N or C`);
  assertArg(src.dtype === dst.dtype, `${op}: dtypes differ (${src.dtype} vs ${dst.dtype})`);
  checkRect(op, 'source', from, src);
  checkRect(op, 'destination', { y: toY, x: toX, h: from.h, w: from.w }, dst);
  const total = n * c * from.h * from.w;
  if (total === 0) return;
  const engine = rec.engine;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'region', source, entry: 'copy_rect', dtype: src.dtype, consts: { WG: wg } });
  const g = grid1d(engine, total, wg);
  rec.dispatch(k, {
    op,
    bindings: { rsrc: src, rdst: dst },
    uniforms: {
      n: total,
      row: g.row,
      h: from.h,
      w: from.w,
      src_h: sh,
      src_w: sw,
      src_y: from.y,
      src_x: from.x,
      dst_h: dh,
      dst_w: dw,
      dst_y: toY,
      dst_x: toX,
    },
    workgroups: g.workgroups,
  });
}

/** x[:, :, r.y : r.y + r.h, r.x : r.x + r.w] as a new tensor. */
export function cropRect(rec: Recorder, x: Tensor, r: Rect): Tensor {
  const [n, c] = nchw('crop_rect', x);
  checkRect('crop_rect', 'crop', r, x);
  const out = rec.engine.empty([n, c, r.h, r.w], x.dtype, 'crop_rect');
  pasteRect(rec, x, r, out, 0, 0);
  return out;
}

/**
 * diffusers' blend_v (vertical: a is the tile above b) or blend_h (horizontal: a is left of b), in
 * place on b: extent = min(a's size, b's size, extent) along the blend axis, and the leading `extent`
 * rows (columns) of b fade from a's last `extent` rows (columns) to b's own. a and b must agree in N,
 * C and the other axis.
 */
export function blendEdge(rec: Recorder, a: Tensor, b: Tensor, extent: number, direction: 'vertical' | 'horizontal'): void {
  const op = direction === 'vertical' ? 'blend_v' : 'blend_h';
  const [n, c, ah, aw] = nchw(op, a);
  const [bn, bc, bh, bw] = nchw(op, b);
  const vertical = direction === 'vertical';
  assertArg(
    n === bn && c === bc && (vertical ? aw === bw : ah === bh),
    `${op}: tiles ${shapeString(a.shape)} and ${shapeString(b.shape)} do not line up`,
  );
  assertArg(a.dtype === b.dtype, `${op}: dtypes differ (${a.dtype} vs ${b.dtype})`);
  assertArg(Number.isInteger(extent) && extent >= 0, `${op}: extent must be an integer >= 0, got ${extent}`);
  const e = vertical ? Math.min(ah, bh, extent) : Math.min(aw, bw, extent);
  const total = n * c * (vertical ? e * bw : bh * e);
  if (total === 0) return;
  const engine = rec.engine;
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'region', source, entry: 'blend_edge', dtype: b.dtype, consts: { WG: wg } });
  const g = grid1d(engine, total, wg);
  rec.dispatch(k, {
    op,
    bindings: { ba: a, bb: b },
    uniforms: { n: total, row: g.row, e, vertical: vertical ? 1 : 0, ah, aw, bh, bw },
    workgroups: g.workgroups,
  });
}
