import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  parseSafetensors,
  serializeSafetensors,
  f32Entry,
  shardSafetensors,
  fetchSafetensors,
  fetchSafetensorsIndex,
  SafetensorsIndex,
  SafetensorsError,
  type SafetensorsEntry,
  type SafetensorsDType,
} from '../src/formats/safetensors.js';
import { readSafetensorsFile, readSafetensorsIndex } from '../src/formats/safetensors-node.js';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../src/engine/dtype.js';
import { SiloError } from '../src/engine/errors.js';
import type { Engine } from '../src/engine/device.js';
import { getEngine } from './helpers/engine.js';

// Golden files written by torch; read in place, never modified.
const G = '/work/shared/golden';
const FILES = {
  unet: `${G}/unet_mini/diffusion_pytorch_model.safetensors`,
  taefDec: `${G}/taef2/taef2_decoder.safetensors`,
  sched: `${G}/schedulers/golden.safetensors`,
  degr: `${G}/degradations/golden.safetensors`,
  unetGolden: `${G}/unet_mini/golden.safetensors`,
};

/** The JSON header and data section of a file, decoded independently of the parser under test. */
function rawHeader(path: string) {
  const bytes = readFileSync(path);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  return { bytes, view, n, header, dataStart: 8 + n };
}

/** IEEE half decoded by hand, independent of src/engine/dtype.ts. */
function halfByHand(h: number): number {
  const e = (h >> 10) & 31;
  const m = h & 1023;
  const s = h >> 15 ? -1 : 1;
  return e === 0 ? s * m * 2 ** -24 : s * 2 ** (e - 15) * (1 + m / 1024);
}

