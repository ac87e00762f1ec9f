// PyTorch checkpoints: the real TAEF2 .pth files against their safetensors conversions, hand-built
// checkpoints covering dtypes / strided views / nesting / zip variants, and malicious or corrupt files.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { TorchCheckpoint, TorchCheckpointError, TorchTensor, gatherStrided, type TorchCheckpointOptions } from '../src/formats/torch-checkpoint.js';
import { readTorchCheckpointFile } from '../src/formats/torch-checkpoint-node.js';
import { PickleDict, PickleError } from '../src/formats/pickle.js';
import { ZipArchive, ZipError, bytesSource, crc32 } from '../src/formats/zip.js';
import { parseSafetensors, SAFETENSORS_DTYPES, type SafetensorsDType } from '../src/formats/safetensors.js';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { buildCheckpoint, buildZip, PickleWriter, specPickle, tensorSpec, writeSpec, type Spec } from './helpers/torch-fixtures.js';
import { GOLDEN_ROOT } from './helpers/golden.js';
import { rejection } from './helpers/rejection.js';

const TAEF2 = `${GOLDEN_ROOT}/taef2`;
// The hand-built fixtures hold one expanded view (w_expand); it is refused by default (tested below).
const open = (bytes: Uint8Array, name = 'test.pt', options: TorchCheckpointOptions = { allowExpandedTensors: true }) => TorchCheckpoint.open(bytes, name, options);

describe('TAEF2 .pth files equal their safetensors conversions', () => {
  for (const part of ['encoder', 'decoder']) {
    it(`taef2_${part}.pth: 79 F16 tensors, names, shapes and bits`, async () => {
      const ckpt = await readTorchCheckpointFile(`${TAEF2}/taef2_${part}.pth`);
      try {
        expect(ckpt.root).toBe(`taef2_${part}`);
        expect(ckpt.byteorder).toBe('little');
        expect(ckpt.version).toBe(3);
        expect(ckpt.value).toBeInstanceOf(PickleDict);
        expect((ckpt.value as PickleDict).pyClass).toBe('collections.OrderedDict');
        expect((ckpt.value as PickleDict).attributes?.has('_metadata')).toBe(true);
        const sd = ckpt.stateDict();
        expect(sd.keyPath).toEqual([]);
        expect(sd.skipped).toEqual([]);
        expect(sd.tensors.size).toBe(79);
        const st = parseSafetensors(readFileSync(`${TAEF2}/taef2_${part}.safetensors`), `taef2_${part}.safetensors`);
        expect([...sd.tensors.keys()].sort()).toEqual(st.names());
        for (const [name, t] of sd.tensors) {
          const info = st.info(name);
          expect(t.dtype, name).toBe('F16');
          expect(info.dtype, name).toBe('F16');
          expect(t.shape, name).toEqual(info.shape);
          expect(t.isContiguous(), name).toBe(true);
          const got = await ckpt.tensorBytes(t);
          expect(Buffer.compare(got, st.getBytes(name)), `${name} bits`).toBe(0);
        }
      } finally {
        await ckpt.close();
      }
    });
  }

  it('reads the same from memory as from a file handle', async () => {
    const bytes = new Uint8Array(readFileSync(`${TAEF2}/taef2_decoder.pth`));
    const a = await open(bytes, 'dec.pth');
    const b = await readTorchCheckpointFile(`${TAEF2}/taef2_decoder.pth`);
    const ta = a.stateDict().tensors;
    const tb = b.stateDict().tensors;
    expect([...ta.keys()]).toEqual([...tb.keys()]);
    for (const [k, t] of ta) expect(Buffer.compare(await a.tensorBytes(t), await b.tensorBytes(tb.get(k)!))).toBe(0);
    await b.close();
  });
});

// ---------------------------------------------------------------------------------------------
// Hand-built checkpoints

/** Bytes of `n` elements of `dtype` with recognisable values (element i encodes i). */
function storageData(dtype: SafetensorsDType, n: number): Uint8Array {
  const size = SAFETENSORS_DTYPES[dtype];
  const out = new Uint8Array(n * size);
  const v = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    if (dtype === 'F32') v.setFloat32(i * 4, i + 0.5, true);
    else if (dtype === 'F64') v.setFloat64(i * 8, i + 0.25, true);
    else if (dtype === 'I64') v.setBigInt64(i * 8, BigInt(i) - 3n, true);
    else if (dtype === 'BOOL') out[i] = i % 2;
    else for (let b = 0; b < size; b++) out[i * size + b] = (i * 7 + b * 3 + 1) & 0xff;
  }
  return out;
}

