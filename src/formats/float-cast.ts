// Casting floating-point tensor data between safetensors dtypes one chunk at a time, counting what a
// cast would otherwise hide: NaN/Inf already in the source, and finite values too large for the
// target (which round to infinity). Browser-safe; used by `silo convert`.

import { f32ToBf16Bits, f32ToF16Bits } from '../engine/dtype.js';
import { f16BitsArrayToF32, bf16BitsArrayToF32, type SafetensorsDType } from './safetensors.js';

export type FloatDType = 'F64' | 'F32' | 'F16' | 'BF16';
export const FLOAT_DTYPES: ReadonlySet<SafetensorsDType> = new Set(['F64', 'F32', 'F16', 'BF16']);

/** What to do with finite values that overflow the target: refuse, clamp to its largest finite value, or write ±inf. */
export type OverflowPolicy = 'error' | 'saturate' | 'inf';

/** Largest finite value of each target. */
export const FLOAT_MAX: Readonly<Record<FloatDType, number>> = {
  F64: Number.MAX_VALUE,
  F32: 3.4028234663852886e38,
  F16: 65504,
  BF16: 3.3895313892515355e38,
};

export interface CastStats {
  /** NaN / ±Inf values in the source. */
  nan: number;
  inf: number;
  /** Finite source values that round to ±inf in the target, and the largest magnitude among them. */
  overflow: number;
  maxOverflow: number;
}

export const emptyStats = (): CastStats => ({ nan: 0, inf: 0, overflow: 0, maxOverflow: 0 });

const ITEM: Record<FloatDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2 };

/** Source bytes (little-endian, any alignment) as numbers. */
function decode(bytes: Uint8Array, from: FloatDType): Float64Array | Float32Array {
  const own = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  const n = own.byteLength / ITEM[from];
  if (from === 'F64') return new Float64Array(own.buffer, own.byteOffset, n);
  if (from === 'F32') return new Float32Array(own.buffer, own.byteOffset, n);
  const bits = new Uint16Array(own.buffer, own.byteOffset, n);
  return from === 'F16' ? f16BitsArrayToF32(bits) : bf16BitsArrayToF32(bits);
}

/**
 * Casts one chunk of `from` data (a whole number of elements) to `to`, adding to `stats`. Overflowing
 * values become ±inf or, with 'saturate', ±FLOAT_MAX[to] ('error' writes inf: the caller refuses the
 * result). NaN/Inf in the source are kept as they are. Same dtype: the bytes come back unchanged.
 */
export function castChunk(bytes: Uint8Array, from: FloatDType, to: FloatDType, policy: OverflowPolicy, stats: CastStats): Uint8Array {
  const v = decode(bytes, from);
  const n = v.length;
  for (let i = 0; i < n; i++) {
    const x = v[i]!;
    if (x !== x) stats.nan++;
    else if (x === Infinity || x === -Infinity) stats.inf++;
  }
  if (from === to) return bytes;
  const saturate = policy === 'saturate';
  const note = (x: number) => {
    stats.overflow++;
    const a = Math.abs(x);
    if (a > stats.maxOverflow) stats.maxOverflow = a;
  };
  if (to === 'F64') return new Uint8Array(Float64Array.from(v).buffer);
  if (to === 'F32') {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = v[i]!;
      let y = Math.fround(x);
      if (!Number.isFinite(y) && Number.isFinite(x)) {
        note(x);
        if (saturate) y = x < 0 ? -FLOAT_MAX.F32 : FLOAT_MAX.F32;
      }
      out[i] = y;
    }
    return new Uint8Array(out.buffer);
  }
  const out = new Uint16Array(n);
  const toBits = to === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
  const infBits = to === 'F16' ? 0x7c00 : 0x7f80;
  const maxBits = to === 'F16' ? 0x7bff : 0x7f7f;
  for (let i = 0; i < n; i++) {
    const x = v[i]!;
    let h = toBits(x);
    if ((h & 0x7fff) === infBits && Number.isFinite(x)) {
      note(x);
      if (saturate) h = (h & 0x8000) | maxBits;
    }
    out[i] = h;
  }
  return new Uint8Array(out.buffer);
}

/** Elements per chunk: bounded memory for tensors of any size. */
export const CAST_CHUNK_ELEMENTS = 1 << 20;

/** Casts `bytes` (a whole tensor) chunk by chunk. */
export function* castChunks(bytes: Uint8Array, from: FloatDType, to: FloatDType, policy: OverflowPolicy, stats: CastStats): Generator<Uint8Array> {
  const step = CAST_CHUNK_ELEMENTS * ITEM[from];
  for (let o = 0; o < bytes.byteLength; o += step) yield castChunk(bytes.subarray(o, Math.min(o + step, bytes.byteLength)), from, to, policy, stats);
}
