// PyTorch checkpoints (torch.save since 1.6), read without Python and without running anything.
// The file is a zip archive with one root folder: <root>/data.pkl (the pickled object), <root>/data/<key>
// (one raw storage per key, in `byteorder`), <root>/byteorder, <root>/version. Tensors in data.pkl are
// torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) where storage is the persistent id
// ('storage', torch.<Type>Storage, key, location, numel). The unpickler allows only those globals plus
// OrderedDict; tensors come back as TorchTensor descriptors, checked against their storages at once,
// whose bytes are read (and non-contiguous views materialised) on demand.
//
// Bounds: a few hundred bytes of pickle can describe any amount of data (expanded stride-0 views, one
// tensor referenced a million times, a DAG of shared lists with 2^60 paths). stateDict() walks each
// container once, refuses expanded views unless allowed, and caps the bytes the named tensors declare
// (and open() the bytes the storages declare) relative to the file's size, before reading any data.

import { SiloError } from '../engine/errors.js';
import { shapeSize, shapeString } from '../engine/dtype.js';
import { SAFETENSORS_DTYPES, type SafetensorsDType } from './safetensors.js';
import { bytesSource, ZipArchive, type ByteSource } from './zip.js';
import { DATA_GLOBALS, describeValue, isTuple, PickleDict, PickleGlobal, unpickle, type AllowedGlobal, type PickleValue } from './pickle.js';

export class TorchCheckpointError extends SiloError {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`torch checkpoint ${file}: ${detail}`);
  }
}

/** torch's legacy storage classes (what the persistent ids name) and their safetensors dtypes. */
export const TORCH_STORAGE_DTYPES: Readonly<Record<string, SafetensorsDType>> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

/** One storage record, <root>/data/<key>, as a persistent id describes it. */
export class TorchStorage {
  constructor(
    readonly key: string,
    readonly dtype: SafetensorsDType,
    /** Elements (of dtype) in the storage. */
    readonly numel: number,
    readonly location: string,
    readonly entry: string,
  ) {}
}

/** A tensor as the checkpoint describes it: a strided view of a storage. */
export class TorchTensor {
  constructor(
    readonly storage: TorchStorage,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
    readonly requiresGrad: boolean,
  ) {}
  get dtype(): SafetensorsDType {
    return this.storage.dtype;
  }
  get numel(): number {
    return shapeSize(this.shape);
  }
  get byteLength(): number {
    return this.numel * SAFETENSORS_DTYPES[this.dtype];
  }
  /** Stride 0 along a dimension longer than 1 (torch's expand / broadcast views): the data repeats. */
  isExpanded(): boolean {
    return this.shape.some((n, d) => n > 1 && this.stride[d] === 0);
  }
  /** dtype, shape, stride and storage, for error messages. */
  describe(): string {
    return `${this.dtype} ${shapeString(this.shape)}, stride ${shapeString(this.stride)}, storage '${this.storage.key}'`;
  }
  /** Row-major contiguous (size-1 dimensions may carry any stride, as in torch). */
  isContiguous(): boolean {
    let expected = 1;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      if (this.shape[d] !== 1 && this.stride[d] !== expected) return false;
      expected *= this.shape[d]!;
    }
    return true;
  }
}

export interface TorchCheckpointOptions {
  /** Check each entry's CRC-32 when it is read. Default true. */
  verifyCrc?: boolean;
  /**
   * Most bytes the tensors of a state dict may declare in all (and, separately, its storages): views
   * and repeated references can make a small file describe any amount of data. Default
   * max(TENSOR_BYTES_PER_FILE_BYTE x the file's size, MIN_TENSOR_BYTES_CAP).
   */
  maxTensorBytes?: number;
  /** Materialise expanded (broadcast, stride-0) views instead of refusing them. Default false. */
  allowExpandedTensors?: boolean;
}

/** Default cap on the tensor bytes a checkpoint may declare, per byte of the file (tied weights count twice). */
export const TENSOR_BYTES_PER_FILE_BYTE = 4;
/** The default cap is never below this, so tiny (deflated) test files are not refused for being small. */
export const MIN_TENSOR_BYTES_CAP = 1 << 20;

/** The cap on declared tensor bytes for a file of `fileBytes`, as TorchCheckpoint.open applies it. */
export function defaultMaxTensorBytes(fileBytes: number): number {
  return Math.max(TENSOR_BYTES_PER_FILE_BYTE * fileBytes, MIN_TENSOR_BYTES_CAP);
}