/** Reference strided gather, one element at a time through explicit multi-indices. */
function referenceView(src: Uint8Array, item: number, offset: number, shape: number[], stride: number[]): Uint8Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Uint8Array(n * item);
  for (let flat = 0; flat < n; flat++) {
    let rem = flat;
    let at = offset;
    for (let d = shape.length - 1; d >= 0; d--) {
      at += (rem % shape[d]!) * stride[d]!;
      rem = Math.floor(rem / shape[d]!);
    }
    out.set(src.subarray(at * item, (at + 1) * item), flat * item);
  }
  return out;
}

const STORAGES: [string, string, SafetensorsDType, number][] = [
  ['0', 'FloatStorage', 'F32', 12],
  ['1', 'HalfStorage', 'F16', 6],
  ['2', 'BFloat16Storage', 'BF16', 4],
  ['3', 'DoubleStorage', 'F64', 3],
  ['4', 'LongStorage', 'I64', 3],
  ['5', 'IntStorage', 'I32', 2],
  ['6', 'ShortStorage', 'I16', 2],
  ['7', 'CharStorage', 'I8', 2],
  ['8', 'ByteStorage', 'U8', 5],
  ['9', 'BoolStorage', 'BOOL', 4],
];
const storageBytes = Object.fromEntries(STORAGES.map(([k, , d, n]) => [k, storageData(d, n)]));
const st = (key: string) => STORAGES.find((s) => s[0] === key)!;
const view = (key: string, size: number[], stride?: number[], offset = 0) => tensorSpec(st(key)[1], key, st(key)[3], size, stride, offset);

/** name -> (storage key, size, stride, offset) */
const TENSORS: [string, string, number[], number[] | undefined, number][] = [
  ['w', '0', [3, 4], undefined, 0],
  ['w_t', '0', [4, 3], [1, 4], 0], // transpose
  ['w_slice', '0', [2, 2], [4, 1], 5], // offset window
  ['w_cols', '0', [3, 2], [4, 2], 1], // every other column
  ['w_expand', '0', [2, 3], [0, 1], 0], // broadcast (stride 0)
  ['w_scalar', '0', [], [], 7],
  ['w_empty', '0', [0, 4], [4, 1], 12],
  ['w_4d', '0', [2, 1, 3, 2], [1, 99, 4, 2], 0], // permuted, size-1 dim with odd stride
  ['h_t', '1', [3, 2], [1, 3], 0],
  ['bf', '2', [2, 2], undefined, 0],
  ['d', '3', [3], undefined, 0],
  ['l', '4', [3], [1], 0],
  ['i32', '5', [2], undefined, 0],
  ['i16', '6', [2], undefined, 0],
  ['i8', '7', [1, 2], undefined, 0],
  ['u8_rev_free', '8', [5], [1], 0],
  ['b', '9', [2, 2], [1, 2], 0],
];
const flatSpec = (): Spec => ({ dict: TENSORS.map(([name, key, size, stride, off]) => [name, view(key, size, stride, off)]) });

async function expectTensors(ckpt: TorchCheckpoint, tensors: Map<string, TorchTensor>, prefix = '') {
  expect([...tensors.keys()]).toEqual(TENSORS.map(([n]) => prefix + n));
  for (const [name, key, size, stride, off] of TENSORS) {
    const t = tensors.get(prefix + name)!;
    const [, , dtype] = st(key);
    expect(t.dtype, name).toBe(dtype);
    expect(t.shape, name).toEqual(size);
    const item = SAFETENSORS_DTYPES[dtype];
    const want = referenceView(storageBytes[key]!, item, off, size, stride ?? size.map((_, i) => size.slice(i + 1).reduce((a, b) => a * b, 1)));
    expect(Buffer.compare(await ckpt.tensorBytes(t), want), `${name} bytes`).toBe(0);
  }
}

