// safetensors I/O, browser-safe (no Node imports here; see safetensors-node.ts for files on disk).
// Format: u64 LE header length N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets: [b, e]},
// "__metadata__": {str: str}}, then the raw little-endian data section; offsets are relative to it.
// Parsing validates everything up front so a bad file fails once, naming the file and the tensor.

import type { Engine } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import { f16BitsToF32, f32ArrayToF16, f32ToBf16Bits, shapeSize, shapeString, type DType } from '../engine/dtype.js';
import { SiloError } from '../engine/errors.js';

export const SAFETENSORS_DTYPES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
} as const;
export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPES;

/** Typed array for each dtype (F16/BF16 as raw bits, BOOL/F8 as bytes). */
export type RawArray =
  | Float64Array
  | Float32Array
  | Uint16Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Int8Array
  | Uint8Array;

export interface TensorInfo {
  dtype: SafetensorsDType;
  shape: number[];
  /** Offset of the tensor's first byte from the start of the file. */
  byteOffset: number;
  byteLength: number;
}

/** Rejections of malformed files and bad look-ups; `file` and `tensor` say where. */
/** Largest finite f16 (values up to half an ulp above it round to it, not to Inf; refusing above it is simpler). */
const F16_MAX = 65504;

export class SafetensorsError extends SiloError {
  constructor(
    readonly file: string,
    readonly tensor: string | null,
    detail: string,
  ) {
    super(`safetensors ${file}${tensor === null ? '' : `, tensor "${tensor}"`}: ${detail}`);
  }
}

/** Largest header accepted; real headers are a few hundred KB even for SDXL. */
export const MAX_HEADER_BYTES = 100_000_000;
/** Piece size for uploading tensors read from disk (a multiple of 4, as writeBuffer needs). */
const UPLOAD_CHUNK = 64 << 20;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Read access shared by single files and sharded indexes, so model loaders take either. */
export interface TensorSource {
  readonly source: string;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  getRaw(name: string): RawArray;
  getF32(name: string): Float32Array;
  getIntegers(name: string): number[];
  toTensor(engine: Engine, name: string, dtype?: DType): Tensor;
  /**
   * Uploads rank-2 tensor `name` [rows, cols] as [cols, rows] (nn.Linear weights on adapters whose
   * matmul would otherwise transpose them on every use). Optional: WeightLoader transposes getF32's
   * values itself for a source without it.
   */
  toTensorTransposed?(engine: Engine, name: string, dtype?: DType): Tensor;
}

/** [rows, cols] row-major values as [cols, rows]. */
/**
 * The shape a matrix takes held transposed: [rows, cols] -> [cols, rows], and a 1x1 convolution's weight
 * [rows, cols, 1, 1] -> [cols, rows, 1, 1]; null for anything else.
 */
export function transposedShape(shape: readonly number[]): number[] | null {
  if (shape.length < 2 || shape.slice(2).some((d) => d !== 1)) return null;
  return [shape[1]!, shape[0]!, ...shape.slice(2)];
}

/** What a refused transposed upload says. */
export const TRANSPOSE_ONLY_MATRICES = 'only a matrix ([rows, cols], or a 1x1 convolution weight [rows, cols, 1, 1]) can be held transposed';

export function transpose2d(f: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(f.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = f[r * cols + c]!;
  return out;
}

/**
 * Synchronous random access to a file too large to hold (Node: positional reads on the file, see
 * safetensors-node.ts). read() returns exactly `length` bytes at `offset` in a fresh array, or throws
 * an Error saying what went wrong (the caller names the file and the tensor).
 */
export interface SyncByteReader {
  readonly size: number;
  read(offset: number, length: number): Uint8Array;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * The top-level keys of a JSON object text, in order, duplicates kept (JSON.parse drops them). One
 * pass over text that JSON.parse has already accepted; only keys with escapes are decoded.
 */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i;
      let escaped = false;
      for (i++; text.charCodeAt(i) !== 0x22; i++) {
        if (text.charCodeAt(i) === 0x5c /* \ */) {
          escaped = true;
          i++;
        }
      }
      if (depth === 1) {
        let j = i + 1;
        while (j < text.length && isJsonSpace(text.charCodeAt(j))) j++;
        if (text.charCodeAt(j) === 0x3a /* : */) keys.push(escaped ? (JSON.parse(text.slice(start, i + 1)) as string) : text.slice(start + 1, i));
      }
    } else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return keys;
}