export interface StateDict {
  /** Flattened names ('.'-joined through nested dicts and lists) in checkpoint order. */
  tensors: Map<string, TorchTensor>;
  /** Names of non-tensor leaves that were left out (ints, strings, None, ...). */
  skipped: string[];
  /** The key path that was followed from the top-level object. */
  keyPath: string[];
  /** Containers reached a second time (shared through the pickle memo), walked once: name -> first name. */
  shared: Map<string, string>;
}

/** Wrapper keys that training scripts put a state dict under, in the order they are tried. */
export const STATE_DICT_KEYS = ['state_dict', 'model_state_dict', 'model', 'module', 'net', 'params_ema', 'ema', 'params', 'weights'];

const MAX_NESTING = 64;

export class TorchCheckpoint {
  private storageCache = new Map<string, Promise<Uint8Array>>();

  private constructor(
    readonly archive: ZipArchive,
    /** The archive's root folder (e.g. 'archive' or the file's stem). */
    readonly root: string,
    readonly byteorder: 'little' | 'big',
    /** The format version record (null when absent). */
    readonly version: number | null,
    /** The unpickled top-level object (a PickleDict for state dicts). */
    readonly value: PickleValue,
    readonly storages: ReadonlyMap<string, TorchStorage>,
    private readonly options: Required<TorchCheckpointOptions>,
    /** The cap the caller gave (undefined: the default from the file size), for messages. */
    private readonly userCap: number | undefined,
  ) {}

  get source(): string {
    return this.archive.name;
  }

  /** Opens and unpickles a checkpoint; refuses anything that is not plain tensors and containers. */
  static async open(input: ByteSource | Uint8Array, name?: string, options: TorchCheckpointOptions = {}): Promise<TorchCheckpoint> {
    const source = input instanceof Uint8Array ? bytesSource(input, name ?? 'checkpoint') : input;
    const file = source.name;
    const opts: Required<TorchCheckpointOptions> = {
      verifyCrc: options.verifyCrc ?? true,
      maxTensorBytes: options.maxTensorBytes ?? defaultMaxTensorBytes(source.size),
      allowExpandedTensors: options.allowExpandedTensors ?? false,
    };
    const fail = (detail: string) => new TorchCheckpointError(file, detail);
    if (!(opts.maxTensorBytes >= 0)) throw fail(`maxTensorBytes ${opts.maxTensorBytes} is not a byte count`);

    const head = await source.read(0, Math.min(source.size, 16));
    if (head[0] !== 0x50 || head[1] !== 0x4b) throw fail(sniff(head));
    const archive = await ZipArchive.open(source);

    const pkls = archive.names().filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkls.length === 0) {
      throw fail(`no <root>/data.pkl entry: not a torch.save zip checkpoint (entries: ${archive.names().slice(0, 5).join(', ')}${archive.names().length > 5 ? ', ...' : ''})`);
    }
    if (pkls.length > 1) throw fail(`several data.pkl roots (${pkls.join(', ')}): ambiguous archive`);
    const root = pkls[0]!.slice(0, -'/data.pkl'.length);

    const text = async (entry: string) => (archive.has(entry) ? new TextDecoder().decode(await archive.read(entry, opts)).trim() : null);
    const order = await text(`${root}/byteorder`);
    if (order !== null && order !== 'little' && order !== 'big') throw fail(`byteorder record is ${JSON.stringify(order.slice(0, 20))}, not little or big`);
    const versionText = (await text(`${root}/.data/version`)) ?? (await text(`${root}/version`));
    if (versionText !== null && !/^\d{1,6}$/.test(versionText)) throw fail(`version record ${JSON.stringify(versionText.slice(0, 20))} is not a number`);

