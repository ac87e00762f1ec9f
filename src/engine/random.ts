// Counter-based random numbers: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, SC'11), identical here
// and in kernels/random.wgsl, so a tensor drawn on any adapter equals the one drawn on the CPU.
//
// Stream layout (shared with the GPU kernels):
//   key     = (seed low 32 bits, seed high 32 bits)
//   counter = (block, offset low 32 bits, offset high 32 bits, stream)
// Element i of a draw is word i % 4 of the Philox output for block floor(i / 4). It depends only on
// (seed, offset, stream, i), never on the tensor's shape, the workgroup size or the adapter. Callers
// use a new `offset` for each independent draw with the same seed (e.g. one per sampling step).
//   uniform: stream 0, u = (word >>> 8) * 2^-24 in [0, 1) (24 bits: exact in f32)
//   normal:  stream 1, Box-Muller on word pairs (0,1) and (2,3) of each block:
//            u1 = ((w0 >>> 8) + 1) * 2^-24 in (0, 1], theta = pi * ((w1 >>> 8) * 2^-23 - 1) in [-pi, pi)
//            z0 = sqrt(-2 ln u1) cos theta, z1 = sqrt(-2 ln u1) sin theta

import { ArgumentError } from './errors.js';

export const PHILOX_M0 = 0xd2511f53;
export const PHILOX_M1 = 0xcd9e8d57;
export const PHILOX_W0 = 0x9e3779b9;
export const PHILOX_W1 = 0xbb67ae85;

export const STREAM_UNIFORM = 0;
export const STREAM_NORMAL = 1;

/** A 64-bit seed or offset: a non-negative safe integer or a bigint below 2^64. */
export type U64 = number | bigint;

/** Splits a u64 into [low, high] 32-bit words; throws naming `what` when out of range. */
export function splitU64(v: U64, what: string): [number, number] {
  if (typeof v === 'bigint') {
    if (v < 0n || v >= 1n << 64n) throw new ArgumentError(`${what} must be in [0, 2^64), got ${v}`);
    return [Number(v & 0xffffffffn), Number(v >> 32n)];
  }
  if (!Number.isSafeInteger(v) || v < 0) throw new ArgumentError(`${what} must be a non-negative integer (or a bigint), got ${v}`);
  return [v % 4294967296, Math.floor(v / 4294967296)];
}

// 32x32 -> 64-bit product from 16-bit halves (JS numbers are exact only to 2^53).
let mulHi = 0;
function mulLo(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const mid = ((a0 * b0) >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  mulHi = (a1 * b1 + (p01 >>> 16) + (p10 >>> 16) + Math.floor(mid / 65536)) >>> 0;
  return Math.imul(a, b) >>> 0;
}

/** Philox4x32-10 of one counter block into out[at..at+3]. */
export function philoxInto(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number, out: Uint32Array, at: number): void {
  for (let r = 0; r < 10; r++) {
    if (r > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const lo0 = mulLo(PHILOX_M0, c0);
    const hi0 = mulHi;
    const lo1 = mulLo(PHILOX_M1, c2);
    const hi1 = mulHi;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[at] = c0;
  out[at + 1] = c1;
  out[at + 2] = c2;
  out[at + 3] = c3;
}

/** Philox4x32-10: four u32 counter words and two u32 key words -> four u32 words. */
export function philox4x32(counter: ArrayLike<number>, key: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(4);
  const w = (a: ArrayLike<number>, i: number) => (a[i] ?? 0) >>> 0;
  philoxInto(w(counter, 0), w(counter, 1), w(counter, 2), w(counter, 3), w(key, 0), w(key, 1), out, 0);
  return out;
}

/** The raw u32 words of elements 0..n-1 of the (seed, offset, stream) stream. */
export function philoxBits(n: number, seed: U64, offset: U64 = 0, stream = STREAM_UNIFORM): Uint32Array {
  if (!Number.isSafeInteger(n) || n < 0 || n > 2 ** 34) throw new ArgumentError(`philoxBits: invalid count ${n}`);
  const [k0, k1] = splitU64(seed, 'seed');
  const [o0, o1] = splitU64(offset, 'offset');
  const blocks = Math.ceil(n / 4);
  const out = new Uint32Array(blocks * 4);
  for (let b = 0; b < blocks; b++) philoxInto(b, o0, o1, stream >>> 0, k0, k1, out, 4 * b);
  return out.subarray(0, n);
}

/** Uniform [0, 1) floats with `bits` random mantissa bits (24 for f32, 11 for exact f16). */
export function uniformCPU(n: number, seed: U64, offset: U64 = 0, bits = 24): Float32Array {
  const words = philoxBits(n, seed, offset, STREAM_UNIFORM);
  const scale = 2 ** -bits;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (words[i]! >>> (32 - bits)) * scale;
  return out;
}

/** Standard normals (then mean + std * z) by Box-Muller, computed in f64 and rounded to f32. */
export function normalCPU(n: number, seed: U64, offset: U64 = 0, mean = 0, std = 1): Float32Array {
  const words = philoxBits(Math.ceil(n / 2) * 2, seed, offset, STREAM_NORMAL);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = ((words[i]! >>> 8) + 1) * 2 ** -24;
    const theta = Math.PI * ((words[i + 1]! >>> 8) * 2 ** -23 - 1);
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = mean + std * r * Math.cos(theta);
    if (i + 1 < n) out[i + 1] = mean + std * r * Math.sin(theta);
  }
  return out;
}
