// Row gather: embedding lookups (token ids -> rows of an embedding table) and picking rows of an
// activation (the pooled CLIP output at each prompt's end-of-text token).

import source from '../../../kernels/gather.wgsl';
import type { Recorder } from '../recorder.js';
import type { Tensor } from '../tensor.js';
import { assertArg } from '../errors.js';
import { bytesPerElement, paramDtype, shapeString, type DType } from '../dtype.js';
import { grid1d, workgroupSize } from './grid.js';

export interface GatherOptions {
  /** Largest table binding in bytes (default: the adapter's maxStorageBufferBindingSize; tests lower it). */
  maxBindingBytes?: number;
  /** Output dtype (default the table's). */
  dtype?: DType;
  op?: string;
}

/** Rows of the table per binding: as many as fit, a multiple that keeps chunk offsets aligned. */
function chunkRows(rowBytes: number, maxBytes: number, align: number): number {
  const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);
  const step = align / gcd(align, rowBytes); // rows whose bytes are a multiple of `align`
  const fit = Math.floor(maxBytes / rowBytes);
  return Math.max(step, Math.floor(fit / step) * step);
}

/**
 * table [V, D] and ids [...] (f32 holding integer row indices) -> [..., D] in opts.dtype (default the
 * table's; an f16 table may give f32 rows).
 * Ids outside [0, V) give zero rows; validate ids on the host where they come from user input.
 */
export function gatherRows(rec: Recorder, table: Tensor, ids: Tensor, opts: GatherOptions = {}): Tensor {
  const op = opts.op ?? 'gather_rows';
  assertArg(table.rank === 2, `${op}: table must be [rows, dim], got ${shapeString(table.shape)}`);
  assertArg(ids.dtype === 'f32', `${op}: ids must be an f32 tensor of integer values, got ${ids.dtype}`);
  const engine = rec.engine;
  const [V, D] = table.shape as [number, number];
  const dtype = opts.dtype ?? table.dtype;
  paramDtype(`${op}: table`, dtype, table.dtype);
  const out = engine.empty([...ids.shape, D], dtype, op);
  if (out.size === 0) return out;
  assertArg(V > 0, `${op}: the table ${shapeString(table.shape)} has no rows`);
  const rowBytes = D * bytesPerElement(table.dtype);
  const maxBytes = opts.maxBindingBytes ?? engine.limits.maxStorageBufferBindingSize;
  const align = engine.limits.minStorageBufferOffsetAlignment;
  const rows = table.byteLength <= maxBytes ? V : chunkRows(rowBytes, maxBytes, align);
  assertArg(rows * rowBytes <= maxBytes || rows === V, `${op}: rows of ${rowBytes} bytes cannot be bound in aligned chunks under ${maxBytes} bytes`);
  const wg = workgroupSize(engine);
  const k = engine.kernel({ family: 'gather', source, entry: 'gather_rows', dtype, wdtype: table.dtype, consts: { WG: wg } });
  const g = grid1d(engine, out.size, wg);
  const bufferBytes = table.buffer.size;
  for (let base = 0; base < V; base += rows) {
    const n = Math.min(rows, V - base);
    const offset = base * rowBytes;
    const size = Math.min(Math.ceil((n * rowBytes) / 4) * 4, bufferBytes - offset);
    rec.dispatch(k, {
      op,
      bindings: { gtable: rows === V ? table : { buffer: table.buffer, offset, size, tensor: table }, gids: ids, gout: out },
      uniforms: { n: out.size, row: g.row, d: D, base, rows: n, total: V, zero_invalid: base === 0 ? 1 : 0 },
      workgroups: g.workgroups,
    });
  }
  return out;
}
