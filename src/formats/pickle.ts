// A restricted unpickler: Python pickle protocols 0-5, as far as data (state dicts) needs, and nothing
// that runs code. A pickle is a program for a stack machine whose GLOBAL opcodes name arbitrary Python
// callables (os.system, builtins.eval, ...) and whose REDUCE calls them. Here GLOBAL resolves only names
// on the caller's allow list, each bound to a small TypeScript function; any other name ends the load
// with an error naming module.name and the file. Nothing is evaluated, imported or executed.
//
// Values: None -> null, bool -> boolean, int -> number (bigint beyond 2^53), float -> number,
// str -> string, bytes/bytearray -> Uint8Array, list -> array, tuple -> frozen array (see isTuple),
// dict/OrderedDict -> PickleDict (a Map), set/frozenset -> PickleSet, allowed globals -> PickleGlobal,
// and whatever the allowed callables return.
//
// Bounds: the machine is iterative (no recursion, whatever the nesting), every length is checked
// against the bytes that remain, and each opcode creates O(1) values plus what it reads, so memory is
// linear in the input. Memoised values are shared, not copied, so the result is a graph: a list
// appended to itself is a cycle, and a few hundred bytes can build a DAG with 2^60 paths (a list
// holding one memoised list twice, 60 levels deep). Walkers must visit each object once, never walk
// paths (see TorchCheckpoint.stateDict).

import { SiloError } from '../engine/errors.js';

export type PickleValue = unknown;
export type PickleKey = string | number | bigint | boolean | null;

/** A refused or malformed pickle; `file` and `offset` (of the opcode) say where. */
export class PickleError extends SiloError {
  constructor(
    readonly file: string,
    readonly offset: number,
    detail: string,
  ) {
    super(`pickle ${file} at byte ${offset}: ${detail}`);
  }
}

/** dict or collections.OrderedDict (insertion-ordered either way); `attributes` holds BUILD's state. */
export class PickleDict extends Map<PickleKey, PickleValue> {
  attributes: PickleDict | null = null;
  constructor(readonly pyClass: 'dict' | 'collections.OrderedDict' = 'dict') {
    super();
  }
}

export class PickleSet extends Set<PickleKey> {
  constructor(readonly frozen: boolean) {
    super();
  }
}

/** An allowed global, pushed by GLOBAL / STACK_GLOBAL / INST. */
export class PickleGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
    readonly impl: AllowedGlobal,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A global the unpickler may resolve; `call` (if any) is what REDUCE / NEWOBJ / INST / OBJ run. */
export interface AllowedGlobal {
  call?: (args: readonly PickleValue[]) => PickleValue;
}

/** Objects made by allowed callables may accept BUILD's state through this method. */
export const PICKLE_BUILD = Symbol('pickle.build');

export const isTuple = (v: unknown): v is readonly PickleValue[] => Array.isArray(v) && Object.isFrozen(v);
export const isList = (v: unknown): v is PickleValue[] => Array.isArray(v) && !Object.isFrozen(v);

export interface UnpickleOptions {
  /** What errors call the data (a file, or archive:entry). */
  source: string;
  /** Allowed globals by "module.name". Everything else is refused. */
  globals: ReadonlyMap<string, AllowedGlobal>;
  /** Resolves PERSID / BINPERSID ids; without it a persistent id is an error. */
  persistentLoad?: (pid: PickleValue) => PickleValue;
  /** Longest LONG1/LONG4 integer accepted, in bytes. Default 1024. */
  maxLongBytes?: number;
}

