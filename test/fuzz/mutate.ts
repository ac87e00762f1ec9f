// Seeded mutations for the format fuzzer: a small PRNG, generic byte mutations (truncate, flip,
// insert, delete), and structure-aware ones driven by the length fields each format's finder lists
// (grow / shrink a length, splice in a huge number), plus text mutations of a safetensors JSON header
// (duplicate keys, huge or odd numbers). Every mutation describes itself, so a failure can be replayed.

/** mulberry32: tiny, fast, and the same sequence everywhere for a given seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Rand = () => number;
export const int = (r: Rand, n: number) => Math.floor(r() * n);
export const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length)]!;

/** A numeric field inside a file: where, how wide, which byte order. */
export interface Field {
  at: number;
  size: 1 | 2 | 4 | 8;
  big: boolean;
  what: string;
}

export interface Mutated {
  bytes: Uint8Array;
  what: string;
}

const HUGE_U: Record<number, bigint[]> = {
  1: [0xffn, 0x80n, 0x7fn, 0n],
  2: [0xffffn, 0x8000n, 0x7fffn, 0n],
  4: [0xffffffffn, 0x80000000n, 0x7fffffffn, 0xfffffff0n, 0n],
  8: [(1n << 64n) - 1n, 1n << 63n, (1n << 53n) + 1n, 1n << 40n, 0xffffffffn, 0n],
};

function readField(b: Uint8Array, f: Field): bigint {
  let v = 0n;
  for (let i = 0; i < f.size; i++) v |= BigInt(b[f.at + (f.big ? f.size - 1 - i : i)]!) << BigInt(8 * i);
  return v;
}

function writeField(b: Uint8Array, f: Field, v: bigint): void {
  const mask = (1n << BigInt(8 * f.size)) - 1n;
  let x = ((v % (mask + 1n)) + (mask + 1n)) & mask;
  for (let i = 0; i < f.size; i++) {
    b[f.at + (f.big ? f.size - 1 - i : i)] = Number(x & 0xffn);
    x >>= 8n;
  }
}

/** Grow / shrink a length field a little or a lot, or splice in a huge / boundary number. */
export function mutateField(r: Rand, src: Uint8Array, fields: readonly Field[]): Mutated | null {
  const usable = fields.filter((f) => f.at + f.size <= src.length);
  if (usable.length === 0) return null;
  const f = pick(r, usable);
  const b = src.slice();
  const old = readField(b, f);
  let v: bigint;
  let how: string;
  const mode = int(r, 3);
  if (mode === 0) {
    const d = BigInt(pick(r, [1, 2, 3, 7, 8, 64, 255, 4096, 65536]) * (r() < 0.5 ? -1 : 1));
    v = old + d;
    how = `${d > 0n ? '+' : ''}${d}`;
  } else if (mode === 1) {
    v = r() < 0.5 ? old * 2n + 1n : old / 2n;
    how = v > old ? 'x2+1' : '/2';
  } else {
    v = pick(r, HUGE_U[f.size]!);
    how = `=${v}`;
  }
  writeField(b, f, v);
  return { bytes: b, what: `field ${f.what}@${f.at} ${old}${how}` };
}

export function truncate(r: Rand, src: Uint8Array): Mutated {
  const at = int(r, src.length);
  return { bytes: src.slice(0, at), what: `truncate@${at}` };
}

export function flip(r: Rand, src: Uint8Array): Mutated {
  const b = src.slice();
  const n = 1 + int(r, 8);
  const where: string[] = [];
  for (let k = 0; k < n && b.length; k++) {
    const at = int(r, b.length);
    const x = 1 + int(r, 255);
    b[at]! ^= x;
    where.push(`${at}^${x}`);
  }
  return { bytes: b, what: `flip ${where.join(',')}` };
}

export function insertBytes(r: Rand, src: Uint8Array): Mutated {
  const at = int(r, src.length + 1);
  const n = 1 + int(r, 16);
  const fill = Uint8Array.from({ length: n }, () => (r() < 0.5 ? 0xff : int(r, 256)));
  const b = new Uint8Array(src.length + n);
  b.set(src.subarray(0, at));
  b.set(fill, at);
  b.set(src.subarray(at), at + n);
  return { bytes: b, what: `insert ${n}@${at}` };
}

export function deleteBytes(r: Rand, src: Uint8Array): Mutated | null {
  if (src.length === 0) return null;
  const at = int(r, src.length);
  const n = 1 + int(r, Math.min(32, src.length - at));
  const b = new Uint8Array(src.length - n);
  b.set(src.subarray(0, at));
  b.set(src.subarray(at + n), at);
  return { bytes: b, what: `delete ${n}@${at}` };
}

/** One random mutation: a structural one when the format lists fields, else a generic one. */
export function mutateOnce(r: Rand, src: Uint8Array, fields: readonly Field[], extra: readonly ((r: Rand, b: Uint8Array) => Mutated | null)[] = []): Mutated {
  const ops: ((r: Rand, b: Uint8Array) => Mutated | null)[] = [truncate, flip, insertBytes, deleteBytes, (rr, b) => mutateField(rr, b, fields), (rr, b) => mutateField(rr, b, fields), ...extra];
  for (let tries = 0; tries < 8; tries++) {
    const m = pick(r, ops)(r, src);
    if (m) return m;
  }
  return flip(r, src);
}