const isJsonSpace = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

let f16Table: Float32Array | null = null;
/** f16 bits -> f32 through a 256 KB table: weight files hold hundreds of millions of values. */
export function f16BitsArrayToF32(bits: Uint16Array): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32(h);
  }
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = f16Table[bits[i]!]!;
  return out;
}

/** bf16 bits -> f32: the bits are the upper half of the f32. */
export function bf16BitsArrayToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i]! << 16;
  return out;
}

/** The u64 header length, checked against the cap and the file size before anything is allocated. */
function checkHeaderLength(first8: Uint8Array, fileSize: number, source: string): number {
  const fail = (detail: string) => new SafetensorsError(source, null, detail);
  if (fileSize < 8 || first8.byteLength < 8) throw fail(`file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const headerLen = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) throw fail(`header length ${headerLen} is absurd (limit ${MAX_HEADER_BYTES} bytes)`);
  const n = Number(headerLen);
  if (8 + n > fileSize) throw fail(`header length ${n} runs past the end of the ${fileSize}-byte file (truncated?)`);
  return n;
}

/** Validates the JSON header of a `fileSize`-byte file; linear in the header size. */
function parseHeader(headerBytes: Uint8Array, fileSize: number, source: string): { metadata: Record<string, string>; entries: Map<string, TensorInfo> } {
  const fail = (detail: string, tensor: string | null = null) => new SafetensorsError(source, tensor, detail);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw fail('header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw fail('header JSON is not an object');
  // A Set, not indexOf: headers can list a million names and this must stay linear.
  const seen = new Set<string>();
  for (const k of topLevelKeys(text)) {
    if (seen.has(k)) throw fail(`header lists "${k}" twice`);
    seen.add(k);
  }

  const dataStart = 8 + headerBytes.byteLength;
  const dataLen = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const entries = new Map<string, TensorInfo>();
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw fail('__metadata__ is not an object');
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== 'string') throw fail(`__metadata__ value for "${k}" is ${JSON.stringify(v)}, not a string`);
        Object.defineProperty(metadata, k, { value: v, enumerable: true, writable: true, configurable: true }); // "__proto__" too
      }
      continue;
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw fail('entry is not an object', name);
    const e = raw as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets') throw fail(`unknown field "${k}"`, name);
    }
    const { dtype, shape, data_offsets: offs } = e;
    if (dtype === undefined) throw fail('dtype is missing', name);
    if (typeof dtype !== 'string' || !Object.hasOwn(SAFETENSORS_DTYPES, dtype)) { // not `in`: "toString" is no dtype
      throw fail(`unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(SAFETENSORS_DTYPES).join(', ')})`, name);
    }
    if (!Array.isArray(shape) || !shape.every(isInt)) {
      throw fail(`shape ${JSON.stringify(shape)} is not an array of non-negative integers`, name);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isInt)) {
      throw fail(`data_offsets ${JSON.stringify(offs)} is not two non-negative integers`, name);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end) throw fail(`data_offsets [${begin}, ${end}] begin after end`, name);
    const itemsize = SAFETENSORS_DTYPES[dtype as SafetensorsDType];
    const expected = shapeSize(shape) * itemsize;
    if (!Number.isSafeInteger(expected)) throw fail(`${dtype} ${shapeString(shape)} would need ${expected} bytes, beyond 2^53`, name);
    if (end - begin !== expected) {
      throw fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${dtype} ${shapeString(shape)} needs ${expected}`, name);
    }
    if (end > dataLen) {
      throw fail(`data_offsets [${begin}, ${end}] reach past the ${dataLen}-byte data section (truncated file?)`, name);
    }
    entries.set(name, { dtype: dtype as SafetensorsDType, shape: shape.slice(), byteOffset: dataStart + begin, byteLength: expected });
  }
  // Overlap check on non-empty tensors sorted by start; holes between tensors are allowed.
  const spans = [...entries].filter(([, i]) => i.byteLength > 0).sort((a, b) => a[1].byteOffset - b[1].byteOffset);
  for (let i = 1; i < spans.length; i++) {
    const [prevName, prev] = spans[i - 1]!;
    const [name, cur] = spans[i]!;
    if (cur.byteOffset < prev.byteOffset + prev.byteLength) {
      throw fail(`data overlaps tensor "${prevName}" (bytes ${cur.byteOffset - dataStart}.. vs ..${prev.byteOffset + prev.byteLength - dataStart})`, name);
    }
  }
  return { metadata, entries };
}

