// Hand-built zip archives and pickles for the checkpoint-reader tests, written independently of the
// code under test (CRC from node:zlib, deflate from node:zlib, opcodes spelled out byte by byte).
import { crc32 as zlibCrc32, deflateRawSync } from 'node:zlib';

// ---------------------------------------------------------------------------------------------
// Zip

export interface ZipInput {
  name: string;
  data: Uint8Array;
  /** 0 stored (default), 8 deflate. */
  method?: 0 | 8;
  /** A CRC to write instead of the true one. */
  crc?: number;
}

export interface ZipOutput {
  bytes: Uint8Array;
  /** Offset of the central directory and of each entry's data. */
  cdOffset: number;
  dataOffsets: number[];
}

/** A zip archive (data descriptors off); `zip64` writes zip64 extra fields and end records for everything. */
export function buildZip(entries: ZipInput[], opts: { zip64?: boolean; align?: number } = {}): ZipOutput {
  const parts: Uint8Array[] = [];
  let pos = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    pos += b.length;
  };
  const central: Uint8Array[] = [];
  const dataOffsets: number[] = [];
  const enc = new TextEncoder();
  for (const e of entries) {
    const method = e.method ?? 0;
    const payload = method === 8 ? new Uint8Array(deflateRawSync(e.data)) : e.data;
    const crc = e.crc ?? zlibCrc32(e.data);
    const name = enc.encode(e.name);
    const localOffset = pos;
    // Optional padding extra field (torch aligns storages to 64 bytes the same way).
    const z64 = opts.zip64 ? 20 : 0;
    let pad = 0;
    if (opts.align) {
      const base = localOffset + 30 + name.length + z64 + 4;
      pad = (opts.align - (base % opts.align)) % opts.align;
    }
    const localExtra = (opts.align ? 4 + pad : 0) + z64;
    const lh = new DataView(new ArrayBuffer(30));
    lh.setUint32(0, 0x04034b50, true);
    lh.setUint16(4, opts.zip64 ? 45 : 20, true);
    lh.setUint16(8, method, true);
    lh.setUint32(14, crc, true);
    lh.setUint32(18, opts.zip64 ? 0xffffffff : payload.length, true);
    lh.setUint32(22, opts.zip64 ? 0xffffffff : e.data.length, true);
    lh.setUint16(26, name.length, true);
    lh.setUint16(28, localExtra, true);
    push(new Uint8Array(lh.buffer));
    push(name);
    if (opts.zip64) {
      const x = new DataView(new ArrayBuffer(20));
      x.setUint16(0, 1, true);
      x.setUint16(2, 16, true);
      x.setBigUint64(4, BigInt(e.data.length), true);
      x.setBigUint64(12, BigInt(payload.length), true);
      push(new Uint8Array(x.buffer));
    }
    if (opts.align) {
      const x = new DataView(new ArrayBuffer(4 + pad));
      x.setUint16(0, 0x4246, true); // 'FB', as torch's writer
      x.setUint16(2, pad, true);
      push(new Uint8Array(x.buffer));
    }
    dataOffsets.push(pos);
    push(payload);
    const cExtra = opts.zip64 ? 28 : 0;
    const ch = new DataView(new ArrayBuffer(46 + name.length + cExtra));
    ch.setUint32(0, 0x02014b50, true);
    ch.setUint16(4, 45, true);
    ch.setUint16(6, opts.zip64 ? 45 : 20, true);
    ch.setUint16(10, method, true);
    ch.setUint32(16, crc, true);
    ch.setUint32(20, opts.zip64 ? 0xffffffff : payload.length, true);
    ch.setUint32(24, opts.zip64 ? 0xffffffff : e.data.length, true);
    ch.setUint16(28, name.length, true);
    ch.setUint16(30, cExtra, true);
    ch.setUint32(42, opts.zip64 ? 0xffffffff : localOffset, true);
    new Uint8Array(ch.buffer).set(name, 46);
    if (opts.zip64) {
      const o = 46 + name.length;
      ch.setUint16(o, 1, true);
      ch.setUint16(o + 2, 24, true);
      ch.setBigUint64(o + 4, BigInt(e.data.length), true);
      ch.setBigUint64(o + 12, BigInt(payload.length), true);
      ch.setBigUint64(o + 20, BigInt(localOffset), true);
    }
    central.push(new Uint8Array(ch.buffer));
  }
  const cdOffset = pos;
  for (const c of central) push(c);
  const cdSize = pos - cdOffset;
  if (opts.zip64) {
    const rec = pos;
    const r = new DataView(new ArrayBuffer(56));
    r.setUint32(0, 0x06064b50, true);
    r.setBigUint64(4, 44n, true);
    r.setUint16(12, 45, true);
    r.setUint16(14, 45, true);
    r.setBigUint64(24, BigInt(entries.length), true);
    r.setBigUint64(32, BigInt(entries.length), true);
    r.setBigUint64(40, BigInt(cdSize), true);
    r.setBigUint64(48, BigInt(cdOffset), true);
    push(new Uint8Array(r.buffer));
    const l = new DataView(new ArrayBuffer(20));
    l.setUint32(0, 0x07064b50, true);
    l.setBigUint64(8, BigInt(rec), true);
    l.setUint32(16, 1, true);
    push(new Uint8Array(l.buffer));
  }
  const eo = new DataView(new ArrayBuffer(22));
  eo.setUint32(0, 0x06054b50, true);
  eo.setUint16(8, opts.zip64 ? 0xffff : entries.length, true);
  eo.setUint16(10, opts.zip64 ? 0xffff : entries.length, true);
  eo.setUint32(12, opts.zip64 ? 0xffffffff : cdSize, true);
  eo.setUint32(16, opts.zip64 ? 0xffffffff : cdOffset, true);
  push(new Uint8Array(eo.buffer));
  const bytes = new Uint8Array(pos);
  let o = 0;
  for (const p of parts) {
    bytes.set(p, o);
    o += p.length;
  }
  return { bytes, cdOffset, dataOffsets };
}

