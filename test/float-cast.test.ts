// Chunked float casts for `silo convert`: overflow to ±inf counted (and clamped on request) for every
// narrowing target, NaN/Inf in the source counted, nothing else changed. Expected bits are literals.
import { describe, it, expect } from 'vitest';
import { castChunk, castChunks, emptyStats, CAST_CHUNK_ELEMENTS } from '../src/formats/float-cast.js';

const bytesOf = (a: Float64Array | Float32Array | Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const u16 = (b: Uint8Array) => [...new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2)];

describe('castChunk', () => {
  it('F32 -> F16: 65519 rounds to 65504, 65520 and beyond overflow; saturate gives 0x7bff / 0xfbff', () => {
    const src = bytesOf(new Float32Array([1, 65519, 65520, -1e10, 0.5]));
    const s = emptyStats();
    expect(u16(castChunk(src, 'F32', 'F16', 'inf', s))).toEqual([0x3c00, 0x7bff, 0x7c00, 0xfc00, 0x3800]);
    expect(s).toEqual({ nan: 0, inf: 0, overflow: 2, maxOverflow: 1e10 });
    const t = emptyStats();
    expect(u16(castChunk(src, 'F32', 'F16', 'saturate', t))).toEqual([0x3c00, 0x7bff, 0x7bff, 0xfbff, 0x3800]);
    expect(t.overflow).toBe(2);
  });

  it('F32 -> BF16 and F64 -> F32 overflow the same way', () => {
    const s = emptyStats();
    expect(u16(castChunk(bytesOf(new Float32Array([3.4e38, -2])), 'F32', 'BF16', 'saturate', s))).toEqual([0x7f7f, 0xc000]);
    expect(s.overflow).toBe(1);
    const d = emptyStats();
    const out = castChunk(bytesOf(new Float64Array([1e300, -1e39, 2])), 'F64', 'F32', 'saturate', d);
    expect([...new Float32Array(out.buffer, out.byteOffset, 3)]).toEqual([3.4028234663852886e38, -3.4028234663852886e38, 2]);
    expect(d).toEqual({ nan: 0, inf: 0, overflow: 2, maxOverflow: 1e300 });
  });

  it('NaN/Inf in the source are counted, not overflow, and kept; same dtype returns the bytes', () => {
    const src = bytesOf(new Uint16Array([0x7e00, 0x7c00, 0xfc00, 0x3c00])); // F16 NaN, +Inf, -Inf, 1
    const s = emptyStats();
    expect(castChunk(src, 'F16', 'F16', 'error', s)).toBe(src);
    expect(s).toEqual({ nan: 1, inf: 2, overflow: 0, maxOverflow: 0 });
    const f = castChunk(src, 'F16', 'F32', 'error', emptyStats());
    const v = [...new Float32Array(f.buffer, f.byteOffset, 4)];
    expect(Number.isNaN(v[0])).toBe(true);
    expect(v.slice(1)).toEqual([Infinity, -Infinity, 1]);
  });

  it('castChunks covers tensors larger than one chunk, from unaligned bytes', () => {
    const n = CAST_CHUNK_ELEMENTS + 3;
    const vals = new Float32Array(n).map((_, i) => (i === n - 1 ? 1e6 : i % 7));
    const shifted = new Uint8Array(n * 4 + 1);
    shifted.set(bytesOf(vals), 1);
    const s = emptyStats();
    const pieces = [...castChunks(shifted.subarray(1), 'F32', 'F16', 'error', s)];
    expect(pieces.map((p) => p.byteLength)).toEqual([CAST_CHUNK_ELEMENTS * 2, 6]);
    expect(u16(pieces[1]!)).toEqual([0x4400, 0x4500, 0x7c00]); // 2^20 % 7 = 4, then 5, then 1e6 -> inf
    expect(u16(pieces[0]!).slice(0, 3)).toEqual([0x0000, 0x3c00, 0x4000]);
    expect(s).toEqual({ nan: 0, inf: 0, overflow: 1, maxOverflow: 1e6 });
  });
});