export class SafetensorsFile implements TensorSource {
  private sortedNames: string[] | null = null;

  private constructor(
    readonly source: string,
    readonly metadata: Record<string, string>,
    private entries: Map<string, TensorInfo>,
    /** The whole file in memory (parse), or null when tensors are read on demand through `reader` (open). */
    private memory: Uint8Array | null,
    private reader: SyncByteReader | null,
  ) {}

  /** Parses and validates bytes in memory; throws SafetensorsError naming `source` (and the tensor) on any problem. */
  static parse(input: ArrayBuffer | Uint8Array, source: string): SafetensorsFile {
    // A plain view (never a Node Buffer, whose slice() does not copy).
    const bytes = input instanceof Uint8Array ? new Uint8Array(input.buffer, input.byteOffset, input.byteLength) : new Uint8Array(input);
    const n = checkHeaderLength(bytes.subarray(0, 8), bytes.byteLength, source);
    const { metadata, entries } = parseHeader(bytes.subarray(8, 8 + n), bytes.byteLength, source);
    return new SafetensorsFile(source, metadata, entries, bytes, null);
  }

  /**
   * Reads and validates only the header through `reader`; each tensor's bytes are read when asked for,
   * so files of any size open in a few KB of memory. Every offset is checked against reader.size first.
   */
  static open(reader: SyncByteReader, source: string): SafetensorsFile {
    const size = reader.size;
    const read = (offset: number, length: number) => {
      try {
        return reader.read(offset, length);
      } catch (e) {
        throw new SafetensorsError(source, null, `cannot read the header: ${(e as Error).message}`);
      }
    };
    const n = checkHeaderLength(size < 8 ? new Uint8Array(0) : read(0, 8), size, source);
    const { metadata, entries } = parseHeader(read(8, n), size, source);
    return new SafetensorsFile(source, metadata, entries, null, reader);
  }

  /** Tensor names, sorted (sorted once: loaders ask for the list after every tensor). */
  names(): string[] {
    this.sortedNames ??= [...this.entries.keys()].sort();
    return this.sortedNames.slice();
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const i = this.entries.get(name);
    if (!i) {
      const stem = name.split('.').slice(0, -1).join('.');
      const near = stem ? this.names().filter((k) => k.startsWith(stem)).slice(0, 5) : [];
      throw new SafetensorsError(this.source, name, `no such tensor (${this.entries.size} tensors${near.length ? `; similar: ${near.join(', ')}` : ''})`);
    }
    return { ...i, shape: i.shape.slice() };
  }

  /** The tensor's bytes: a view into the file when it is in memory (no copy), else a fresh read. */
  getBytes(name: string): Uint8Array {
    const i = this.info(name);
    if (this.memory) return this.memory.subarray(i.byteOffset, i.byteOffset + i.byteLength);
    return this.readFresh(name, i);
  }

  /** Reads a tensor through the reader into its own (so aligned) buffer; every failure names the file and tensor. */
  private readFresh(name: string, i: TensorInfo): Uint8Array {
    try {
      return this.reader!.read(i.byteOffset, i.byteLength);
    } catch (e) {
      if (e instanceof RangeError) throw new SafetensorsError(this.source, name, `${i.byteLength} bytes do not fit in one array in this runtime`);
      throw new SafetensorsError(this.source, name, `cannot read its ${i.byteLength} bytes at offset ${i.byteOffset}: ${(e as Error).message}`);
    }
  }