describe('hand-built checkpoints', () => {
  it('every storage dtype, contiguous and strided views', async () => {
    const ckpt = await open(buildCheckpoint(specPickle(flatSpec()), storageBytes).bytes);
    const sd = ckpt.stateDict();
    await expectTensors(ckpt, sd.tensors);
    expect(sd.tensors.get('w_t')!.isContiguous()).toBe(false);
    expect(sd.tensors.get('w_4d')!.isContiguous()).toBe(false);
    expect(sd.tensors.get('w_slice')!.isContiguous()).toBe(false);
    expect(sd.tensors.get('w_scalar')!.isContiguous()).toBe(true);
  });

  it('deflated entries, zip64 records and a plain dict read the same', async () => {
    const plain = { dict: (flatSpec() as { dict: [string, Spec][] }).dict, ordered: false };
    for (const variant of [{ method: 8 as const }, { zip64: true }, { method: 8 as const, zip64: true }]) {
      const ckpt = await open(buildCheckpoint(specPickle(plain), storageBytes, variant).bytes);
      expect((ckpt.value as PickleDict).pyClass).toBe('dict');
      await expectTensors(ckpt, ckpt.stateDict().tensors);
    }
  });

  it('big-endian storages are byte-swapped', async () => {
    const swapped: Record<string, Uint8Array> = {};
    for (const [k, , dtype] of STORAGES) {
      const item = SAFETENSORS_DTYPES[dtype];
      const b = storageBytes[k]!.slice();
      for (let i = 0; i < b.length; i += item) b.subarray(i, i + item).reverse();
      swapped[k] = b;
    }
    const ckpt = await open(buildCheckpoint(specPickle(flatSpec()), swapped, { byteorder: 'big' }).bytes);
    expect(ckpt.byteorder).toBe('big');
    await expectTensors(ckpt, ckpt.stateDict().tensors);
  });

  it('finds nested state dicts, follows key paths, flattens and skips non-tensors', async () => {
    const inner = flatSpec();
    const wrapped: Spec = { dict: [['epoch', 3], ['lr', 0.1], ['state_dict', inner], ['name', 'run']] };
    const a = await open(buildCheckpoint(specPickle(wrapped), storageBytes).bytes);
    const sdA = a.stateDict();
    expect(sdA.keyPath).toEqual(['state_dict']);
    await expectTensors(a, sdA.tensors);

    const deep: Spec = { dict: [['model', { dict: [['ema', inner], ['raw', inner]] }], ['step', 1]] };
    const b = await open(buildCheckpoint(specPickle(deep), storageBytes).bytes);
    const ema = b.stateDict('model/ema');
    expect(ema.keyPath).toEqual(['model', 'ema']);
    await expectTensors(b, ema.tensors);
    // Without a key path: 'model' is the wrapper; both of its dicts are flattened with '.'.
    const all = b.stateDict();
    expect(all.keyPath).toEqual(['model']);
    await expectTensors(b, new Map([...all.tensors].filter(([k]) => k.startsWith('raw.'))), 'raw.');
    const e = b.stateDict.bind(b);
    expect(() => e('model/nope')).toThrow(/key path model\/nope not found \(available: ema, raw\)/);

    const mixed: Spec = { dict: [['w', view('0', [12])], ['meta', { dict: [['n', 1]] }], ['layers', [view('1', [6]), null]]] };
    const c = await open(buildCheckpoint(specPickle(mixed), storageBytes).bytes);
    const sdC = c.stateDict();
    expect([...sdC.tensors.keys()]).toEqual(['w', 'layers.0']);
    expect(sdC.skipped).toEqual(['meta.n', 'layers.1']);
  });

  it('one storage read once serves every view of it', async () => {
    const ckpt = await open(buildCheckpoint(specPickle(flatSpec()), storageBytes).bytes);
    const sd = ckpt.stateDict();
    expect(sd.tensors.get('w')!.storage).toBe(sd.tensors.get('w_t')!.storage);
    expect(ckpt.storages.size).toBe(STORAGES.length);
  });

  it('gatherStrided matches the reference on awkward shapes', () => {
    const src = storageData('I16', 200);
    const cases: [number[], number[], number][] = [
      [[3, 5, 2], [1, 6, 3], 4],
      [[2, 3, 4], [20, 1, 5], 1],
      [[7], [3], 2],
      [[2, 2, 2, 2], [0, 8, 0, 1], 3],
      [[1], [0], 0],
    ];
    for (const [shape, stride, off] of cases) {
      expect(Buffer.compare(gatherStrided(src, 2, off, shape, stride), referenceView(src, 2, off, shape, stride))).toBe(0);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Malicious and corrupt files: each ends in an error naming the file and what was refused.

function evilPickle(build: (w: PickleWriter) => void): Uint8Array {
  const w = new PickleWriter().proto(2);
  build(w);
  return w.stop().bytes();
}

describe('refused and corrupt checkpoints', () => {
  const refusedBy = async (pickle: Uint8Array, ...fragments: RegExp[]) => {
    const e = await rejection(open(buildCheckpoint(pickle, storageBytes).bytes, 'evil.pt'));
    expect(e).toBeInstanceOf(PickleError);
    expect(e.message).toContain('evil.pt:archive/data.pkl');
    for (const f of fragments) expect(e.message).toMatch(f);
    return e;
  };

  it('GLOBAL os.system + REDUCE', async () => {
    await refusedBy(evilPickle((w) => w.global('os', 'system').str('echo pwned').raw(0x85).reduce()), /refused global os\.system/);
  });

  it('builtins.eval (STACK_GLOBAL), posix.system and subprocess.Popen', async () => {
    await refusedBy(new PickleWriter().proto(4).stackGlobal('builtins', 'eval').str('__import__("os")').raw(0x85).reduce().stop().bytes(), /refused global builtins\.eval/);
    await refusedBy(evilPickle((w) => w.global('posix', 'system').str('id').raw(0x85).reduce()), /refused global posix\.system/);
    await refusedBy(evilPickle((w) => w.global('subprocess', 'Popen').str('id').raw(0x85).reduce()), /refused global subprocess\.Popen/);
  });

  it('a class that is not on the allow list (a whole pickled module; an unsupported storage type)', async () => {
    await refusedBy(evilPickle((w) => w.global('__main__', 'Net').emptyTuple().raw(0x81).emptyDict().build()), /refused global __main__\.Net/);
    const complex = specPickle({ dict: [['c', tensorSpec('ComplexFloatStorage', '0', 12, [12])]] });
    await refusedBy(complex, /refused global torch\.ComplexFloatStorage/);
  });

  it('a tensor rebuilt inside a state dict that also reduces a forbidden global is refused as a whole', async () => {
    const w = new PickleWriter().proto(2).global('collections', 'OrderedDict').emptyTuple().reduce().mark();
    w.str('ok');
    const ok = specPickle(view('0', [12]));
    w.raw(...ok.subarray(2, -1));
    w.str('bad').global('os', 'system').str('rm -rf /').raw(0x85).reduce().setitems().stop();
    await refusedBy(w.bytes(), /refused global os\.system/);
  });

  it('truncated pickle and bad opcode', async () => {
    const good = specPickle(flatSpec());
    await refusedBy(good.subarray(0, good.length - 20), /truncated/);
    const bad = good.slice();
    bad[2] = 0xfe;
    await refusedBy(bad, /unknown opcode 0xfe/);
  });

  it('storage key missing from the zip, or not a plain name', async () => {
    await refusedBy(specPickle({ dict: [['w', tensorSpec('FloatStorage', '42', 4, [4])]] }), /storage key '42' is missing from the archive \(no entry archive\/data\/42\)/);
    await refusedBy(specPickle({ dict: [['w', tensorSpec('FloatStorage', '../0', 12, [12])]] }), /storage key "\.\.\/0" is not a plain record name/);
  });

  it('storage too small for size/stride/offset, or numel disagreeing with the record', async () => {
    await refusedBy(specPickle({ dict: [['w', view('0', [4, 4])]] }), /reaches element 15 but storage '0' holds only 12: storage too small/);
    await refusedBy(specPickle({ dict: [['w', view('0', [3, 4], [1, 4], 0)]] }), /storage too small/);
    await refusedBy(specPickle({ dict: [['w', view('0', [2], [1], 11)]] }), /storage too small/);
    await refusedBy(specPickle({ dict: [['w', tensorSpec('FloatStorage', '0', 100, [100])]] }), /should hold 100 x F32 = 400 bytes but archive\/data\/0 has 48/);
    const huge = await open(buildCheckpoint(specPickle({ dict: [['w', view('0', [1 << 20, 1 << 20], [0, 0])]] }), storageBytes).bytes, 'evil.pt', { allowExpandedTensors: true });
    expect(() => huge.stateDict()).toThrow(/evil\.pt: tensor "w" \(F32 \[1048576, 1048576\], stride \[0, 0\], storage '0'\) brings the tensors to 4398046511104 bytes, over the default cap/);
  });

  it('cyclic containers are reported, not walked forever', async () => {
    const w = new PickleWriter().proto(2).emptyDict().str('a').emptyList().binput(1).binget(1).raw(0x61).raw(0x73).stop();
    const ckpt = await open(buildCheckpoint(w.bytes(), storageBytes).bytes, 'loop.pt');
    expect(() => ckpt.stateDict('')).toThrow(/loop\.pt: .*cyclic/);
  });

  it('not a zip checkpoint: legacy pickle, safetensors, junk, missing data.pkl, two roots', async () => {
    expect((await rejection(open(specPickle(null), 'old.pt'))).message).toMatch(/old\.pt: legacy torch\.save format/);
    const safet = readFileSync(`${TAEF2}/taef2_encoder.safetensors`);
    expect((await rejection(open(safet, 'x.pt'))).message).toMatch(/looks like a safetensors file/);
    expect((await rejection(open(new TextEncoder().encode('hello world, no zip here'), 'junk.pt'))).message).toMatch(/junk\.pt: not a torch checkpoint/);
    const noPkl = buildZip([{ name: 'archive/other.bin', data: new Uint8Array(3) }]).bytes;
    expect((await rejection(open(noPkl, 'nopkl.pt'))).message).toMatch(/nopkl\.pt: no <root>\/data\.pkl/);
    const two = buildCheckpoint(specPickle(null), {}, { extra: [{ name: 'other/data.pkl', data: specPickle(null) }] }).bytes;
    expect((await rejection(open(two, 'two.pt'))).message).toMatch(/several data\.pkl roots/);
  });
});

describe('corrupt zip archives', () => {
  const base = () => buildCheckpoint(specPickle(flatSpec()), storageBytes);
  const zipError = async (bytes: Uint8Array, ...fragments: RegExp[]) => {
    const e = await rejection(open(bytes, 'bad.pt'));
    expect(e).toBeInstanceOf(ZipError);
    expect(e.message).toContain('bad.pt');
    for (const f of fragments) expect(e.message).toMatch(f);
  };

  it('bad central directory signature', async () => {
    const z = base();
    const b = z.bytes.slice();
    b[z.cdOffset] = 0x00;
    await zipError(b, /bad signature \(corrupt directory\)/);
  });

  it('truncated file: no end record; central directory past the end', async () => {
    const z = base();
    await zipError(z.bytes.subarray(0, z.bytes.length - 30), /end of central directory not found \(truncated archive\?\)/);
    // Cut the middle out, keeping the end record: the directory offset now points past its end record.
    const cut = new Uint8Array([...z.bytes.subarray(0, 100), ...z.bytes.subarray(z.cdOffset)]);
    await zipError(cut, /central directory .* runs past|no local header|bad signature/);
  });

  it('truncated entry: declared sizes run past the data area', async () => {
    const z = base();
    const b = z.bytes.slice();
    const v = new DataView(b.buffer);
    // First central entry (data.pkl): grow compressed and uncompressed size.
    v.setUint32(z.cdOffset + 20, z.cdOffset, true);
    v.setUint32(z.cdOffset + 24, z.cdOffset, true);
    await zipError(b, /entry "archive\/data\.pkl": data .* runs past the entry area/);
    // Beyond the whole file: refused on the size alone.
    v.setUint32(z.cdOffset + 20, 100000, true);
    v.setUint32(z.cdOffset + 24, 100000, true);
    await zipError(b, /entry "archive\/data\.pkl": declares 100000 compressed bytes, more than the whole file/);
  });

  it('CRC mismatch in a storage is found when it is read; in data.pkl at open', async () => {
    const z = base();
    const b = z.bytes.slice();
    b[z.dataOffsets[2]! + 3]! ^= 0x40; // archive/data/0
    const ckpt = await open(b, 'bad.pt');
    const e = await rejection(ckpt.tensorBytes(ckpt.stateDict().tensors.get('w')!));
    expect(e).toBeInstanceOf(ZipError);
    expect(e.message).toMatch(/bad\.pt, entry "archive\/data\/0": CRC-32 mismatch/);
    const c = z.bytes.slice();
    c[z.dataOffsets[0]! + 40]! ^= 0x01; // inside data.pkl
    await zipError(c, /archive\/data\.pkl.*CRC-32 mismatch/);
  });

  it("entry names with '..', absolute paths or backslashes, and duplicates, are refused", async () => {
    const pkl = { name: 'archive/data.pkl', data: specPickle(null) };
    for (const [name, why] of [
      ['archive/../../etc/passwd', /'\.\.' path segment/],
      ['../archive/data/0', /'\.\.' path segment/],
      ['/abs/data.pkl', /absolute path/],
      ['archive\\data\\0', /backslash/],
      ['C:/x', /drive letter/],
    ] as const) {
      await zipError(buildZip([pkl, { name, data: new Uint8Array(4) }]).bytes, /unsafe entry name/, why);
    }
    await zipError(buildZip([pkl, pkl]).bytes, /appears twice/);
  });

  it('overlapping entries and a local header that disagrees with the directory', async () => {
    const z = buildZip([{ name: 'archive/data.pkl', data: specPickle(null) }, { name: 'archive/x', data: new Uint8Array(64) }]);
    const b = z.bytes.slice();
    const v = new DataView(b.buffer);
    const second = z.cdOffset + 46 + 'archive/data.pkl'.length;
    v.setUint32(second + 42, 0, true); // both entries claim offset 0
    await zipError(b, /local header names a different entry|overlaps/);
  });

  it('corrupt deflate data and unsupported methods', async () => {
    const z = buildCheckpoint(specPickle(flatSpec()), storageBytes, { method: 8 });
    const b = z.bytes.slice();
    for (let i = 0; i < 8; i++) b[z.dataOffsets[0]! + i] = 0xff;
    await zipError(b, /archive\/data\.pkl.*(corrupt deflate data|inflates to|CRC-32)/);
    const m = base().bytes.slice();
    const mv = new DataView(m.buffer);
    mv.setUint16(base().cdOffset + 10, 12, true); // bzip2
    await zipError(m, /compression method 12 is not supported/);
  });

  it('crc32 agrees with zlib', () => {
    for (const n of [0, 1, 3, 4, 5, 1000, 4099]) {
      const d = storageData('U8', n);
      expect(crc32(d)).toBe(zlibCrc32(d));
    }
  });

  it('ZipArchive reads stored and deflated entries and reports names', async () => {
    const data = storageData('F32', 1000);
    const z = await ZipArchive.open(bytesSource(buildZip([{ name: 'a/s', data }, { name: 'a/d', data, method: 8 }]).bytes, 'mem.zip'));
    expect(z.names()).toEqual(['a/s', 'a/d']);
    expect(Buffer.compare(await z.read('a/s'), data)).toBe(0);
    expect(Buffer.compare(await z.read('a/d'), data)).toBe(0);
    expect(z.entry('a/d').compressedSize).toBeLessThan(data.length);
    expect(() => z.entry('nope')).toThrow(/mem\.zip, entry "nope": no such entry/);
  });
});

describe('error types', () => {
  it('are SiloErrors naming the file', async () => {
    const e = await rejection(readTorchCheckpointFile('/nonexistent/model.pt'));
    expect(e).toBeInstanceOf(TorchCheckpointError);
    expect(e.message).toMatch(/\/nonexistent\/model\.pt: cannot open/);
  });
});

// ---------------------------------------------------------------------------------------------
// Hostile files that describe far more than they hold (issue #9: bounded readers)

describe('bounded: shared containers, expanded views, declared sizes', () => {
  /** A state dict {'w': tensor, 'dag': L60} where L0 = [tensor] and L(k+1) = [Lk, Lk] through the memo: 2^60 paths. */
  const dagPickle = (levels: number) => {
    const w = new PickleWriter().proto(2).emptyDict().binput(0).mark();
    w.str('w');
    writeSpec(w, view('0', [12])).binput(1);
    w.str('dag').emptyList().binget(1).raw(0x61).binput(2); // L0 = [w]
    for (let k = 0; k < levels; k++) w.raw(0x30).emptyList().mark().binget(2 + k).binget(2 + k).appends().binput(3 + k); // POP the previous level
    return w.setitems().stop().bytes();
  };

  it('a 2^60-path DAG of memoised lists is walked once per container, quickly', async () => {
    const pkl = dagPickle(60);
    expect(pkl.length).toBeLessThan(1000);
    const ckpt = await open(buildCheckpoint(pkl, storageBytes).bytes, 'dag.pt');
    const t0 = performance.now();
    const sd = ckpt.stateDict();
    expect(performance.now() - t0).toBeLessThan(1000);
    // 'w' plus the tensor inside L0 under its first path; every second path to a list is recorded as shared.
    expect([...sd.tensors.keys()]).toEqual(['w', `dag${'.0'.repeat(61)}`]);
    expect(sd.shared.size).toBe(60);
    expect(sd.shared.get(`dag${'.0'.repeat(59)}.1`)).toBe(`dag${'.0'.repeat(60)}`);
    expect(sd.tensors.get('w')).toBe(sd.tensors.get(`dag${'.0'.repeat(61)}`));
    expect(Buffer.compare(await ckpt.tensorBytes(sd.tensors.get('w')!), storageBytes['0']!)).toBe(0);
  });

  it('cycles still end in a SiloError, also when the search for the state dict meets them', async () => {
    // {'a': L} with L = [L, tensor]: the automatic search and the walk both terminate.
    const w = new PickleWriter().proto(2).emptyDict().str('a').emptyList().binput(1).mark().binget(1);
    writeSpec(w, view('0', [12]));
    w.appends().raw(0x73).stop();
    const ckpt = await open(buildCheckpoint(w.bytes(), storageBytes).bytes, 'loop2.pt');
    expect(() => ckpt.stateDict()).toThrow(/loop2\.pt: "a\.0" refers back to a container that holds it \(cyclic structure\)/);
  });

  it('expanded (stride-0) views are refused by default, naming the file and tensor, and read when allowed', async () => {
    // A 577-byte-style file: a 1024-element storage expanded to 2^17 x 1024 (512 MiB).
    const spec: Spec = { dict: [['big', tensorSpec('FloatStorage', 'e', 1024, [1 << 17, 1024], [0, 1])]] };
    const bytes = buildCheckpoint(specPickle(spec), { e: new Uint8Array(4096) }).bytes;
    const ckpt = await TorchCheckpoint.open(bytes, 'expand.pt');
    const e = (() => {
      try {
        ckpt.stateDict();
      } catch (err) {
        return err as Error;
      }
      throw new Error('expected a refusal');
    })();
    expect(e).toBeInstanceOf(TorchCheckpointError);
    expect(e.message).toMatch(/expand\.pt: tensor "big" \(F32 \[131072, 1024\], stride \[0, 1\], storage 'e'\) is an expanded view .*allowExpandedTensors/);
    // Taken from the unpickled value directly, tensorBytes refuses it too; allowed, it is still over the cap.
    const big = (ckpt.value as PickleDict).get('big') as TorchTensor;
    await expect(ckpt.tensorBytes(big)).rejects.toThrow(/expand\.pt: tensor \(F32 \[131072, 1024\], stride \[0, 1\], storage 'e'\) is an expanded view/);
    const allowed = await TorchCheckpoint.open(bytes, 'expand.pt', { allowExpandedTensors: true });
    expect(() => allowed.stateDict()).toThrow(/expand\.pt: tensor "big" .* brings the tensors to 536870912 bytes, over the default cap/);
    await expect(allowed.tensorBytes(big)).rejects.toThrow(/needs 536870912 bytes, over the default cap/);
    // Small expanded views are materialised when allowed (the fixtures' w_expand, checked against the reference).
    const ok = await TorchCheckpoint.open(buildCheckpoint(specPickle(flatSpec()), storageBytes).bytes, 'ok.pt', { allowExpandedTensors: true });
    await expectTensors(ok, ok.stateDict().tensors);
    const strict = await TorchCheckpoint.open(buildCheckpoint(specPickle(flatSpec()), storageBytes).bytes, 'strict.pt');
    expect(() => strict.stateDict()).toThrow(/strict\.pt: tensor "w_expand" .* expanded view/);
  });

  it('total declared tensor bytes are capped relative to the file size; the cap can be raised', async () => {
    // One 64 KiB tensor named 40 times through the memo: 2.5 MiB declared by a ~66 KiB file.
    const w = new PickleWriter().proto(2).emptyDict().mark();
    w.str('t0');
    writeSpec(w, tensorSpec('FloatStorage', 'r', 16384, [16384])).binput(1);
    for (let i = 1; i < 40; i++) w.str(`t${i}`).binget(1);
    const bytes = buildCheckpoint(w.setitems().stop().bytes(), { r: new Uint8Array(65536) }).bytes;
    const ckpt = await TorchCheckpoint.open(bytes, 'many.pt');
    expect(() => ckpt.stateDict()).toThrow(/many\.pt: tensor "t\d+" \(F32 \[16384\], stride \[1\], storage 'r'\) brings the tensors to \d+ bytes, over the default cap of 1048576 bytes .*maxTensorBytes/);
    const raised = await TorchCheckpoint.open(bytes, 'many.pt', { maxTensorBytes: 40 * 65536 });
    expect(raised.stateDict().tensors.size).toBe(40);
    const lowered = await TorchCheckpoint.open(bytes, 'many.pt', { maxTensorBytes: 65536 });
    expect(() => lowered.stateDict()).toThrow(/tensor "t1" .* over the maxTensorBytes cap of 65536 bytes/);
  });

  it('storages declaring more than the cap are refused at open (a deflated zero storage)', async () => {
    const zeros = new Uint8Array(4 << 20); // 4 MiB of zeros deflate to ~4 KiB
    const spec: Spec = { dict: [['z', tensorSpec('FloatStorage', 'z', zeros.length / 4, [1])]] };
    const bytes = buildCheckpoint(specPickle(spec), { z: zeros }, { method: 8 }).bytes;
    expect(bytes.length).toBeLessThan(64 << 10);
    const e = await rejection(TorchCheckpoint.open(bytes, 'zeros.pt'));
    expect(e).toBeInstanceOf(PickleError);
    expect(e.message).toMatch(/zeros\.pt:archive\/data\.pkl .*storage 'z' brings the storages to 4194304 bytes, over the default cap/);
    const ok = await TorchCheckpoint.open(bytes, 'zeros.pt', { maxTensorBytes: 8 << 20 });
    expect((await ok.tensorBytes(ok.stateDict().tensors.get('z')!)).length).toBe(4);
  });

  it('views outside their storage, and storages larger than their zip entry, are refused', async () => {
    const outside: Spec = { dict: [['v', tensorSpec('FloatStorage', '0', 12, [4], [4], 1)]] }; // reaches element 13
    await expect(open(buildCheckpoint(specPickle(outside), storageBytes).bytes, 'v.pt')).rejects.toThrow(/v\.pt:archive\/data\.pkl .*reaches element 13 but storage '0' holds only 12/);
    const larger: Spec = { dict: [['v', tensorSpec('FloatStorage', '0', 1 << 30, [4])]] };
    await expect(open(buildCheckpoint(specPickle(larger), storageBytes).bytes, 'l.pt')).rejects.toThrow(/l\.pt:archive\/data\.pkl .*storage '0' should hold 1073741824 x F32 = 4294967296 bytes but archive\/data\/0 has 48/);
  });
});

describe('bounded zip: declared sizes are checked before anything is allocated', () => {
  const pkl = specPickle(null);
  /** Central-directory offset of the zip64 extra field's first value (uncompressed size) of entry 0. */
  const z64UsizeAt = (z: { cdOffset: number }, name: string) => z.cdOffset + 46 + new TextEncoder().encode(name).length + 4;

  it('a deflated zip64 entry declaring 2^40 bytes is a ZipError, not a crash', async () => {
    const z = buildZip([{ name: 'a/x', data: new Uint8Array(1000), method: 8 }], { zip64: true });
    const b = z.bytes.slice();
    new DataView(b.buffer).setBigUint64(z64UsizeAt(z, 'a/x'), 1n << 40n, true);
    const e = await rejection(ZipArchive.open(bytesSource(b, 'huge.zip')));
    expect(e).toBeInstanceOf(ZipError);
    expect(e.message).toMatch(/huge\.zip, entry "a\/x": declares 1099511627776 uncompressed bytes from \d+ compressed: deflate expands at most 1032:1/);
  });

  it('stored and compressed sizes beyond the file (zip64 and 32-bit fields) are refused', async () => {
    const z = buildZip([{ name: 'a/s', data: new Uint8Array(100) }], { zip64: true });
    const b = z.bytes.slice();
    const v = new DataView(b.buffer);
    v.setBigUint64(z64UsizeAt(z, 'a/s'), 1n << 40n, true);
    v.setBigUint64(z64UsizeAt(z, 'a/s') + 8, 1n << 40n, true);
    await expect(ZipArchive.open(bytesSource(b, 's.zip'))).rejects.toThrow(/s\.zip, entry "a\/s": declares 1099511627776 compressed bytes, more than the whole file/);
    const y = buildZip([{ name: 'a/d', data: new Uint8Array(100), method: 8 }]);
    const c = y.bytes.slice();
    new DataView(c.buffer).setUint32(y.cdOffset + 24, 0xfffffff0, true);
    await expect(ZipArchive.open(bytesSource(c, 'd.zip'))).rejects.toThrow(/d\.zip, entry "a\/d": declares 4294967280 uncompressed bytes/);
  });

  it('an entry that inflates to more than it declares is refused', async () => {
    const data = new Uint8Array(5000).fill(7);
    const z = buildZip([{ name: 'a/p', data: pkl }, { name: 'a/d', data, method: 8 }]);
    const b = z.bytes.slice();
    const second = z.cdOffset + 46 + 'a/p'.length;
    new DataView(b.buffer).setUint32(second + 24, 4000, true);
    const arc = await ZipArchive.open(bytesSource(b, 'more.zip'));
    const e = await rejection(arc.read('a/d'));
    expect(e).toBeInstanceOf(ZipError);
    expect(e.message).toMatch(/more\.zip, entry "a\/d": deflate data inflates to more than the declared 4000 bytes/);
  });
});