/** A file with an arbitrary header text (for corruption tests). */
function rawFile(headerText: string, data: Uint8Array, headerLen?: bigint): Uint8Array {
  const h = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLen ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

describe('safetensors: torch-written golden files', () => {
  for (const [key, path] of Object.entries(FILES)) {
    it(`${key}: names, dtypes, shapes and offsets match the JSON header`, () => {
      const { header, dataStart } = rawHeader(path);
      const f = parseSafetensors(readFileSync(path), path);
      const names = Object.keys(header).filter((k) => k !== '__metadata__').sort();
      expect(f.names()).toEqual(names);
      for (const name of names) {
        const i = f.info(name);
        expect(i.dtype).toBe(header[name]!.dtype);
        expect(i.shape).toEqual(header[name]!.shape);
        expect(i.byteOffset).toBe(dataStart + header[name]!.data_offsets[0]);
        expect(i.byteLength).toBe(header[name]!.data_offsets[1] - header[name]!.data_offsets[0]);
      }
      expect(f.metadata).toEqual({});
    });
  }

  it('F32 values equal the bytes decoded by hand (unet conv_in.weight)', () => {
    const { view, header, dataStart } = rawHeader(FILES.unet);
    const f = parseSafetensors(readFileSync(FILES.unet), FILES.unet);
    const w = f.getF32('conv_in.weight');
    expect(w.length).toBe(32 * 4 * 3 * 3);
    const b = dataStart + header['conv_in.weight']!.data_offsets[0];
    for (const i of [0, 1, 17, 1151]) expect(w[i]).toBe(view.getFloat32(b + 4 * i, true));
  });

  it('F16 weights widen exactly (taef2 decoder)', () => {
    const { view, header, dataStart } = rawHeader(FILES.taefDec);
    const f = parseSafetensors(readFileSync(FILES.taefDec), FILES.taefDec);
    expect(f.info('1.bias')).toMatchObject({ dtype: 'F16', shape: [64] });
    const bias = f.getF32('1.bias');
    // first values as printed by numpy: 0.298, 0.41, 0.2167, -0.001284
    expectCloseList(Array.from(bias.subarray(0, 4)), [0.298, 0.41, 0.2167, -0.001284], 5e-4);
    const b = dataStart + header['1.bias']!.data_offsets[0];
    for (let i = 0; i < 64; i++) expect(bias[i]).toBe(halfByHand(view.getUint16(b + 2 * i, true)));
    const w = f.getF32('1.weight');
    const bw = dataStart + header['1.weight']!.data_offsets[0];
    for (const i of [0, 5, 999, w.length - 1]) expect(w[i]).toBe(halfByHand(view.getUint16(bw + 2 * i, true)));
    const raw = f.getRaw('1.bias');
    expect(raw).toBeInstanceOf(Uint16Array);
    expect(raw[0]).toBe(view.getUint16(b, true));
  });

  it('I64 timesteps as BigInt64Array and as numbers (schedulers)', () => {
    const f = parseSafetensors(readFileSync(FILES.sched), FILES.sched);
    const raw = f.getRaw('ddim.timesteps.20');
    expect(raw).toBeInstanceOf(BigInt64Array);
    expect(raw[0]).toBe(951n);
    expect(f.getIntegers('ddim.timesteps.20')).toEqual(Array.from({ length: 20 }, (_, i) => 951 - 50 * i));
    expect(() => f.getIntegers('betas')).toThrow(/schedulers\/golden\.safetensors, tensor "betas": dtype F32 is not an integer/);
  });

  it('F64 and U8 (degradations): blur kernel sums to 1, F32 copy is its rounding, mask is 0/1', () => {
    const f = parseSafetensors(readFileSync(FILES.degr), FILES.degr);
    const k64 = f.getRaw('blur.kernel_f64') as Float64Array;
    expect(k64).toBeInstanceOf(Float64Array);
    expect(k64[30 * 61 + 30]).toBe(0.01768488749356488);
    expect(Math.abs(k64.reduce((s, v) => s + v, 0) - 1)).toBeLessThan(1e-12);
    expect(Array.from(f.getF32('blur.kernel_f64'))).toEqual(Array.from(f.getF32('blur.kernel')));
    const mask = f.getRaw('inpaint.mask');
    expect(mask).toBeInstanceOf(Uint8Array);
    expect(mask.length).toBe(256 * 256);
    let ones = 0;
    let others = 0;
    for (const v of mask as Uint8Array) {
      if (v === 1) ones++;
      else if (v !== 0) others++;
    }
    expect([ones, others]).toEqual([49152, 0]);
    expect(f.getIntegers('inpaint.mask').reduce((s, v) => s + v, 0)).toBe(49152);
  });

  it('scalar tensors (shape [])', () => {
    const f = parseSafetensors(readFileSync(FILES.unetGolden), FILES.unetGolden);
    const scalars = f.names().filter((n) => f.info(n).shape.length === 0);
    expect(scalars.length).toBeGreaterThan(0);
    for (const n of scalars) expect(f.getRaw(n).length).toBe(1);
  });

  it('round trip: parse -> serialize -> parse keeps every tensor byte, and the data section is identical', () => {
    for (const path of Object.values(FILES)) {
      const orig = readFileSync(path);
      const f = parseSafetensors(orig, path);
      const entries: Record<string, SafetensorsEntry> = {};
      for (const n of f.names()) entries[n] = { dtype: f.info(n).dtype, shape: f.info(n).shape, data: f.getRaw(n) };
      const out = serializeSafetensors(entries);
      const g = parseSafetensors(out, `${path} (re-serialized)`);
      expect(g.names()).toEqual(f.names());
      for (const n of f.names()) {
        expect(g.info(n).dtype).toBe(f.info(n).dtype);
        expect(g.info(n).shape).toEqual(f.info(n).shape);
        expect(Buffer.from(g.getBytes(n)).equals(Buffer.from(f.getBytes(n))), `${path} ${n}`).toBe(true);
      }
      // torch's files are already canonical (sorted, contiguous): only the JSON spacing differs.
      const { dataStart } = rawHeader(path);
      const outStart = 8 + Number(new DataView(out.buffer).getBigUint64(0, true));
      expect(Buffer.from(out.subarray(outStart)).equals(orig.subarray(dataStart)), path).toBe(true);
      // serializing the re-parsed file again is byte-identical
      const again: Record<string, SafetensorsEntry> = {};
      for (const n of g.names()) again[n] = { dtype: g.info(n).dtype, shape: g.info(n).shape, data: g.getRaw(n) };
      expect(Buffer.from(serializeSafetensors(again)).equals(Buffer.from(out))).toBe(true);
    }
  });
});

function expectCloseList(a: number[], b: number[], tol: number) {
  expect(a.length).toBe(b.length);
  a.forEach((v, i) => expect(Math.abs(v - b[i]!), `element ${i}: ${v} vs ${b[i]}`).toBeLessThanOrEqual(tol));
}

describe('safetensors: writing', () => {
  const values = [0, -0, 1, -2.5, 1 / 3, 65504, 1e-7, 6.1e-5, 3.14159265, -1e30, 1e-40, Infinity, -Infinity];

  it('F32, F16 and BF16 entries reproduce values (F16/BF16 rounded to nearest even)', () => {
    const bytes = serializeSafetensors(
      { a32: f32Entry(values, [values.length]), b16: f32Entry(values, [values.length], 'F16'), c_bf: f32Entry(values, [1, values.length], 'BF16') },
      { format: 'pt', note: 'ünïcode ✓' },
    );
    const f = parseSafetensors(bytes, 'written.safetensors');
    expect(f.metadata).toEqual({ format: 'pt', note: 'ünïcode ✓' });
    expect(Array.from(f.getF32('a32'))).toEqual(values.map(Math.fround));
    expect(Array.from(f.getF32('b16'))).toEqual(values.map((v) => f16BitsToF32(f32ToF16Bits(v))));
    expect(Array.from(f.getF32('c_bf'))).toEqual(values.map((v) => bf16BitsToF32(f32ToBf16Bits(v))));
    expect((f.getRaw('b16') as Uint16Array)[2]).toBe(0x3c00); // 1.0 in binary16
    expect((f.getRaw('c_bf') as Uint16Array)[2]).toBe(0x3f80); // 1.0 in bfloat16
    expect(f.info('c_bf').shape).toEqual([1, values.length]);
    expect(Number.isNaN(f.getF32('b16')[0])).toBe(false);
    const nan = parseSafetensors(serializeSafetensors({ x: f32Entry([NaN], [1], 'BF16'), y: f32Entry([NaN], [1], 'F16') }), 'nan');
    expect(Number.isNaN(nan.getF32('x')[0])).toBe(true);
    expect(Number.isNaN(nan.getF32('y')[0])).toBe(true);
  });

  it('canonical layout: u64 header length, space padding to 8 bytes, sorted contiguous data', () => {
    const bytes = serializeSafetensors({
      zeta: { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
      alpha: { dtype: 'I64', shape: [2], data: new BigInt64Array([-5n, 2n ** 62n]) },
      mid: { dtype: 'I32', shape: [0], data: new Int32Array(0) },
    });
    const view = new DataView(bytes.buffer);
    const n = Number(view.getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(text.trimEnd().endsWith('}')).toBe(true);
    expect(/^ *$/.test(text.slice(text.trimEnd().length))).toBe(true);
    const h = JSON.parse(text);
    expect(Object.keys(h)).toEqual(['alpha', 'mid', 'zeta']);
    expect(h.alpha.data_offsets).toEqual([0, 16]);
    expect(h.mid.data_offsets).toEqual([16, 16]);
    expect(h.zeta.data_offsets).toEqual([16, 19]);
    expect(bytes.length).toBe(8 + n + 19);
    const f = parseSafetensors(bytes, 'canon');
    expect(Array.from(f.getRaw('alpha') as BigInt64Array)).toEqual([-5n, 2n ** 62n]);
    expect(() => f.getIntegers('alpha')).toThrow(/canon, tensor "alpha": element 1 = 4611686018427387904 is outside the safe integer range/);
    expect(f.getIntegers('zeta')).toEqual([1, 2, 3]);
    expect(f.getRaw('mid').length).toBe(0);
  });

  it('rejects data whose size does not match dtype x shape', () => {
    expect(() => serializeSafetensors({ w: { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) } })).toThrow(/tensor "w": F32 \[2, 2\] needs 16 bytes, data has 12/);
  });

  it('unaligned input bytes still give correct typed arrays (aligned copy)', () => {
    const file = serializeSafetensors({ d: { dtype: 'F64', shape: [2], data: new Float64Array([Math.PI, -1]) } });
    const shifted = new Uint8Array(file.length + 3);
    shifted.set(file, 3);
    const f = parseSafetensors(shifted.subarray(3), 'shifted');
    expect(Array.from(f.getRaw('d') as Float64Array)).toEqual([Math.PI, -1]);
  });
});

describe('safetensors: rejecting corrupt files names the file and the tensor', () => {
  const good = serializeSafetensors({ w: f32Entry([1, 2, 3, 4], [2, 2]), b: f32Entry([5, 6], [2]) });
  const data = new Uint8Array(24);
  const entry = (o: object) => JSON.stringify(o);
  const bad = (bytes: Uint8Array, re: RegExp) => {
    let err: unknown;
    try {
      parseSafetensors(bytes, 'bad/model.safetensors');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err).toBeInstanceOf(SiloError);
    expect((err as Error).message).toContain('bad/model.safetensors');
    expect((err as Error).message).toMatch(re);
    return err as SafetensorsError;
  };

  it('the good file parses', () => {
    expect(parseSafetensors(good, 'good').names()).toEqual(['b', 'w']);
  });
  it('file shorter than 8 bytes', () => {
    bad(good.subarray(0, 5), /5 bytes, shorter than the 8-byte header length/);
  });
  it('truncated inside the header', () => {
    bad(good.subarray(0, 20), /header length \d+ runs past the end of the 20-byte file/);
  });
  it('truncated inside the data', () => {
    const e = bad(good.subarray(0, good.length - 4), /tensor "w": data_offsets \[8, 24\] reach past the 20-byte data section/);
    expect(e.tensor).toBe('w');
  });
  it('absurd header length', () => {
    bad(rawFile('{}', data, 2n ** 40n), /header length 1099511627776 is absurd/);
  });
  it('header not UTF-8', () => {
    const f = rawFile('{"a":1}', data);
    f[10] = 0xff;
    bad(f, /not valid UTF-8/);
  });
  it('header not JSON / not an object', () => {
    bad(rawFile('{"w": {"dtype": "F32",', data), /not valid JSON/);
    bad(rawFile('[1, 2]', data), /not an object/);
    bad(rawFile('null    ', data), /not an object/);
  });
  it('unknown dtype', () => {
    bad(rawFile(entry({ w: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }), data), /tensor "w": unknown dtype "F128"/);
    bad(rawFile(entry({ w: { shape: [1], data_offsets: [0, 4] } }), data), /tensor "w": dtype is missing/);
    bad(rawFile(entry({ w: { dtype: 'toString', shape: [1], data_offsets: [0, 4] } }), data), /tensor "w": unknown dtype "toString"/);
  });
  it('bad shapes', () => {
    bad(rawFile(entry({ w: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 8] } }), data), /tensor "w": shape \[2,-1\] is not an array of non-negative integers/);
    bad(rawFile(entry({ w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }), data), /tensor "w": shape/);
    bad(rawFile(entry({ w: { dtype: 'F32', shape: '2', data_offsets: [0, 8] } }), data), /tensor "w": shape "2"/);
  });
  it('bad data_offsets', () => {
    bad(rawFile(entry({ w: { dtype: 'F32', shape: [1] } }), data), /tensor "w": data_offsets undefined is not two/);
    bad(rawFile(entry({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4, 8] } }), data), /tensor "w": data_offsets \[0,4,8\] is not two/);
    bad(rawFile(entry({ w: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }), data), /tensor "w": data_offsets \[8, 4\] begin after end/);
  });
  it('byte length != prod(shape) * itemsize', () => {
    bad(rawFile(entry({ w: { dtype: 'F16', shape: [3, 2], data_offsets: [0, 24] } }), data), /tensor "w": data_offsets \[0, 24\] hold 24 bytes but F16 \[3, 2\] needs 12/);
  });
  it('offsets outside the data section', () => {
    bad(rawFile(entry({ w: { dtype: 'F32', shape: [4], data_offsets: [16, 32] } }), data), /tensor "w": data_offsets \[16, 32\] reach past the 24-byte data section/);
  });
  it('overlapping tensors', () => {
    const h = entry({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [12, 20] } });
    bad(rawFile(h, data), /tensor "b": data overlaps tensor "a"/);
    // holes are allowed, and empty tensors overlap nothing
    const holes = entry({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] }, e: { dtype: 'F32', shape: [0], data_offsets: [8, 8] } });
    expect(parseSafetensors(rawFile(holes, data), 'holes').names()).toEqual(['a', 'b', 'e']);
  });
  it('bad __metadata__', () => {
    bad(rawFile(entry({ __metadata__: { format: 1 } }), data), /__metadata__ value for "format" is 1, not a string/);
    bad(rawFile(entry({ __metadata__: ['pt'] }), data), /__metadata__ is not an object/);
  });
  it('duplicate tensor names and unknown fields', () => {
    const h = '{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}';
    bad(rawFile(h, data), /header lists "w" twice/);
    bad(rawFile(entry({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4], offset: 3 } }), data), /tensor "w": unknown field "offset"/);
    bad(rawFile(entry({ w: 3 }), data), /tensor "w": entry is not an object/);
  });
  it('asking for a missing tensor names it and suggests neighbours', () => {
    const f = parseSafetensors(readFileSync(FILES.unet), FILES.unet);
    expect(() => f.getF32('conv_in.wieght')).toThrow(/diffusion_pytorch_model\.safetensors, tensor "conv_in\.wieght": no such tensor \(684 tensors; similar: conv_in\.bias, conv_in\.weight\)/);
  });
  it('a missing file names the path', async () => {
    await expect(readSafetensorsFile('/nonexistent/x.safetensors')).rejects.toThrow(/safetensors \/nonexistent\/x\.safetensors: cannot read/);
  });
});