  /**
   * The tensor as a typed array of its own dtype. In memory: a view into the file when aligned (do not
   * mutate), an aligned copy otherwise. F16/BF16 come as Uint16Array bits, BOOL and F8 as Uint8Array.
   */
  getRaw(name: string): RawArray {
    const info = this.info(name);
    const { dtype, byteOffset, byteLength } = info;
    if (!LITTLE_ENDIAN) throw new SafetensorsError(this.source, name, 'big-endian hosts are not supported');
    const size = SAFETENSORS_DTYPES[dtype];
    let buf: ArrayBufferLike;
    let off: number;
    if (this.memory) {
      const abs = this.memory.byteOffset + byteOffset;
      const aligned = abs % size === 0;
      buf = aligned ? this.memory.buffer : new Uint8Array(this.getBytes(name)).buffer;
      off = aligned ? abs : 0;
    } else {
      const read = this.readFresh(name, info);
      const b = read.byteOffset % size === 0 ? read : new Uint8Array(read);
      buf = b.buffer;
      off = b.byteOffset;
    }
    const n = byteLength / size;
    switch (dtype) {
      case 'F64': return new Float64Array(buf, off, n);
      case 'F32': return new Float32Array(buf, off, n);
      case 'F16': case 'BF16': case 'U16': return new Uint16Array(buf, off, n);
      case 'I64': return new BigInt64Array(buf, off, n);
      case 'U64': return new BigUint64Array(buf, off, n);
      case 'I32': return new Int32Array(buf, off, n);
      case 'U32': return new Uint32Array(buf, off, n);
      case 'I16': return new Int16Array(buf, off, n);
      case 'I8': return new Int8Array(buf, off, n);
      default: return new Uint8Array(buf, off, n);
    }
  }

  /**
   * The tensor as f32: F32 as stored (may be a view into the file; do not mutate), F16/BF16 widened
   * exactly, F64 rounded, integer/BOOL types converted (exact below 2^24). F8 is rejected.
   */
  getF32(name: string): Float32Array {
    const { dtype } = this.info(name);
    const raw = this.getRaw(name);
    if (dtype === 'F32') return raw as Float32Array;
    if (dtype === 'F16') return f16BitsArrayToF32(raw as Uint16Array);
    if (dtype === 'BF16') return bf16BitsArrayToF32(raw as Uint16Array);
    if (dtype.startsWith('F8')) throw new SafetensorsError(this.source, name, `dtype ${dtype} cannot be read as f32`);
    const out = new Float32Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = Number(raw[i]!);
    return out;
  }

  /** An integer tensor (I64, U64, I32, ..., U8, BOOL) as numbers; throws if a value is not a safe integer. */
  getIntegers(name: string): number[] {
    const { dtype } = this.info(name);
    if (dtype.startsWith('F') || dtype === 'BF16') {
      throw new SafetensorsError(this.source, name, `dtype ${dtype} is not an integer type`);
    }
    const raw = this.getRaw(name);
    const out = new Array<number>(raw.length);
    for (let i = 0; i < raw.length; i++) {
      const v = Number(raw[i]!);
      if (!Number.isSafeInteger(v)) {
        throw new SafetensorsError(this.source, name, `element ${i} = ${raw[i]} is outside the safe integer range of a JS number`);
      }
      out[i] = v;
    }
    return out;
  }

  /** Uploads the tensor as a GPU tensor of `dtype` (default f32), converting on the host. */
  toTensorTransposed(engine: Engine, name: string, dtype: DType = 'f32'): Tensor {
    const i = this.info(name);
    const shape = transposedShape(i.shape);
    if (!shape) throw new SafetensorsError(this.source, name, `${TRANSPOSE_ONLY_MATRICES}, this one is ${shapeString(i.shape)}`);
    return this.upload(engine, name, transpose2d(this.getF32(name), i.shape[0]!, i.shape[1]!), shape, dtype);
  }