/** Globals that plain data needs: OrderedDict, and _codecs.encode (how protocol 2 writes bytes). */
export const DATA_GLOBALS: ReadonlyMap<string, AllowedGlobal> = new Map<string, AllowedGlobal>([
  [
    'collections.OrderedDict',
    {
      call: (args) => {
        const d = new PickleDict('collections.OrderedDict');
        if (args.length === 0) return d;
        // OrderedDict(iterable of pairs), as pickled by some protocol 0/1 writers.
        const items = args[0];
        if (args.length !== 1 || !Array.isArray(items)) throw new Error('OrderedDict expects no arguments or one list of pairs');
        for (const kv of items) {
          if (!Array.isArray(kv) || kv.length !== 2) throw new Error('OrderedDict item is not a (key, value) pair');
          d.set(asKey(kv[0]), kv[1]);
        }
        return d;
      },
    },
  ],
  [
    '_codecs.encode',
    {
      call: (args) => {
        const [text, encoding] = args;
        if (typeof text !== 'string' || (encoding !== 'latin1' && encoding !== 'latin-1')) {
          throw new Error(`_codecs.encode is only allowed as (str, 'latin1'), got encoding ${JSON.stringify(encoding)}`);
        }
        const out = new Uint8Array(text.length);
        for (let i = 0; i < text.length; i++) {
          const c = text.charCodeAt(i);
          if (c > 255) throw new Error('_codecs.encode: character outside latin1');
          out[i] = c;
        }
        return out;
      },
    },
  ],
]);

const OPNAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT',
  0x4a: 'BININT', 0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID',
  0x51: 'BINPERSID', 0x52: 'REDUCE', 0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND', 0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT',
  0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET', 0x69: 'INST', 0x6a: 'LONG_BINGET',
  0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT', 0x72: 'LONG_BINPUT',
  0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2',
  0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8',
  0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL',
  0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

/** A dict / set key: hashable scalars only (state dicts key by str, optimizer states by int). */
function asKey(v: PickleValue): PickleKey {
  if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return v;
  throw new Error(`a ${describeValue(v)} as a dict/set key is not supported`);
}