    const storages = new Map<string, TorchStorage>();
    let storageBytesTotal = 0;
    const persistentLoad = (pid: PickleValue): TorchStorage => {
      if (!isTuple(pid) || pid.length !== 5 || pid[0] !== 'storage') {
        throw new Error(`persistent id is a ${describeValue(pid)}, not ('storage', type, key, location, numel)`);
      }
      const [, type, key, location, numel] = pid;
      const dtype = type instanceof PickleGlobal ? (type.impl as StorageGlobal).storageDtype : undefined;
      if (!dtype) throw new Error(`storage type ${describeValue(type)} is not a supported torch storage class`);
      if (typeof key !== 'string' || !/^[A-Za-z0-9_.-]{1,200}$/.test(key) || key === '.' || key === '..') {
        throw new Error(`storage key ${JSON.stringify(key)} is not a plain record name`);
      }
      if (typeof location !== 'string') throw new Error(`storage location is a ${describeValue(location)}, not a string`);
      if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) throw new Error(`storage numel ${String(numel)} is not a non-negative integer`);
      const entry = `${root}/data/${key}`;
      const known = storages.get(key);
      if (known) {
        if (known.dtype !== dtype || known.numel !== numel) {
          throw new Error(`storage '${key}' is referenced as ${known.dtype} x ${known.numel} and as ${dtype} x ${numel}`);
        }
        return known;
      }
      if (!archive.has(entry)) throw new Error(`storage key '${key}' is missing from the archive (no entry ${entry})`);
      const bytes = numel * SAFETENSORS_DTYPES[dtype];
      const have = archive.entry(entry).uncompressedSize;
      if (have !== bytes) throw new Error(`storage '${key}' should hold ${numel} x ${dtype} = ${bytes} bytes but ${entry} has ${have}`);
      // Storages are read whole: a deflated one could declare ~1000x its compressed size.
      storageBytesTotal += bytes;
      if (storageBytesTotal > opts.maxTensorBytes) {
        throw new Error(`storage '${key}' brings the storages to ${storageBytesTotal} bytes, over the ${capText(opts.maxTensorBytes, options.maxTensorBytes, source.size)}`);
      }
      const s = new TorchStorage(key, dtype, numel, location, entry);
      storages.set(key, s);
      return s;
    };

    const globals = torchGlobals();
    const pkl = await archive.read(pkls[0]!, opts);
    const value = unpickle(pkl, { source: `${file}:${pkls[0]}`, globals, persistentLoad });
    return new TorchCheckpoint(archive, root, order === 'big' ? 'big' : 'little', versionText === null ? null : Number(versionText), value, storages, opts, options.maxTensorBytes);
  }

  /**
   * The tensors of the state dict at `keyPath` ('/'-separated or an array; e.g. 'state_dict' or
   * 'model/ema'), flattened. Without a key path: the top level if it holds tensors, else the first of
   * STATE_DICT_KEYS (or the only dict) that does.
   */
  stateDict(keyPath?: string | readonly string[]): StateDict {
    const fail = (detail: string) => new TorchCheckpointError(this.source, detail);
    const path = keyPath === undefined ? null : typeof keyPath === 'string' ? keyPath.split('/').filter((s) => s !== '') : [...keyPath];
    let node: PickleValue = this.value;
    let used: string[] = [];
    if (path) {
      for (const [i, k] of path.entries()) {
        const child = lookup(node, k);
        if (child === undefined) {
          throw fail(`key path ${path.slice(0, i + 1).join('/')} not found (available: ${keysOf(node).slice(0, 20).join(', ') || 'none'})`);
        }
        node = child;
      }
      used = path;
    } else if (!hasDirectTensor(node)) {
      const containsTensor = tensorFinder();
      const dicts = node instanceof PickleDict ? [...node].filter(([, v]) => v instanceof PickleDict && containsTensor(v)) : [];
      const pick = STATE_DICT_KEYS.map((k) => dicts.find(([dk]) => dk === k)).find((x) => x) ?? (dicts.length === 1 ? dicts[0] : undefined);
      if (!pick) {
        if (!containsTensor(node)) throw fail(`holds no tensors (top level: ${describeValue(node)})`);
        if (dicts.length > 1) throw fail(`several nested dicts hold tensors (${dicts.map(([k]) => String(k)).join(', ')}): choose one with a key path`);
      } else {
        node = pick[1];
        used = [String(pick[0])];
      }
    }
    const tensors = new Map<string, TorchTensor>();
    const skipped: string[] = [];
    const shared = new Map<string, string>();
    // The pickle memo makes the value a graph, not a tree: a list holding one memoised list twice, 60
    // levels deep, has 2^60 paths. Each container is walked once (later paths are recorded in `shared`);
    // one that holds itself is a cycle.
    const firstName = new Map<object, string>();
    const onPath = new Set<object>();
    const { maxTensorBytes, allowExpandedTensors } = this.options;
    let declared = 0;
    const walk = (v: PickleValue, name: string, depth: number) => {
      if (v instanceof TorchTensor) {
        if (name === '') throw fail('the selected object is a single tensor, not a state dict');
        if (name === '__metadata__') throw fail('a tensor named "__metadata__" cannot be stored in safetensors');
        if (tensors.has(name)) throw fail(`two tensors flatten to the same name "${name}"`);
        if (!allowExpandedTensors && v.isExpanded()) {
          throw fail(`tensor "${name}" (${v.describe()}) is an expanded view (stride 0 along a dimension longer than 1): materialising it would repeat its data; refused unless allowExpandedTensors is set (silo convert --allow-expanded)`);
        }
        declared += v.byteLength;
        if (declared > maxTensorBytes) {
          throw fail(`tensor "${name}" (${v.describe()}) brings the tensors to ${declared} bytes, over the ${capText(maxTensorBytes, this.userCap, this.archive.source.size)}`);
        }
        tensors.set(name, v);
        return;
      }
      const isContainer = v instanceof PickleDict || Array.isArray(v);
      if (!isContainer) {
        skipped.push(name);
        return;
      }
      if (onPath.has(v)) throw fail(`"${name}" refers back to a container that holds it (cyclic structure)`);
      const first = firstName.get(v);
      if (first !== undefined) {
        shared.set(name, first);
        return;
      }
      if (depth > MAX_NESTING) throw fail(`containers nested deeper than ${MAX_NESTING} levels at "${name}"`);
      firstName.set(v, name);
      onPath.add(v);
      const children = v instanceof PickleDict ? [...v] : (v as PickleValue[]).map((x, i) => [i, x] as const);
      for (const [k, child] of children) walk(child, name === '' ? String(k) : `${name}.${String(k)}`, depth + 1);
      onPath.delete(v);
    };
    walk(node, '', 0);
    if (tensors.size === 0) throw fail(`no tensors at key path ${used.join('/') || '(top level)'}`);
    return { tensors, skipped, keyPath: used, shared };
  }

  /** The storage's bytes in host (little-endian) order, read once and cached. */
  storageBytes(storage: TorchStorage): Promise<Uint8Array> {
    let p = this.storageCache.get(storage.key);
    if (!p) {
      p = this.archive.read(storage.entry, this.options).then((b) => (this.byteorder === 'big' ? swapBytes(b, SAFETENSORS_DTYPES[storage.dtype]) : b));
      this.storageCache.set(storage.key, p);
    }
    return p;
  }

  /** Forgets cached storages (after converting, say). */
  releaseStorages(): void {
    this.storageCache.clear();
  }

  /** Closes the underlying source (a file handle in Node); the checkpoint cannot read afterwards. */
  async close(): Promise<void> {
    this.storageCache.clear();
    await this.archive.source.close?.();
  }

  /** The tensor's elements, row-major contiguous, little-endian; a view of the storage when already contiguous. */
  async tensorBytes(t: TorchTensor): Promise<Uint8Array> {
    // stateDict() checks these with the tensor's name; repeated here for tensors taken from `value` directly.
    if (!this.options.allowExpandedTensors && t.isExpanded()) {
      throw new TorchCheckpointError(this.source, `tensor (${t.describe()}) is an expanded view (stride 0): refused unless allowExpandedTensors is set (silo convert --allow-expanded)`);
    }
    if (t.byteLength > this.options.maxTensorBytes) {
      throw new TorchCheckpointError(this.source, `tensor (${t.describe()}) needs ${t.byteLength} bytes, over the ${capText(this.options.maxTensorBytes, this.userCap, this.archive.source.size)}`);
    }
    const storage = await this.storageBytes(t.storage);
    const item = SAFETENSORS_DTYPES[t.dtype];
    if (t.isContiguous()) return storage.subarray(t.storageOffset * item, (t.storageOffset + t.numel) * item);
    return gatherStrided(storage, item, t.storageOffset, t.shape, t.stride);
  }
}