  toTensor(engine: Engine, name: string, dtype: DType = 'f32'): Tensor {
    const i = this.info(name);
    if (i.dtype === (dtype === 'f32' ? 'F32' : 'F16')) {
      // Stored exactly as the GPU wants it: upload the file bytes without conversion, from disk in
      // bounded pieces so a large tensor never needs one large host array.
      const t = engine.empty(i.shape, dtype, name, { exact: true });
      if (this.memory) engine.writeBytes(t.buffer, this.getBytes(name));
      else {
        for (let done = 0; done < i.byteLength; done += UPLOAD_CHUNK) {
          const len = Math.min(UPLOAD_CHUNK, i.byteLength - done);
          engine.writeBytes(t.buffer, this.readFresh(name, { ...i, byteOffset: i.byteOffset + done, byteLength: len }), done);
        }
      }
      return t;
    }
    return this.upload(engine, name, this.getF32(name), i.shape, dtype);
  }

  /** Uploads f32 values of tensor `name` as `dtype` (f16: refused by name when a value is beyond its range). */
  private upload(engine: Engine, name: string, f: Float32Array, shape: readonly number[], dtype: DType): Tensor {
    if (dtype === 'f32') return engine.tensor(f, shape, 'f32', name);
    // A finite value beyond f16's range would become Inf on the GPU and be reported as a damaged
    // weight: say what happened instead.
    let big = 0;
    for (const v of f) if (Math.abs(v) > F16_MAX) big++;
    if (big) throw new SafetensorsError(this.source, name, `${big} value(s) beyond f16's range (±${F16_MAX}): load it in f32 (--dtype f32)`);
    const t = engine.empty(shape, 'f16', name, { exact: true });
    const h = f32ArrayToF16(f);
    engine.writeBytes(t.buffer, new Uint8Array(h.buffer));
    return t;
  }
}

export function parseSafetensors(bytes: ArrayBuffer | Uint8Array, source: string): SafetensorsFile {
  return SafetensorsFile.parse(bytes, source);
}

// ---------------------------------------------------------------------------------------------
// Writing

export interface SafetensorsEntry {
  dtype: SafetensorsDType;
  shape: readonly number[];
  /** Little-endian data of exactly prod(shape) * itemsize bytes (any typed array or byte view). */
  data: ArrayBufferView;
}

/** An entry from f32 values, stored as F32, F16 or BF16 (both rounded to nearest even). */
export function f32Entry(values: ArrayLike<number>, shape: readonly number[], dtype: 'F32' | 'F16' | 'BF16' = 'F32'): SafetensorsEntry {
  if (values.length !== shapeSize(shape)) {
    throw new SiloError(`f32Entry: ${values.length} values do not fill shape ${shapeString(shape)}`);
  }
  if (dtype === 'F32') return { dtype, shape, data: values instanceof Float32Array ? values : Float32Array.from(values) };
  if (dtype === 'F16') return { dtype, shape, data: f32ArrayToF16(values) };
  const bits = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) bits[i] = f32ToBf16Bits(values[i]!);
  return { dtype, shape, data: bits };
}

/**
 * A tensor whose bytes the streaming writer pulls piece by piece (e.g. converted or read from disk one
 * chunk at a time), so an output never has to exist in memory at once.
 */
export interface SafetensorsStreamEntry {
  dtype: SafetensorsDType;
  shape: readonly number[];
  /** The little-endian bytes in order, in pieces of any size; they must add up to prod(shape) * itemsize. */
  chunks(): Iterable<Uint8Array> | AsyncIterable<Uint8Array>;
}

export type WritableEntry = SafetensorsEntry | SafetensorsStreamEntry;

/** Where the streaming writer puts bytes, in order (a file, a counter in tests, a network stream). */
export interface ByteSink {
  write(bytes: Uint8Array): void | Promise<void>;
}

export interface SafetensorsLayout {
  /** The 8-byte length and the space-padded JSON header: everything before the data. */
  head: Uint8Array<ArrayBuffer>;
  /** Tensor names in file order (sorted) with their byte lengths. */
  names: string[];
  byteLengths: number[];
  /** Bytes of tensor data after the head. */
  dataBytes: number;
}

/**
 * The canonical layout: compact JSON header with __metadata__ first and tensors in sorted name
 * order, padded with spaces to 8 bytes; tensor data contiguous in the same order. Errors are
 * SafetensorsErrors naming `target` (the output) and the tensor; sizes beyond 2^53 bytes or a header
 * beyond MAX_HEADER_BYTES (which no reader would accept) are refused here, before any data moves.
 */