// ---------------------------------------------------------------------------------------------
// Pickle opcodes, spelled out

const enc = new TextEncoder();
const u32le = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return [...b];
};

/** Byte-level pickle writer: each method appends one opcode (with its argument). */
export class PickleWriter {
  private b: number[] = [];
  raw(...bytes: (number | string)[]): this {
    for (const x of bytes) {
      if (typeof x === 'number') this.b.push(x);
      else this.b.push(...enc.encode(x));
    }
    return this;
  }
  proto(v: number) { return this.raw(0x80, v); }
  global(module: string, name: string) { return this.raw('c', `${module}\n${name}\n`); }
  stackGlobal(module: string, name: string) { return this.str(module).str(name).raw(0x93); }
  str(s: string) {
    const u = enc.encode(s);
    return this.raw(0x58, ...u32le(u.length), ...u);
  }
  int(n: number) {
    if (n >= 0 && n < 256) return this.raw(0x4b, n);
    if (n >= 0 && n < 65536) return this.raw(0x4d, n & 0xff, n >> 8);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setInt32(0, n, true);
    return this.raw(0x4a, ...b);
  }
  float(x: number) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, x, false);
    return this.raw(0x47, ...b);
  }
  none() { return this.raw(0x4e); }
  bool(v: boolean) { return this.raw(v ? 0x88 : 0x89); }
  mark() { return this.raw(0x28); }
  tuple() { return this.raw(0x74); }
  emptyTuple() { return this.raw(0x29); }
  emptyDict() { return this.raw(0x7d); }
  emptyList() { return this.raw(0x5d); }
  setitems() { return this.raw(0x75); }
  appends() { return this.raw(0x65); }
  reduce() { return this.raw(0x52); }
  build() { return this.raw(0x62); }
  binpersid() { return this.raw(0x51); }
  binput(i: number) { return this.raw(0x71, i); }
  binget(i: number) { return this.raw(0x68, i); }
  stop() { return this.raw(0x2e); }
  intTuple(v: readonly number[]) {
    this.mark();
    for (const x of v) this.int(x);
    return this.tuple();
  }
  bytes(): Uint8Array {
    return new Uint8Array(this.b);
  }
}

/** A tensor in a hand-built checkpoint: a view of storage `key`. */
export interface TensorSpec {
  tensor: true;
  storageType: string;
  key: string;
  numel: number;
  offset: number;
  size: number[];
  stride: number[];
  location?: string;
}
/**
 * A pickled value: numbers are ints when integral (use { float } for a float such as 1.0); a dict is an
 * OrderedDict unless `ordered: false`; `attributes` is the instance state torch's OrderedDict state dicts
 * carry (`_metadata`), written with BUILD after the items as pickle's save_reduce does.
 */