/** Copies a strided view into a new contiguous buffer (bounds were checked when the tensor was built). */
export function gatherStrided(src: Uint8Array, item: number, offset: number, shape: readonly number[], stride: readonly number[]): Uint8Array {
  const n = shapeSize(shape);
  const out = new Uint8Array(n * item);
  if (n === 0) return out;
  const rank = shape.length;
  const inner = shape[rank - 1]!;
  const innerStride = stride[rank - 1]!;
  const idx = new Array<number>(Math.max(rank - 1, 0)).fill(0);
  let dst = 0;
  let base = offset;
  for (let row = 0, rows = n / inner; row < rows; row++) {
    if (innerStride === 1) {
      out.set(src.subarray(base * item, (base + inner) * item), dst);
      dst += inner * item;
    } else {
      for (let i = 0; i < inner; i++) {
        const s = (base + i * innerStride) * item;
        for (let b = 0; b < item; b++) out[dst++] = src[s + b]!;
      }
    }
    // Advance the outer index like an odometer.
    for (let d = rank - 2; d >= 0; d--) {
      idx[d]!++;
      base += stride[d]!;
      if (idx[d]! < shape[d]!) break;
      base -= idx[d]! * stride[d]!;
      idx[d] = 0;
    }
  }
  return out;
}

function swapBytes(b: Uint8Array, item: number): Uint8Array {
  if (item === 1) return b;
  const out = new Uint8Array(b.byteLength);
  for (let i = 0; i < b.byteLength; i += item) for (let k = 0; k < item; k++) out[i + k] = b[i + item - 1 - k]!;
  return out;
}