export function safetensorsLayout(
  tensors: Record<string, { dtype: SafetensorsDType; shape: readonly number[]; data?: ArrayBufferView }>,
  metadata: Record<string, string> | undefined,
  target: string,
): SafetensorsLayout {
  const fail = (detail: string, tensor: string | null = null) => new SafetensorsError(target, tensor, detail);
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw fail(`metadata "${k}" must be a string`);
    }
    header['__metadata__'] = metadata;
  }
  const byteLengths: number[] = [];
  let off = 0;
  for (const name of names) {
    if (name === '__metadata__') throw fail('"__metadata__" is not a valid tensor name');
    const t = tensors[name]!;
    const size = Object.hasOwn(SAFETENSORS_DTYPES, t.dtype) ? SAFETENSORS_DTYPES[t.dtype] : undefined;
    if (size === undefined) throw fail(`unknown dtype ${String(t.dtype)}`, name);
    if (!Array.isArray(t.shape) || !t.shape.every(isInt)) throw fail(`invalid shape ${JSON.stringify(t.shape)}`, name);
    const bytes = shapeSize(t.shape) * size;
    if (!Number.isSafeInteger(bytes) || !Number.isSafeInteger(off + bytes)) {
      throw fail(`${t.dtype} ${shapeString(t.shape)} would end at byte ${off + bytes} of the data, beyond the 2^53 bytes a file offset can name`, name);
    }
    if (t.data && t.data.byteLength !== bytes) throw fail(`${t.dtype} ${shapeString(t.shape)} needs ${bytes} bytes, data has ${t.data.byteLength}`, name);
    header[name] = { dtype: t.dtype, shape: t.shape.slice(), data_offsets: [off, off + bytes] };
    byteLengths.push(bytes);
    off += bytes;
  }
  let json: Uint8Array;
  try {
    json = new TextEncoder().encode(JSON.stringify(header));
  } catch (e) {
    if (e instanceof RangeError) throw fail(`the header of ${names.length} tensors is too large to build (${e.message})`);
    throw e;
  }
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded > MAX_HEADER_BYTES) throw fail(`the header would be ${padded} bytes, over the ${MAX_HEADER_BYTES}-byte limit readers accept`);
  const head = new Uint8Array(8 + padded);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  head.fill(0x20, 8 + json.length);
  return { head, names, byteLengths, dataBytes: off };
}

/** The whole file in one array (small files, the browser); see writeSafetensors for outputs of any size. */
export function serializeSafetensors(tensors: Record<string, SafetensorsEntry>, metadata?: Record<string, string>): Uint8Array<ArrayBuffer> {
  const layout = safetensorsLayout(tensors, metadata, 'serializeSafetensors');
  const total = layout.head.byteLength + layout.dataBytes;
  let out: Uint8Array<ArrayBuffer>;
  try {
    out = new Uint8Array(total);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw new SafetensorsError('serializeSafetensors', null, `${total} bytes do not fit in one array in this runtime; stream them with writeSafetensors (Node: writeSafetensorsFile)`);
  }
  out.set(layout.head, 0);
  let pos = layout.head.byteLength;
  for (const name of layout.names) {
    const d = tensors[name]!.data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), pos);
    pos += d.byteLength;
  }
  return out;
}

/**
 * Streams a safetensors file into `sink`: the header, then each tensor's bytes in file order, pulled
 * one piece at a time, so outputs of any size (beyond 4 GiB too) pass through bounded memory. The
 * bytes are identical to serializeSafetensors. A piece that overruns its tensor, a tensor that ends
 * short, or a producer that throws stops the stream with a SiloError naming `target` and the tensor.
 * Returns the number of bytes written.
 */