export type Spec =
  | null
  | boolean
  | number
  | string
  | TensorSpec
  | Spec[]
  | { float: number }
  | { tuple: Spec[] }
  | { dict: [string | number, Spec][]; ordered?: boolean; attributes?: [string, Spec][] };

export function tensorSpec(storageType: string, key: string, numel: number, size: number[], stride?: number[], offset = 0): TensorSpec {
  const s = stride ?? size.map((_, i) => size.slice(i + 1).reduce((a, b) => a * b, 1));
  return { tensor: true, storageType, key, numel, offset, size, stride: s };
}

/** Emits `spec` as torch.save would (protocol 2, _rebuild_tensor_v2 with persistent storages). */
export function writeSpec(w: PickleWriter, spec: Spec): PickleWriter {
  if (spec === null) return w.none();
  if (typeof spec === 'boolean') return w.bool(spec);
  if (typeof spec === 'number') return Number.isInteger(spec) ? w.int(spec) : w.float(spec);
  if (typeof spec === 'string') return w.str(spec);
  if (Array.isArray(spec)) {
    w.emptyList().mark();
    for (const s of spec) writeSpec(w, s);
    return w.appends();
  }
  if ('float' in spec) return w.float(spec.float);
  if ('tuple' in spec) {
    w.mark();
    for (const s of spec.tuple) writeSpec(w, s);
    return w.tuple();
  }
  if ('dict' in spec) {
    if (spec.ordered ?? true) w.global('collections', 'OrderedDict').emptyTuple().reduce();
    else w.emptyDict();
    w.mark();
    for (const [k, v] of spec.dict) {
      if (typeof k === 'number') w.int(k);
      else w.str(k);
      writeSpec(w, v);
    }
    w.setitems();
    if (spec.attributes) writeSpec(w, { dict: spec.attributes, ordered: false }).build();
    return w;
  }
  w.global('torch._utils', '_rebuild_tensor_v2').mark();
  w.mark().str('storage').global('torch', spec.storageType).str(spec.key).str(spec.location ?? 'cpu').int(spec.numel).tuple().binpersid();
  w.int(spec.offset).intTuple(spec.size).intTuple(spec.stride).bool(false);
  w.global('collections', 'OrderedDict').emptyTuple().reduce();
  return w.tuple().reduce();
}

export function specPickle(spec: Spec): Uint8Array {
  return writeSpec(new PickleWriter().proto(2), spec).stop().bytes();
}

/** A torch.save-style zip: <root>/data.pkl, <root>/data/<key> for each storage, byteorder, version. */
export function buildCheckpoint(
  pickle: Uint8Array,
  storages: Record<string, Uint8Array>,
  opts: { root?: string; byteorder?: string | null; method?: 0 | 8; zip64?: boolean; extra?: ZipInput[] } = {},
): ZipOutput {
  const root = opts.root ?? 'archive';
  const entries: ZipInput[] = [{ name: `${root}/data.pkl`, data: pickle, method: opts.method }];
  if (opts.byteorder !== null) entries.push({ name: `${root}/byteorder`, data: enc.encode(opts.byteorder ?? 'little') });
  for (const [k, v] of Object.entries(storages)) entries.push({ name: `${root}/data/${k}`, data: v, method: opts.method });
  entries.push({ name: `${root}/version`, data: enc.encode('3\n') });
  entries.push(...(opts.extra ?? []));
  return buildZip(entries, { zip64: opts.zip64, align: 64 });
}

export const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Float32 tensors for a hand-built checkpoint: each gets a storage of its own, keyed '0', '1', ... as torch.save numbers them. */
export class TensorStore {
  readonly storages: Record<string, Uint8Array> = {};
  private next = 0;
  f32(values: Float32Array, shape: number[]): TensorSpec {
    const key = String(this.next++);
    this.storages[key] = bytesOf(values).slice();
    return tensorSpec('FloatStorage', key, values.length, shape);
  }
}

/** torch.save(obj) bytes for `spec` whose tensors came from `store`. */
export function torchSave(spec: Spec, store: TensorStore): Uint8Array {
  return buildCheckpoint(specPickle(spec), store.storages).bytes;
}