interface StorageGlobal extends AllowedGlobal {
  storageDtype?: SafetensorsDType;
}

const isNonNegInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function intTuple(v: PickleValue, what: string): number[] {
  if (!isTuple(v) && !Array.isArray(v)) throw new Error(`${what} is a ${describeValue(v)}, not a tuple`);
  if (!v.every(isNonNegInt)) throw new Error(`${what} ${JSON.stringify(v.map(String))} is not a tuple of non-negative integers`);
  return v as number[];
}

/** Checks a strided view against its storage and makes the TorchTensor. */
function rebuildTensor(storage: PickleValue, offset: PickleValue, size: PickleValue, stride: PickleValue, requiresGrad: PickleValue): TorchTensor {
  if (!(storage instanceof TorchStorage)) throw new Error(`storage argument is a ${describeValue(storage)}, not a persistent storage`);
  if (!isNonNegInt(offset)) throw new Error(`storage offset ${String(offset)} is not a non-negative integer`);
  const shape = intTuple(size, 'size');
  const strides = intTuple(stride, 'stride');
  if (shape.length !== strides.length) throw new Error(`size ${shapeString(shape)} and stride ${shapeString(strides)} differ in rank`);
  if (shape.length > 64) throw new Error(`rank ${shape.length} is absurd`);
  const numel = shapeSize(shape);
  const bytes = numel * SAFETENSORS_DTYPES[storage.dtype];
  // The cap is applied per state dict, where tensors have names (stateDict); here only what no cap could allow.
  if (!Number.isSafeInteger(bytes)) throw new Error(`tensor ${storage.dtype} ${shapeString(shape)} of storage '${storage.key}' needs ${bytes} bytes, more than can be addressed`);
  if (offset > storage.numel) throw new Error(`storage offset ${offset} is past the end of storage '${storage.key}' (${storage.numel} elements)`);
  if (numel > 0) {
    let last = offset;
    for (let d = 0; d < shape.length; d++) last += (shape[d]! - 1) * strides[d]!;
    if (last >= storage.numel) {
      throw new Error(
        `tensor of size ${shapeString(shape)}, stride ${shapeString(strides)}, offset ${offset} reaches element ${last} but storage '${storage.key}' holds only ${storage.numel}: storage too small`,
      );
    }
  }
  if (typeof requiresGrad !== 'boolean') throw new Error(`requires_grad is a ${describeValue(requiresGrad)}, not a bool`);
  return new TorchTensor(storage, offset, shape, strides, requiresGrad);
}