export async function writeSafetensors(sink: ByteSink, tensors: Record<string, WritableEntry>, metadata: Record<string, string> | undefined, target: string): Promise<number> {
  const layout = safetensorsLayout(
    Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape, data: 'data' in t ? t.data : undefined }])),
    metadata,
    target,
  );
  await sink.write(layout.head);
  let written = layout.head.byteLength;
  for (let k = 0; k < layout.names.length; k++) {
    const name = layout.names[k]!;
    const want = layout.byteLengths[k]!;
    const t = tensors[name]!;
    let got = 0;
    try {
      const pieces: Iterable<Uint8Array> | AsyncIterable<Uint8Array> =
        'data' in t ? [new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)] : t.chunks();
      for await (const piece of pieces) {
        if (got + piece.byteLength > want) throw new SafetensorsError(target, name, `the data runs past its ${want} bytes`);
        got += piece.byteLength;
        if (piece.byteLength) await sink.write(piece);
      }
    } catch (e) {
      if (e instanceof SiloError) throw e;
      throw new SafetensorsError(target, name, `${e instanceof Error ? e.message : String(e)}`);
    }
    if (got !== want) throw new SafetensorsError(target, name, `the data ended after ${got} of its ${want} bytes`);
    written += want;
  }
  return written;
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints: model.safetensors.index.json = {metadata, weight_map: {tensor: shard file}}

export class SafetensorsIndex implements TensorSource {
  private constructor(
    readonly source: string,
    /** The index's own metadata (diffusers puts e.g. total_size here: values need not be strings). */
    readonly metadata: Record<string, unknown>,
    readonly weightMap: Record<string, string>,
    readonly shards: Map<string, SafetensorsFile>,
  ) {}

  /**
   * Validates the index JSON (object or text), loads every shard it names with `loadShard`, and
   * checks that each listed tensor is in its shard and that no tensor is in two shards.
   */
  static async load(
    index: unknown,
    source: string,
    loadShard: (file: string) => Promise<SafetensorsFile> | SafetensorsFile,
  ): Promise<SafetensorsIndex> {
    const fail = (detail: string, tensor: string | null = null) => new SafetensorsError(source, tensor, detail);
    let obj = index;
    if (typeof index === 'string') {
      try {
        obj = JSON.parse(index);
      } catch (e) {
        throw fail(`index is not valid JSON (${(e as Error).message})`);
      }
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw fail('index JSON is not an object');
    const { metadata = {}, weight_map: map } = obj as { metadata?: unknown; weight_map?: unknown };
    if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) throw fail('index metadata is not an object');
    if (typeof map !== 'object' || map === null || Array.isArray(map)) throw fail('index has no weight_map object');
    const weightMap = map as Record<string, unknown>;
    for (const [name, file] of Object.entries(weightMap)) {
      if (typeof file !== 'string' || !file) throw fail(`weight_map entry is ${JSON.stringify(file)}, not a shard file name`, name);
      // Shards live beside the index: a name that climbs out of the folder is refused, not followed.
      if (file.startsWith('/') || /^[A-Za-z]:/.test(file) || file.split(/[\\/]/).includes('..')) {
        throw fail(`weight_map entry "${file}" points outside the index's folder`, name);
      }
    }
    const files = [...new Set(Object.values(weightMap) as string[])].sort();
    const shards = new Map<string, SafetensorsFile>();
    for (const file of files) {
      try {
        shards.set(file, await loadShard(file));
      } catch (e) {
        throw fail(`shard ${file} could not be loaded: ${(e as Error).message}`);
      }
    }
    const owner = new Map<string, string>();
    for (const [file, shard] of shards) {
      for (const name of shard.names()) {
        const prev = owner.get(name);
        if (prev !== undefined) throw fail(`tensor is in two shards, ${prev} and ${file}`, name);
        owner.set(name, file);
      }
    }
    for (const [name, file] of Object.entries(weightMap as Record<string, string>)) {
      if (!shards.get(file)!.has(name)) {
        const actual = owner.get(name);
        throw fail(`index maps it to shard ${file}, which does not hold it${actual ? ` (it is in ${actual})` : ''}`, name);
      }
    }
    return new SafetensorsIndex(source, metadata as Record<string, unknown>, weightMap as Record<string, string>, shards);
  }

  private shard(name: string): SafetensorsFile {
    if (!Object.hasOwn(this.weightMap, name)) {
      throw new SafetensorsError(this.source, name, `no such tensor in the index (${Object.keys(this.weightMap).length} tensors)`);
    }
    return this.shards.get(this.weightMap[name]!)!;
  }

