// safetensors I/O, browser-safe (no Node imports here; see safetensors-node.ts for files on disk).
// Format: u64 LE header length N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets: [b, e]},
// "__metadata__": {str: str}}, then the raw little-endian data section; offsets are relative to it.
// Parsing validates everything up front so a bad file fails once, naming the file and the tensor.

import type { Engine } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import { bf16BitsToF32, f16BitsToF32, f32ArrayToF16, f32ToBf16Bits, shapeSize, shapeString, type DType } from '../engine/dtype.js';
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
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** The top-level keys of a JSON object text, in order, duplicates kept (JSON.parse drops them). */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const start = i;
      for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++;
      if (depth === 1) {
        let j = i + 1;
        while (/\s/.test(text[j] ?? '')) j++;
        if (text[j] === ':') keys.push(JSON.parse(text.slice(start, i + 1)) as string);
      }
    } else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
  }
  return keys;
}

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

export class SafetensorsFile implements TensorSource {
  private constructor(
    readonly source: string,
    readonly bytes: Uint8Array,
    readonly metadata: Record<string, string>,
    private entries: Map<string, TensorInfo>,
  ) {}

  /** Parses and validates; throws SafetensorsError naming `source` (and the tensor) on any problem. */
  static parse(input: ArrayBuffer | Uint8Array, source: string): SafetensorsFile {
    // A plain view (never a Node Buffer, whose slice() does not copy).
    const bytes = input instanceof Uint8Array ? new Uint8Array(input.buffer, input.byteOffset, input.byteLength) : new Uint8Array(input);
    const fail = (detail: string, tensor: string | null = null) => new SafetensorsError(source, tensor, detail);
    if (bytes.byteLength < 8) throw fail(`file is ${bytes.byteLength} bytes, shorter than the 8-byte header length`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const headerLen = view.getBigUint64(0, true);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) throw fail(`header length ${headerLen} is absurd (limit ${MAX_HEADER_BYTES} bytes)`);
    const n = Number(headerLen);
    if (8 + n > bytes.byteLength) throw fail(`header length ${n} runs past the end of the ${bytes.byteLength}-byte file (truncated?)`);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
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
    const keys = topLevelKeys(text);
    const dup = keys.find((k, i) => keys.indexOf(k) !== i);
    if (dup !== undefined) throw fail(`header lists "${dup}" twice`);

    const dataStart = 8 + n;
    const dataLen = bytes.byteLength - dataStart;
    const metadata: Record<string, string> = {};
    const entries = new Map<string, TensorInfo>();
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw fail('__metadata__ is not an object');
        for (const [k, v] of Object.entries(raw)) {
          if (typeof v !== 'string') throw fail(`__metadata__ value for "${k}" is ${JSON.stringify(v)}, not a string`);
          metadata[k] = v;
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
      if (typeof dtype !== 'string' || !(dtype in SAFETENSORS_DTYPES)) {
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
    return new SafetensorsFile(source, bytes, metadata, entries);
  }

  /** Tensor names, sorted. */
  names(): string[] {
    return [...this.entries.keys()].sort();
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

  /** The tensor's bytes (a view into the file, no copy). */
  getBytes(name: string): Uint8Array {
    const i = this.info(name);
    return this.bytes.subarray(i.byteOffset, i.byteOffset + i.byteLength);
  }

  /**
   * The tensor as a typed array of its own dtype. A view into the file when aligned (do not mutate),
   * an aligned copy otherwise. F16/BF16 come as Uint16Array bits, BOOL and F8 as Uint8Array.
   */
  getRaw(name: string): RawArray {
    const { dtype, byteOffset, byteLength } = this.info(name);
    if (!LITTLE_ENDIAN) throw new SafetensorsError(this.source, name, 'big-endian hosts are not supported');
    const size = SAFETENSORS_DTYPES[dtype];
    const abs = this.bytes.byteOffset + byteOffset;
    const aligned = abs % size === 0;
    const buf = aligned ? this.bytes.buffer : new Uint8Array(this.getBytes(name)).buffer;
    const off = aligned ? abs : 0;
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
  toTensor(engine: Engine, name: string, dtype: DType = 'f32'): Tensor {
    const i = this.info(name);
    if (i.dtype === (dtype === 'f32' ? 'F32' : 'F16')) {
      // Stored exactly as the GPU wants it: upload the file bytes without conversion.
      const t = engine.empty(i.shape, dtype, name);
      engine.writeBytes(t.buffer, this.getBytes(name));
      return t;
    }
    const f = this.getF32(name);
    if (dtype === 'f32') return engine.tensor(f, i.shape, 'f32', name);
    const t = engine.empty(i.shape, 'f16', name);
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
 * The canonical layout: compact JSON header with __metadata__ first and tensors in sorted name
 * order, padded with spaces to 8 bytes; tensor data contiguous in the same order.
 */
export function serializeSafetensors(tensors: Record<string, SafetensorsEntry>, metadata?: Record<string, string>): Uint8Array<ArrayBuffer> {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SiloError(`serializeSafetensors: metadata "${k}" must be a string`);
    }
    header['__metadata__'] = metadata;
  }
  let off = 0;
  for (const name of names) {
    if (name === '__metadata__') throw new SiloError('serializeSafetensors: "__metadata__" is not a valid tensor name');
    const t = tensors[name]!;
    const size = SAFETENSORS_DTYPES[t.dtype];
    if (size === undefined) throw new SiloError(`serializeSafetensors: tensor "${name}" has unknown dtype ${t.dtype}`);
    if (!t.shape.every(isInt)) throw new SiloError(`serializeSafetensors: tensor "${name}" has invalid shape ${shapeString(t.shape)}`);
    const bytes = shapeSize(t.shape) * size;
    if (t.data.byteLength !== bytes) {
      throw new SiloError(`serializeSafetensors: tensor "${name}" ${t.dtype} ${shapeString(t.shape)} needs ${bytes} bytes, data has ${t.data.byteLength}`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape.slice(), data_offsets: [off, off + bytes] };
    off += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + padded);
  let pos = 8 + padded;
  for (const name of names) {
    const d = tensors[name]!.data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), pos);
    pos += d.byteLength;
  }
  return out;
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