// ---------------------------------------------------------------------------------------------
// Safetensors: the header is JSON text; mutate it as text too.

const HUGE_NUMBERS = ['18446744073709551616', '9007199254740993', '1e308', '-1', '4294967296', '1.5', '1e400', '0', '2147483648'];

function splitHeader(src: Uint8Array): { text: string; data: Uint8Array } | null {
  if (src.length < 8) return null;
  const n = Number(new DataView(src.buffer, src.byteOffset, 8).getBigUint64(0, true));
  if (n > src.length - 8) return null;
  return { text: new TextDecoder().decode(src.subarray(8, 8 + n)), data: src.subarray(8 + n) };
}

function joinHeader(text: string, data: Uint8Array, lengthDelta = 0): Uint8Array {
  const h = new TextEncoder().encode(text);
  const b = new Uint8Array(8 + h.length + data.length);
  new DataView(b.buffer).setBigUint64(0, BigInt(h.length + lengthDelta), true);
  b.set(h, 8);
  b.set(data, 8 + h.length);
  return b;
}

/** Replace one number in the header with a huge / negative / fractional one. */
export function safetensorsHugeNumber(r: Rand, src: Uint8Array): Mutated | null {
  const s = splitHeader(src);
  if (!s) return null;
  const nums = [...s.text.matchAll(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi)];
  if (nums.length === 0) return null;
  const m = pick(r, nums);
  const v = pick(r, HUGE_NUMBERS);
  const text = s.text.slice(0, m.index) + v + s.text.slice(m.index! + m[0].length);
  return { bytes: joinHeader(text, s.data), what: `json number@${m.index} ${m[0]}->${v}` };
}

/** Duplicate a top-level key (the same name twice, the second maybe with other offsets). */
export function safetensorsDuplicateKey(r: Rand, src: Uint8Array): Mutated | null {
  const s = splitHeader(src);
  if (!s) return null;
  const entries = [...s.text.matchAll(/"([^"]+)":(\{[^{}]*\})/g)];
  if (entries.length === 0) return null;
  const e = pick(r, entries);
  const other = pick(r, entries);
  const dup = `"${e[1]}":${other[2]}`;
  const text = `${s.text.slice(0, -1)},${dup}}`;
  return { bytes: joinHeader(text, s.data), what: `duplicate key "${e[1]}" (value of "${other[1]}")` };
}

/** Swap a dtype name, or make the header length disagree with the JSON. */
export function safetensorsHeaderText(r: Rand, src: Uint8Array): Mutated | null {
  const s = splitHeader(src);
  if (!s) return null;
  if (r() < 0.5) {
    const dtypes = [...s.text.matchAll(/"dtype":"([A-Z0-9_]+)"/g)];
    if (dtypes.length === 0) return null;
    const m = pick(r, dtypes);
    const to = pick(r, ['F32', 'F16', 'BF16', 'F64', 'I64', 'U8', 'BOOL', 'F8_E4M3', 'Q4', '']);
    const at = m.index! + m[0].length - m[1]!.length - 1;
    return { bytes: joinHeader(s.text.slice(0, at) + to + s.text.slice(at + m[1]!.length), s.data), what: `dtype ${m[1]}->${to}` };
  }
  const d = pick(r, [-2, -1, 1, 7, 1 << 20]);
  return { bytes: joinHeader(s.text, s.data, d), what: `header length ${d > 0 ? '+' : ''}${d}` };
}

// ---------------------------------------------------------------------------------------------
// Pickles: splice a huge integer in place of a small one (tensor sizes, strides, offsets, numels).

const HUGE_INTS = [1 << 16, 1 << 20, 1 << 24, 1 << 26, 1 << 28, 0x7fffffff, -1];
const HUGE_LONGS = [1n << 32n, 1n << 40n, (1n << 53n) + 1n, (1n << 63n) - 1n, -(1n << 62n)];

export function pickleHugeInt(r: Rand, src: Uint8Array): Mutated | null {
  const at: number[] = [];
  for (let p = 0; p < src.length; p++) if ((src[p] === 0x4b && p + 2 <= src.length) || (src[p] === 0x4d && p + 3 <= src.length)) at.push(p);
  if (at.length === 0) return null;
  const p = pick(r, at);
  const oldLen = src[p] === 0x4b ? 2 : 3;
  let rep: Uint8Array;
  let v: string;
  if (r() < 0.7) {
    const x = pick(r, HUGE_INTS);
    rep = new Uint8Array(5);
    rep[0] = 0x4a; // BININT
    new DataView(rep.buffer).setInt32(1, x, true);
    v = String(x);
  } else {
    const x = pick(r, HUGE_LONGS);
    rep = new Uint8Array(10);
    rep[0] = 0x8a; // LONG1, 8 bytes
    rep[1] = 8;
    new DataView(rep.buffer).setBigInt64(2, x, true);
    v = String(x);
  }
  const b = new Uint8Array(src.length - oldLen + rep.length);
  b.set(src.subarray(0, p));
  b.set(rep, p);
  b.set(src.subarray(p + oldLen), p + rep.length);
  return { bytes: b, what: `int@${p} -> ${v}` };
}