describe('safetensors: sharded index', () => {
  let dir: string;
  let tensors: Record<string, SafetensorsEntry>;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'silo-shards-'));
    const f = parseSafetensors(readFileSync(FILES.unet), FILES.unet);
    tensors = {};
    for (const n of f.names().slice(0, 60)) tensors[n] = { dtype: f.info(n).dtype, shape: f.info(n).shape, data: f.getRaw(n) };
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes shards + index to a temp dir and reads every tensor back from the right shard', async () => {
    const { index, shards } = shardSafetensors(tensors, 64 * 1024, 'diffusion_pytorch_model');
    const files = Object.keys(shards);
    expect(files.length).toBeGreaterThan(2);
    for (const [file, bytes] of Object.entries(shards)) await writeFile(join(dir, file), bytes);
    const indexPath = join(dir, 'diffusion_pytorch_model.safetensors.index.json');
    await writeFile(indexPath, JSON.stringify(index));
    const idx = await readSafetensorsIndex(indexPath);
    expect(idx.names()).toEqual(Object.keys(tensors).sort());
    expect(idx.metadata['total_size']).toBe(Object.values(tensors).reduce((s, t) => s + t.data.byteLength, 0));
    for (const [n, t] of Object.entries(tensors)) {
      expect(idx.shardOf(n)).toBe(index.weight_map[n]);
      expect(idx.info(n).shape).toEqual(t.shape);
      expect(Array.from(idx.getF32(n))).toEqual(Array.from(t.data as Float32Array));
    }
    expect(() => idx.getF32('nope')).toThrow(/index\.json, tensor "nope": no such tensor in the index/);
  });

  it('errors name the index when a shard lacks a listed tensor, a tensor is in two shards, or a shard is missing', async () => {
    const a = serializeSafetensors({ x: f32Entry([1], [1]), y: f32Entry([2], [1]) });
    const b = serializeSafetensors({ y: f32Entry([3], [1]), z: f32Entry([4], [1]) });
    const shard = (file: string) => {
      if (file === 'a.safetensors') return parseSafetensors(a, file);
      if (file === 'b.safetensors') return parseSafetensors(b, file);
      throw new Error(`ENOENT ${file}`);
    };
    const load = (wm: Record<string, string>) => SafetensorsIndex.load({ metadata: {}, weight_map: wm }, 'ckpt/model.safetensors.index.json', shard);
    await expect(load({ x: 'a.safetensors', q: 'a.safetensors' })).rejects.toThrow(
      /ckpt\/model\.safetensors\.index\.json, tensor "q": index maps it to shard a\.safetensors, which does not hold it/,
    );
    await expect(load({ x: 'a.safetensors', z: 'b.safetensors' })).rejects.toThrow(
      /ckpt\/model\.safetensors\.index\.json, tensor "y": tensor is in two shards, a\.safetensors and b\.safetensors/,
    );
    await expect(load({ x: 'a.safetensors', w: 'c.safetensors' })).rejects.toThrow(/index\.json: shard c\.safetensors could not be loaded: ENOENT/);
    await expect(SafetensorsIndex.load({ metadata: {} }, 'i.json', shard)).rejects.toThrow(/i\.json: index has no weight_map/);
    await expect(SafetensorsIndex.load('{"weight_map": {"x": 3}}', 'i.json', shard)).rejects.toThrow(/i\.json, tensor "x": weight_map entry is 3/);
  });

  it('an index on disk pointing to a missing tensor', async () => {
    await writeFile(join(dir, 'one.safetensors'), serializeSafetensors({ x: f32Entry([1], [1]) }));
    const indexPath = join(dir, 'broken.safetensors.index.json');
    await writeFile(indexPath, JSON.stringify({ metadata: {}, weight_map: { x: 'one.safetensors', missing: 'one.safetensors' } }));
    await expect(readSafetensorsIndex(indexPath)).rejects.toThrow(/broken\.safetensors\.index\.json, tensor "missing": index maps it to shard one\.safetensors/);
  });
});