export function describeValue(v: PickleValue): string {
  if (v === null) return 'None';
  if (isTuple(v)) return `tuple of ${v.length}`;
  if (Array.isArray(v)) return `list of ${v.length}`;
  if (v instanceof PickleDict) return `${v.pyClass} of ${v.size}`;
  if (v instanceof PickleGlobal) return v.qualifiedName;
  if (v instanceof Uint8Array) return `bytes of ${v.byteLength}`;
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

const normInt = (b: bigint): number | bigint => (b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b);

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Unpickles `data` under `options`; throws PickleError on anything malformed or not allowed. */
export function unpickle(data: Uint8Array, options: UnpickleOptions): PickleValue {
  const { source, globals, persistentLoad } = options;
  const maxLongBytes = options.maxLongBytes ?? 1024;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const end = data.byteLength;
  let pos = 0;
  let opStart = 0;
  let op = 0;
  const stack: PickleValue[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PickleValue>();

  const opname = () => OPNAMES[op] ?? `0x${op.toString(16).padStart(2, '0')}`;
  const fail = (detail: string) => new PickleError(source, opStart, detail);
  const need = (n: number) => {
    if (n > end - pos) throw fail(`data ends inside ${opname()} (needs ${n} more bytes, ${end - pos} left): truncated pickle`);
  };
  const u8 = () => (need(1), data[pos++]!);
  const u16 = () => (need(2), (pos += 2), view.getUint16(pos - 2, true));
  const u32 = () => (need(4), (pos += 4), view.getUint32(pos - 4, true));
  const i32 = () => (need(4), (pos += 4), view.getInt32(pos - 4, true));
  const u64 = () => {
    need(8);
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(end)) throw fail(`${opname()} length ${v} is larger than the whole pickle: truncated or corrupt`);
    return Number(v);
  };
  const take = (n: number) => {
    need(n);
    pos += n;
    return data.subarray(pos - n, pos);
  };
  const line = () => {
    const nl = data.indexOf(0x0a, pos);
    if (nl < 0) throw fail(`data ends inside ${opname()} (no newline): truncated pickle`);
    const s = data.subarray(pos, nl);
    pos = nl + 1;
    return s;
  };
  const ascii = (b: Uint8Array) => String.fromCharCode(...b.subarray(0, 4096)) + (b.length > 4096 ? '...' : '');
  const utf8 = (b: Uint8Array) => {
    try {
      return UTF8.decode(b);
    } catch {
      throw fail(`${opname()} text is not valid UTF-8`);
    }
  };

  const base = () => marks[marks.length - 1] ?? 0;
  const push = (v: PickleValue) => void stack.push(v);
  const pop = (): PickleValue => {
    if (stack.length <= base()) throw fail(`stack underflow in ${opname()}`);
    return stack.pop();
  };
  const top = (): PickleValue => {
    if (stack.length <= base()) throw fail(`stack underflow in ${opname()} (empty stack)`);
    return stack[stack.length - 1];
  };
  const popMark = (): PickleValue[] => {
    const m = marks.pop();
    if (m === undefined) throw fail(`${opname()} without a MARK`);
    return stack.splice(m);
  };
  const memoGet = (i: number) => {
    if (!memo.has(i)) throw fail(`${opname()} of memo slot ${i}, which was never stored`);
    return memo.get(i);
  };
  const memoPut = (i: number) => void memo.set(i, top());
  const tuple = (items: PickleValue[]) => Object.freeze(items);
  const key = (v: PickleValue) => {
    try {
      return asKey(v);
    } catch (e) {
      throw fail((e as Error).message);
    }
  };

  const resolveGlobal = (module: string, name: string): PickleGlobal => {
    const qn = `${module}.${name}`;
    const impl = globals.get(qn);
    if (!impl) {
      throw fail(`refused global ${qn}: not on the allow list (only plain tensors and containers are loaded; nothing is executed)`);
    }
    return new PickleGlobal(module, name, impl);
  };
  const callGlobal = (fn: PickleValue, args: PickleValue, how: string): PickleValue => {
    if (!(fn instanceof PickleGlobal)) throw fail(`${how} target is a ${describeValue(fn)}, not an allowed callable`);
    if (!isTuple(args)) throw fail(`${how} of ${fn.qualifiedName}: arguments are a ${describeValue(args)}, not a tuple`);
    if (!fn.impl.call) throw fail(`${how} of ${fn.qualifiedName}: allowed as a value, not as a callable`);
    try {
      return fn.impl.call(args);
    } catch (e) {
      if (e instanceof PickleError) throw e;
      throw fail(`${how} of ${fn.qualifiedName}: ${(e as Error).message}`);
    }
  };
  const readLong = (bytes: Uint8Array): number | bigint => {
    if (bytes.length === 0) return 0;
    let v = 0n;
    for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
    if (bytes[bytes.length - 1]! & 0x80) v -= 1n << BigInt(8 * bytes.length);
    return normInt(v);
  };
  const decimal = (text: string, what: string): number | bigint => {
    const t = text.endsWith('L') ? text.slice(0, -1) : text;
    if (!/^[+-]?\d{1,4000}$/.test(t)) throw fail(`${what} ${JSON.stringify(text.slice(0, 40))} is not an integer`);
    return normInt(BigInt(t));
  };
  const index = (text: string): number => {
    const v = decimal(text, 'memo index');
    if (typeof v !== 'number' || v < 0) throw fail(`memo index ${text} is out of range`);
    return v;
  };

  while (pos < end) {
    opStart = pos;
    op = data[pos++]!;
    switch (op) {
      case 0x80: { // PROTO
        const v = u8();
        if (v > 5) throw fail(`pickle protocol ${v} is not supported (0-5)`);
        break;
      }
      case 0x95: { // FRAME: framing only groups opcodes; check it fits and read on
        const n = u64();
        if (n > end - pos) throw fail(`FRAME of ${n} bytes runs past the end (${end - pos} left): truncated pickle`);
        break;
      }
      case 0x2e: { // STOP
        const v = pop();
        return v;
      }
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x30: if (stack.length > base()) stack.pop(); else popMark(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: push(top()); break; // DUP

      case 0x4e: push(null); break; // NONE
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x4a: push(i32()); break; // BININT
      case 0x4b: push(u8()); break; // BININT1
      case 0x4d: push(u16()); break; // BININT2
      case 0x8a: case 0x8b: { // LONG1, LONG4
        const n = op === 0x8a ? u8() : u32();
        if (n > maxLongBytes) throw fail(`${opname()} integer of ${n} bytes exceeds the ${maxLongBytes}-byte limit`);
        push(readLong(take(n)));
        break;
      }
      case 0x49: { // INT (text; I01/I00 are protocol 0's True/False)
        const s = ascii(line());
        push(s === '01' ? true : s === '00' ? false : decimal(s, 'INT'));
        break;
      }
      case 0x4c: push(decimal(ascii(line()), 'LONG')); break; // LONG (text)
      case 0x47: need(8); push(view.getFloat64(pos, false)); pos += 8; break; // BINFLOAT (big-endian)
      case 0x46: { // FLOAT (text)
        const s = ascii(line()).trim();
        const v = /^[+-]?inf$/i.test(s) ? (s.startsWith('-') ? -Infinity : Infinity) : /^[+-]?nan$/i.test(s) ? NaN : Number(s);
        if (Number.isNaN(v) && !/nan/i.test(s)) throw fail(`FLOAT ${JSON.stringify(s.slice(0, 40))} is not a number`);
        push(v);
        break;
      }

      case 0x58: push(utf8(take(u32()))); break; // BINUNICODE
      case 0x8c: push(utf8(take(u8()))); break; // SHORT_BINUNICODE
      case 0x8d: push(utf8(take(u64()))); break; // BINUNICODE8
      case 0x56: push(rawUnicodeEscape(line(), fail)); break; // UNICODE (text)
      // Python 2 str: torch.load decodes them as UTF-8 text.
      case 0x55: push(utf8(take(u8()))); break; // SHORT_BINSTRING
      case 0x54: { // BINSTRING
        const n = i32();
        if (n < 0) throw fail('BINSTRING with a negative length');
        push(utf8(take(n)));
        break;
      }
      case 0x53: push(utf8(pyStringLiteral(line(), fail))); break; // STRING (text, quoted)
      case 0x43: push(take(u8()).slice()); break; // SHORT_BINBYTES
      case 0x42: push(take(u32()).slice()); break; // BINBYTES
      case 0x8e: push(take(u64()).slice()); break; // BINBYTES8
      case 0x96: push(take(u64()).slice()); break; // BYTEARRAY8
      case 0x97: throw fail('NEXT_BUFFER: out-of-band buffers are not supported');
      case 0x98: if (!(top() instanceof Uint8Array)) throw fail('READONLY_BUFFER on a non-buffer'); break;

      case 0x29: push(tuple([])); break; // EMPTY_TUPLE
      case 0x74: push(tuple(popMark())); break; // TUPLE
      case 0x85: push(tuple([pop()])); break; // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); push(tuple([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); push(tuple([a, b, c])); break; } // TUPLE3
      case 0x5d: push([]); break; // EMPTY_LIST
      case 0x6c: push(popMark()); break; // LIST
      case 0x61: { // APPEND
        const v = pop();
        const list = top();
        if (!isList(list)) throw fail(`APPEND to a ${describeValue(list)}, not a list`);
        list.push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const list = top();
        if (!isList(list)) throw fail(`APPENDS to a ${describeValue(list)}, not a list`);
        for (const v of items) list.push(v);
        break;
      }
      case 0x7d: push(new PickleDict()); break; // EMPTY_DICT
      case 0x64: { // DICT
        const items = popMark();
        if (items.length % 2) throw fail('DICT with an odd number of items');
        const d = new PickleDict();
        for (let i = 0; i < items.length; i += 2) d.set(key(items[i]), items[i + 1]);
        push(d);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        const d = top();
        if (!(d instanceof PickleDict)) throw fail(`SETITEM on a ${describeValue(d)}, not a dict`);
        d.set(key(k), v);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        const d = top();
        if (!(d instanceof PickleDict)) throw fail(`SETITEMS on a ${describeValue(d)}, not a dict`);
        if (items.length % 2) throw fail('SETITEMS with an odd number of items');
        for (let i = 0; i < items.length; i += 2) d.set(key(items[i]), items[i + 1]);
        break;
      }
      case 0x8f: push(new PickleSet(false)); break; // EMPTY_SET
      case 0x90: { // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof PickleSet) || s.frozen) throw fail(`ADDITEMS on a ${describeValue(s)}, not a set`);
        for (const v of items) s.add(key(v));
        break;
      }
      case 0x91: { // FROZENSET
        const s = new PickleSet(true);
        for (const v of popMark()) s.add(key(v));
        push(s);
        break;
      }

      case 0x70: memoPut(index(ascii(line()))); break; // PUT
      case 0x71: memoPut(u8()); break; // BINPUT
      case 0x72: memoPut(u32()); break; // LONG_BINPUT
      case 0x94: memoPut(memo.size); break; // MEMOIZE
      case 0x67: push(memoGet(index(ascii(line())))); break; // GET
      case 0x68: push(memoGet(u8())); break; // BINGET
      case 0x6a: push(memoGet(u32())); break; // LONG_BINGET

      case 0x63: { // GLOBAL module\nname\n
        const module = utf8(line());
        const name = utf8(line());
        push(resolveGlobal(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw fail('STACK_GLOBAL needs two strings (module, name)');
        push(resolveGlobal(module, name));
        break;
      }
      case 0x82: case 0x83: case 0x84: { // EXT1/2/4: copyreg's extension registry, which we do not have
        const code = op === 0x82 ? u8() : op === 0x83 ? u16() : i32();
        throw fail(`${opname()} (extension code ${code}) is refused: the extension registry is not available`);
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        push(callGlobal(fn, args, 'REDUCE'));
        break;
      }
      case 0x81: { // NEWOBJ cls.__new__(cls, *args)
        const args = pop();
        const cls = pop();
        push(callGlobal(cls, args, 'NEWOBJ'));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop();
        const args = pop();
        const cls = pop();
        if (!(kwargs instanceof PickleDict) || kwargs.size) throw fail('NEWOBJ_EX with keyword arguments is not supported');
        push(callGlobal(cls, args, 'NEWOBJ_EX'));
        break;
      }
      case 0x69: { // INST module\nname\n, arguments since MARK
        const module = utf8(line());
        const name = utf8(line());
        const g = resolveGlobal(module, name);
        push(callGlobal(g, tuple(popMark()), 'INST'));
        break;
      }
      case 0x6f: { // OBJ: class and arguments since MARK
        const items = popMark();
        if (items.length === 0) throw fail('OBJ without a class');
        push(callGlobal(items[0], tuple(items.slice(1)), 'OBJ'));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        const obj = top();
        build(obj, state);
        break;
      }
      case 0x51: case 0x50: { // BINPERSID, PERSID
        const pid = op === 0x51 ? pop() : ascii(line());
        if (!persistentLoad) throw fail(`persistent id ${describeValue(pid)} but this pickle has no persistent storage`);
        try {
          push(persistentLoad(pid));
        } catch (e) {
          if (e instanceof PickleError) throw e;
          throw fail(`${opname()}: ${(e as Error).message}`);
        }
        break;
      }
      default:
        throw fail(`unknown opcode 0x${op.toString(16).padStart(2, '0')}${op >= 0x20 && op < 0x7f ? ` ('${String.fromCharCode(op)}')` : ''}: corrupt or not a pickle`);
    }
  }
  throw fail('data ends without STOP: truncated pickle');

  function build(obj: PickleValue, state: PickleValue): void {
    // Python accepts (state, slotstate); only the dict part is meaningful for data.
    let s = state;
    if (isTuple(s) && s.length === 2) {
      if (s[1] !== null) throw fail('BUILD with slot state is not supported');
      s = s[0];
    }
    if (obj instanceof PickleDict) {
      if (s === null) return;
      if (!(s instanceof PickleDict)) throw fail(`BUILD of a ${obj.pyClass} with a ${describeValue(s)} state`);
      obj.attributes ??= new PickleDict();
      for (const [k, v] of s) obj.attributes.set(k, v);
      return;
    }
    const hook = obj !== null && typeof obj === 'object' ? (obj as { [PICKLE_BUILD]?: (st: PickleValue) => void })[PICKLE_BUILD] : undefined;
    if (!hook) throw fail(`BUILD on a ${describeValue(obj)} is not supported`);
    try {
      hook.call(obj, s);
    } catch (e) {
      if (e instanceof PickleError) throw e;
      throw fail(`BUILD on a ${describeValue(obj)}: ${(e as Error).message}`);
    }
  }
}

/** Protocol 0 STRING: a Python repr, quoted, with backslash escapes. */
function pyStringLiteral(raw: Uint8Array, fail: (d: string) => PickleError): Uint8Array {
  let b = raw;
  if (b.length && b[b.length - 1] === 0x0d) b = b.subarray(0, -1);
  const q = b[0];
  if (b.length < 2 || (q !== 0x27 && q !== 0x22) || b[b.length - 1] !== q) throw fail('STRING argument is not a quoted string');
  b = b.subarray(1, -1);
  const out: number[] = [];
  const simple: Record<number, number> = { 0x5c: 0x5c, 0x27: 0x27, 0x22: 0x22, 0x6e: 10, 0x72: 13, 0x74: 9, 0x61: 7, 0x62: 8, 0x66: 12, 0x76: 11 };
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c !== 0x5c) {
      out.push(c);
      continue;
    }
    const e = b[++i];
    if (e === undefined) throw fail('STRING ends in a lone backslash');
    if (simple[e] !== undefined) out.push(simple[e]!);
    else if (e === 0x0a) continue;
    else if (e === 0x78) {
      const h = String.fromCharCode(b[i + 1] ?? 0, b[i + 2] ?? 0);
      if (!/^[0-9a-fA-F]{2}$/.test(h)) throw fail('STRING has a bad \\x escape');
      out.push(parseInt(h, 16));
      i += 2;
    } else if (e >= 0x30 && e <= 0x37) {
      let v = e - 0x30;
      for (let k = 0; k < 2 && b[i + 1]! >= 0x30 && b[i + 1]! <= 0x37; k++) v = v * 8 + (b[++i]! - 0x30);
      out.push(v & 0xff);
    } else out.push(0x5c, e);
  }
  return new Uint8Array(out);
}

/** Protocol 0 UNICODE: raw-unicode-escape (latin1 bytes, \uXXXX and \UXXXXXXXX escapes). */
function rawUnicodeEscape(b: Uint8Array, fail: (d: string) => PickleError): string {
  let s = '';
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c === 0x5c && (b[i + 1] === 0x75 || b[i + 1] === 0x55)) {
      const n = b[i + 1] === 0x75 ? 4 : 8;
      const h = String.fromCharCode(...b.subarray(i + 2, i + 2 + n));
      if (h.length !== n || !/^[0-9a-fA-F]+$/.test(h)) throw fail('UNICODE has a bad \\u escape');
      const cp = parseInt(h, 16);
      if (cp > 0x10ffff) throw fail('UNICODE escape beyond U+10FFFF');
      s += String.fromCodePoint(cp);
      i += 1 + n;
    } else s += String.fromCharCode(c);
  }
  return s;
}