/** The allow list: plain-data globals, storage classes (values only) and the tensor rebuild functions. */
function torchGlobals(): Map<string, AllowedGlobal> {
  const g = new Map<string, AllowedGlobal>(DATA_GLOBALS);
  for (const [cls, dtype] of Object.entries(TORCH_STORAGE_DTYPES)) g.set(`torch.${cls}`, { storageDtype: dtype } as StorageGlobal);
  const hooks = (v: PickleValue) => {
    if (!(v instanceof PickleDict)) throw new Error(`backward_hooks is a ${describeValue(v)}, not an OrderedDict`);
  };
  g.set('torch._utils._rebuild_tensor_v2', {
    call: (a) => {
      if (a.length !== 6 && a.length !== 7) throw new Error(`expects 6 or 7 arguments, got ${a.length}`);
      hooks(a[5]);
      return rebuildTensor(a[0], a[1], a[2], a[3], a[4]);
    },
  });
  g.set('torch._utils._rebuild_tensor', {
    call: (a) => {
      if (a.length !== 4) throw new Error(`expects 4 arguments, got ${a.length}`);
      return rebuildTensor(a[0], a[1], a[2], a[3], false);
    },
  });
  const parameter = (n: number) => ({
    call: (a: readonly PickleValue[]) => {
      if (a.length !== n) throw new Error(`expects ${n} arguments, got ${a.length}`);
      const t = a[0];
      if (!(t instanceof TorchTensor)) throw new Error(`data is a ${describeValue(t)}, not a tensor`);
      hooks(a[2]);
      return t;
    },
  });
  g.set('torch._utils._rebuild_parameter', parameter(3));
  g.set('torch._utils._rebuild_parameter_with_state', parameter(4));
  g.set('torch.Size', {
    call: (a) => {
      if (a.length !== 1) throw new Error('expects one tuple');
      return Object.freeze(intTuple(a[0], 'torch.Size').slice());
    },
  });
  g.set('torch.device', {
    call: (a) => {
      if (typeof a[0] !== 'string' || a.length > 2 || (a.length === 2 && !isNonNegInt(a[1]))) throw new Error('expects (type[, index])');
      return a.length === 2 ? `${a[0]}:${a[1]}` : a[0];
    },
  });
  return g;
}

function lookup(node: PickleValue, key: string): PickleValue | undefined {
  if (node instanceof PickleDict) {
    if (node.has(key)) return node.get(key);
    if (/^-?\d+$/.test(key) && node.has(Number(key))) return node.get(Number(key));
    return undefined;
  }
  if (Array.isArray(node) && /^\d+$/.test(key)) return node[Number(key)];
  return undefined;
}

function keysOf(node: PickleValue): string[] {
  if (node instanceof PickleDict) return [...node.keys()].map(String);
  if (Array.isArray(node)) return node.map((_, i) => String(i));
  return [];
}

function hasDirectTensor(node: PickleValue): boolean {
  const values = node instanceof PickleDict ? [...node.values()] : Array.isArray(node) ? node : [];
  return values.some((v) => v instanceof TorchTensor);
}

/** containsTensor(v): whether a tensor is reachable from v; each container is examined once per finder, whatever the number of paths to it. */
function tensorFinder(): (v: PickleValue) => boolean {
  const known = new Map<object, boolean>();
  const find = (v: PickleValue, depth: number): boolean => {
    if (v instanceof TorchTensor) return true;
    if (depth > MAX_NESTING || v === null || typeof v !== 'object') return false;
    const k = known.get(v);
    if (k !== undefined) return k;
    known.set(v, false); // in progress: a cycle back here adds nothing
    const values = v instanceof PickleDict ? [...v.values()] : Array.isArray(v) ? v : [];
    const r = values.some((c) => find(c, depth + 1));
    known.set(v, r);
    return r;
  };
  return (v) => find(v, 0);
}

/** The cap in words, with how to raise it. */
function capText(cap: number, userCap: number | undefined, fileBytes: number): string {
  const origin = userCap === undefined ? `default cap of ${cap} bytes (${TENSOR_BYTES_PER_FILE_BYTE}x the ${fileBytes}-byte file, at least ${MIN_TENSOR_BYTES_CAP})` : `maxTensorBytes cap of ${cap} bytes`;
  return `${origin}: refused before reading any data; raise TorchCheckpointOptions.maxTensorBytes (silo convert --max-tensor-bytes) if the checkpoint is genuine`;
}

/** Why a file that is not a zip is not readable, in words. */
function sniff(head: Uint8Array): string {
  if (head.length > 8 && head[8] === 0x7b) return 'this looks like a safetensors file, not a torch checkpoint';
  if (head[0] === 0x80) return 'legacy torch.save format (PyTorch < 1.6, a bare pickle stream) is not supported: re-save it with torch >= 1.6 or convert it to safetensors';
  if (head.length === 0) return 'file is empty';
  return 'not a torch checkpoint (a torch.save file is a zip archive; this one does not start with PK)';
}