describe('safetensors: fetch sources', () => {
  it('parses a Response body and names the URL on HTTP errors', async () => {
    const bytes = serializeSafetensors({ x: f32Entry([1, 2], [2]) });
    const f = await fetchSafetensors(new Response(bytes));
    expect(Array.from(f.getF32('x'))).toEqual([1, 2]);
    const stub = vi.fn(async (url: string) => (url.endsWith('ok.safetensors') ? new Response(bytes) : new Response('nope', { status: 404, statusText: 'Not Found' })));
    vi.stubGlobal('fetch', stub);
    try {
      expect((await fetchSafetensors('https://example.invalid/w/ok.safetensors')).names()).toEqual(['x']);
      await expect(fetchSafetensors('https://example.invalid/w/missing.safetensors')).rejects.toThrow(
        /safetensors https:\/\/example\.invalid\/w\/missing\.safetensors: HTTP 404 Not Found/,
      );
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it('fetchSafetensorsIndex resolves shards relative to the index URL', async () => {
    const { index, shards } = shardSafetensors({ a: f32Entry([1], [1]), b: f32Entry([2, 3], [2]) }, 4, 'm');
    const served: Record<string, Uint8Array<ArrayBuffer> | string> = { 'https://h.invalid/ckpt/m.safetensors.index.json': JSON.stringify(index) };
    for (const [file, bytes] of Object.entries(shards)) served[`https://h.invalid/ckpt/${file}`] = bytes;
    vi.stubGlobal('fetch', async (url: string) => (url in served ? new Response(served[url]!) : new Response('', { status: 404 })));
    try {
      const idx = await fetchSafetensorsIndex('https://h.invalid/ckpt/m.safetensors.index.json');
      expect(Object.keys(shards)).toEqual(['m-00001-of-00002.safetensors', 'm-00002-of-00002.safetensors']);
      expect(Array.from(idx.getF32('b'))).toEqual([2, 3]);
      delete served['https://h.invalid/ckpt/m-00002-of-00002.safetensors'];
      await expect(fetchSafetensorsIndex('https://h.invalid/ckpt/m.safetensors.index.json')).rejects.toThrow(
        /safetensors https:\/\/h\.invalid\/ckpt\/m\.safetensors\.index\.json: shard m-00002-of-00002\.safetensors could not be loaded: .*HTTP 404/,
      );
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

describe('safetensors: upload to the GPU', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await getEngine();
  });

  it('F16 file -> f32 tensor, and F32 file -> f32 tensor, read back exactly', async () => {
    const dec = await readSafetensorsFile(FILES.taefDec);
    const t = dec.toTensor(engine, '1.weight');
    expect(t.dtype).toBe('f32');
    expect(t.shape).toEqual([64, 32, 3, 3]);
    expect(Array.from(await t.read())).toEqual(Array.from(dec.getF32('1.weight')));
    t.dispose();
    const unet = await readSafetensorsFile(FILES.unet);
    const u = unet.toTensor(engine, 'conv_out.bias');
    expect(Array.from(await u.read())).toEqual(Array.from(unet.getF32('conv_out.bias')));
    u.dispose();
  });

  it('F16 file -> f16 tensor uploads the bits unchanged (needs shader-f16)', async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 upload: this adapter has no shader-f16');
      ctx.skip();
    }
    const dec = await readSafetensorsFile(FILES.taefDec);
    const t = dec.toTensor(engine, '1.bias', 'f16');
    expect(t.dtype).toBe('f16');
    expect(Array.from(await t.read())).toEqual(Array.from(dec.getF32('1.bias')));
    const dtypes: SafetensorsDType[] = ['BF16', 'F32'];
    for (const dt of dtypes) {
      const f = parseSafetensors(serializeSafetensors({ v: f32Entry([0.5, -3, 1 / 3], [3], dt as 'F32' | 'BF16') }), dt);
      const h = f.toTensor(engine, 'v', 'f16');
      expect(Array.from(await h.read())).toEqual(Array.from(f.getF32('v')).map((x) => f16BitsToF32(f32ToF16Bits(x))));
    }
    // A finite value beyond f16's range is refused by name (not uploaded as Inf, then blamed on the file).
    const wide = parseSafetensors(serializeSafetensors({ w: f32Entry([1, 70000, -1e6, 65504], [4]) }), 'wide.safetensors');
    expect(() => wide.toTensor(engine, 'w', 'f16')).toThrow(/wide\.safetensors, tensor "w": 2 value\(s\) beyond f16's range \(±65504\): load it in f32/);
    const w32 = wide.toTensor(engine, 'w', 'f32');
    expect(Array.from(await w32.read())).toEqual([1, 70000, -1e6, 65504]);
    w32.dispose();
  });

  it('transposed uploads (nn.Linear weights held [in, out]): F32, F16 and BF16 files, f32 and f16 tensors', async () => {
    // [2, 3] row-major: [[0.5, -3, 1/3], [7, 0.25, -1]] -> [3, 2]: [[0.5, 7], [-3, 0.25], [1/3, -1]]
    const values = [0.5, -3, 1 / 3, 7, 0.25, -1];
    const order = [0, 3, 1, 4, 2, 5];
    const targets: ('f32' | 'f16')[] = engine.hasF16 ? ['f32', 'f16'] : ['f32'];
    for (const dt of ['F32', 'F16', 'BF16'] as const) {
      const f = parseSafetensors(serializeSafetensors({ w: f32Entry(values, [2, 3], dt), b: f32Entry([1, 2], [2], dt) }), `t-${dt}.safetensors`);
      const stored = f.getF32('w');
      for (const target of targets) {
        const t = f.toTensorTransposed(engine, 'w', target);
        expect(t.shape).toEqual([3, 2]);
        expect(t.dtype).toBe(target);
        const want = order.map((i) => (target === 'f16' ? f16BitsToF32(f32ToF16Bits(stored[i]!)) : stored[i]!));
        expect(Array.from(await t.read()), `${dt} -> ${target}`).toEqual(want);
        t.dispose();
      }
      expect(() => f.toTensorTransposed(engine, 'b', 'f32')).toThrow(new RegExp(`t-${dt}\\.safetensors, tensor "b": only a matrix .* can be held transposed, this one is \\[2\\]`));
    }
    // A 1x1 convolution's weight [2, 3, 1, 1] (proj_in / proj_out) is held as [3, 2, 1, 1]; a 3x3 one is refused.
    const conv = parseSafetensors(serializeSafetensors({ w: f32Entry(values, [2, 3, 1, 1]), k: f32Entry(new Array(18).fill(1), [1, 2, 3, 3]) }), 'conv.safetensors');
    const tc = conv.toTensorTransposed(engine, 'w', 'f32');
    expect(tc.shape).toEqual([3, 2, 1, 1]);
    expect(Array.from(await tc.read())).toEqual(order.map((i) => Math.fround(values[i]!)));
    tc.dispose();
    expect(() => conv.toTensorTransposed(engine, 'k', 'f32')).toThrow(/conv\.safetensors, tensor "k": only a matrix .* this one is \[1, 2, 3, 3\]/);
    if (engine.hasF16) {
      const wide = parseSafetensors(serializeSafetensors({ w: f32Entry([1, 70000, 3, 4], [2, 2]) }), 'wide.safetensors');
      expect(() => wide.toTensorTransposed(engine, 'w', 'f16')).toThrow(/wide\.safetensors, tensor "w": 1 value\(s\) beyond f16's range/);
    }
  });
});

describe('safetensors: headers with very many names are validated in linear time', () => {
  // A header of `n` names; `entry(i)` gives each value's JSON. Built as one string, no file written.
  const manyKeys = (n: number, entry: (i: number) => string, extra = '') => {
    const parts = new Array<string>(n);
    for (let i = 0; i < n; i++) parts[i] = `"${i}":${entry(i)}`;
    return rawFile(`{${parts.join(',')}${extra}}`, new Uint8Array(0));
  };

  // The hang guard is the per-test timeout: the quadratic duplicate check took 11.5 s for 160k names
  // and over two minutes for 1M.
  it('160k valid empty tensors parse', { timeout: 30_000 }, () => {
    const f = parseSafetensors(manyKeys(160_000, () => '{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'), 'many.safetensors');
    expect(f.names().length).toBe(160_000);
    expect(f.info('159999')).toMatchObject({ dtype: 'F32', shape: [0], byteLength: 0 });
  });

  it('1M names (9 MB header) are refused with a SafetensorsError, not a hang', { timeout: 30_000 }, () => {
    const bytes = manyKeys(1_000_000, () => '0');
    expect(bytes.byteLength).toBeGreaterThan(8_000_000);
    expect(() => parseSafetensors(bytes, 'million.safetensors')).toThrow(SafetensorsError);
    expect(() => parseSafetensors(bytes, 'million.safetensors')).toThrow(/million\.safetensors, tensor "0": entry is not an object/);
  });

  it('a duplicate at the end of 1M names is still found', { timeout: 30_000 }, () => {
    const bytes = manyKeys(1_000_000, () => '0', ',"123456":1');
    expect(() => parseSafetensors(bytes, 'dup.safetensors')).toThrow(/dup\.safetensors: header lists "123456" twice/);
  });

  it('a duplicate spelled with an escape is still a duplicate', () => {
    const h = '{"a": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}, "\\u0061": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}';
    expect(() => parseSafetensors(rawFile(h, new Uint8Array(0)), 'esc')).toThrow(/esc: header lists "a" twice/);
  });

  it('shapes whose byte size is beyond 2^53 are refused by name', () => {
    const h = JSON.stringify({ w: { dtype: 'F64', shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 8] } });
    expect(() => parseSafetensors(rawFile(h, new Uint8Array(8)), 'huge')).toThrow(/huge, tensor "w": F64 \[1073741824, 1073741824, 1073741824\] would need .* bytes, beyond 2\^53/);
  });
});

describe('safetensors: sharded index shard names stay inside the folder', () => {
  it('refuses a weight_map entry that climbs out of the folder', async () => {
    const shard = () => parseSafetensors(serializeSafetensors({ x: f32Entry([1], [1]) }), 's');
    for (const file of ['../secret.safetensors', 'a/../../b.safetensors', '/etc/passwd', 'C:\\x.safetensors']) {
      await expect(SafetensorsIndex.load({ weight_map: { x: file } }, 'm/index.json', shard)).rejects.toThrow(/m\/index\.json, tensor "x": weight_map entry .* points outside the index's folder/);
    }
  });
});