  names(): string[] {
    return Object.keys(this.weightMap).sort();
  }
  has(name: string): boolean {
    return Object.hasOwn(this.weightMap, name);
  }
  /** Which shard file holds `name`. */
  shardOf(name: string): string {
    this.shard(name);
    return this.weightMap[name]!;
  }
  info(name: string): TensorInfo {
    return this.shard(name).info(name);
  }
  getRaw(name: string): RawArray {
    return this.shard(name).getRaw(name);
  }
  getF32(name: string): Float32Array {
    return this.shard(name).getF32(name);
  }
  getIntegers(name: string): number[] {
    return this.shard(name).getIntegers(name);
  }
  toTensor(engine: Engine, name: string, dtype?: DType): Tensor {
    return this.shard(name).toTensor(engine, name, dtype);
  }
  toTensorTransposed(engine: Engine, name: string, dtype?: DType): Tensor {
    return this.shard(name).toTensorTransposed(engine, name, dtype);
  }
}

/**
 * Serializes tensors into shards of at most `maxShardBytes` of data each (a tensor never splits), as
 * diffusers does; returns the shard files and the index JSON naming them `${stem}-0000i-of-0000n.safetensors`.
 */
export function shardSafetensors(
  tensors: Record<string, SafetensorsEntry>,
  maxShardBytes: number,
  stem = 'model',
): { index: { metadata: { total_size: number }; weight_map: Record<string, string> }; shards: Record<string, Uint8Array<ArrayBuffer>> } {
  const groups: string[][] = [[]];
  let used = 0;
  let total = 0;
  for (const name of Object.keys(tensors).sort()) {
    const bytes = tensors[name]!.data.byteLength;
    total += bytes;
    if (used > 0 && used + bytes > maxShardBytes) {
      groups.push([]);
      used = 0;
    }
    groups[groups.length - 1]!.push(name);
    used += bytes;
  }
  const pad = (i: number) => String(i).padStart(5, '0');
  const weight_map: Record<string, string> = {};
  const shards: Record<string, Uint8Array<ArrayBuffer>> = {};
  groups.forEach((names, i) => {
    const file = `${stem}-${pad(i + 1)}-of-${pad(groups.length)}.safetensors`;
    shards[file] = serializeSafetensors(Object.fromEntries(names.map((n) => [n, tensors[n]!])));
    for (const n of names) weight_map[n] = file;
  });
  return { index: { metadata: { total_size: total }, weight_map }, shards };
}

// ---------------------------------------------------------------------------------------------
// Browser (and any fetch-capable runtime) sources

async function responseBytes(res: Response, what: string): Promise<ArrayBuffer> {
  if (!res.ok) throw new SafetensorsError(what, null, `HTTP ${res.status} ${res.statusText}`.trim());
  return res.arrayBuffer();
}

/** Fetches and parses a .safetensors file; errors name the URL. */
export async function fetchSafetensors(urlOrResponse: string | Response, init?: RequestInit): Promise<SafetensorsFile> {
  let res: Response;
  const what = typeof urlOrResponse === 'string' ? urlOrResponse : urlOrResponse.url || 'response';
  if (typeof urlOrResponse === 'string') {
    try {
      res = await fetch(urlOrResponse, init);
    } catch (e) {
      throw new SafetensorsError(what, null, `fetch failed: ${(e as Error).message}`);
    }
  } else res = urlOrResponse;
  return parseSafetensors(await responseBytes(res, what), what);
}

/** Fetches a *.safetensors.index.json and its shards (resolved relative to the index URL). */
export async function fetchSafetensorsIndex(url: string, init?: RequestInit): Promise<SafetensorsIndex> {
  let res: Response;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new SafetensorsError(url, null, `fetch failed: ${(e as Error).message}`);
  }
  const text = new TextDecoder().decode(await responseBytes(res, url));
  const base = url.replace(/[^/]*([?#].*)?$/, '');
  return SafetensorsIndex.load(text, url, (file) => fetchSafetensors(base + file, init));
}
