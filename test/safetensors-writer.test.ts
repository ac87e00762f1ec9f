// The streaming safetensors writer: outputs beyond 4 GiB through a counting sink (no 4 GiB of memory
// or disk), byte-identical files, sizes it cannot write refused with SiloErrors (never RangeError),
// and atomic file writes that leave an existing output untouched on any failure.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  f32Entry,
  parseSafetensors,
  SafetensorsError,
  serializeSafetensors,
  writeSafetensors,
  type ByteSink,
  type SafetensorsEntry,
  type WritableEntry,
} from '../src/formats/safetensors.js';
import { writeSafetensorsFile } from '../src/formats/safetensors-node.js';
import { SiloError } from '../src/engine/errors.js';
import { OutputFileError } from '../src/formats/atomic-write-node.js';
import { goldenDir } from './helpers/golden.js';
import { rejection } from './helpers/rejection.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'silo-writer-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Counts bytes and keeps the first write (the header) and the last few bytes. */
function countingSink(): ByteSink & { total: number; first: Uint8Array | null; tail: number[] } {
  const s = {
    total: 0,
    first: null as Uint8Array | null,
    tail: [] as number[],
    write(b: Uint8Array) {
      if (!s.first) s.first = b.slice();
      s.total += b.byteLength;
      s.tail = [...s.tail, ...b.subarray(Math.max(0, b.byteLength - 8))].slice(-8);
    },
  };
  return s;
}

describe('writeSafetensors streams', () => {
  it('pushes 5 GiB of declared data from one repeated 64 MiB buffer through a counting sink', { timeout: 60_000 }, async () => {
    const piece = new Uint8Array(64 << 20).fill(7);
    const big = 5 * 2 ** 30;
    const sink = countingSink();
    const tensors: Record<string, WritableEntry> = {
      big: { dtype: 'U8', shape: [big], *chunks() {
        for (let done = 0; done < big; done += piece.byteLength) yield piece;
      } },
      small: f32Entry([1, 2, 3, 4], [2, 2]),
    };
    const written = await writeSafetensors(sink, tensors, { format: 'pt' }, 'five-gib.safetensors');
    const n = Number(new DataView(sink.first!.buffer).getBigUint64(0, true));
    expect(sink.first!.byteLength).toBe(8 + n);
    const header = JSON.parse(new TextDecoder().decode(sink.first!.subarray(8)));
    expect(header.big.data_offsets).toEqual([0, big]);
    expect(header.small.data_offsets).toEqual([big, big + 16]);
    expect(header.__metadata__).toEqual({ format: 'pt' });
    expect(sink.total).toBe(8 + n + big + 16);
    expect(written).toBe(sink.total);
    expect(sink.tail).toEqual([0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40]); // 3.0f, 4.0f little-endian
  });

  it('a producer that overruns, ends short or throws stops with a SiloError naming the target and tensor', async () => {
    const entry = (pieces: Uint8Array[]): WritableEntry => ({ dtype: 'U8', shape: [4], chunks: () => pieces });
    const cases: [WritableEntry, RegExp][] = [
      [entry([new Uint8Array(3), new Uint8Array(2)]), /out\.safetensors, tensor "t": the data runs past its 4 bytes/],
      [entry([new Uint8Array(3)]), /out\.safetensors, tensor "t": the data ended after 3 of its 4 bytes/],
      [{ dtype: 'U8', shape: [4], chunks() { throw new TypeError('producer broke'); } }, /out\.safetensors, tensor "t": producer broke/],
    ];
    for (const [t, re] of cases) {
      const e = await rejection(writeSafetensors(countingSink(), { t }, undefined, 'out.safetensors'));
      expect(e).toBeInstanceOf(SafetensorsError);
      expect(e.message).toMatch(re);
    }
  });

  it('sizes beyond what a file or an array can hold are SiloErrors, never RangeErrors', async () => {
    const never = () => {
      throw new Error('must not be asked for data');
    };
    const e = await rejection(writeSafetensors(countingSink(), { w: { dtype: 'U8', shape: [2 ** 40, 2 ** 20], chunks: never } }, undefined, 'huge.safetensors'));
    expect(e).toBeInstanceOf(SiloError);
    expect(e.message).toMatch(/huge\.safetensors, tensor "w": U8 \[1099511627776, 1048576\] would end at byte .* beyond the 2\^53 bytes/);
    // serializeSafetensors builds one array: 1 PiB does not fit in any runtime. The data view is a
    // stand-in that only claims its length; nothing that large is allocated.
    const claim = { buffer: new ArrayBuffer(0), byteOffset: 0, byteLength: 2 ** 50 } as ArrayBufferView;
    let thrown: unknown;
    try {
      serializeSafetensors({ w: { dtype: 'U8', shape: [2 ** 50], data: claim } });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(SiloError);
    expect((thrown as Error).message).toMatch(/do not fit in one array in this runtime; stream them with writeSafetensors/);
  });
});

describe('writeSafetensorsFile', () => {
  const tensors = (): Record<string, SafetensorsEntry> => {
    const g = parseSafetensors(readFileSync(`${goldenDir('unet_mini')}/diffusion_pytorch_model.safetensors`), 'unet');
    const out: Record<string, SafetensorsEntry> = {
      ints: { dtype: 'I64', shape: [3], data: new BigInt64Array([1n, -2n, 3n]) },
      half: f32Entry([0.5, -1, 65504], [3], 'F16'),
      empty: { dtype: 'F32', shape: [0], data: new Float32Array(0) },
    };
    for (const n of g.names().slice(0, 40)) out[n] = { dtype: g.info(n).dtype, shape: g.info(n).shape, data: g.getRaw(n) };
    return out;
  };

  it('writes files byte-identical to serializeSafetensors, whether entries are arrays or chunked streams', async () => {
    const t = tensors();
    const meta = { format: 'pt', note: 'ünï' };
    const ref = serializeSafetensors(t, meta);
    const a = join(dir, 'arrays.safetensors');
    expect(await writeSafetensorsFile(a, t, meta)).toBe(ref.byteLength);
    expect(Buffer.compare(readFileSync(a), ref)).toBe(0);
    // The same tensors as streams cut into odd 4099-byte pieces.
    const streamed: Record<string, WritableEntry> = {};
    for (const [n, e] of Object.entries(t)) {
      const bytes = new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength);
      streamed[n] = { dtype: e.dtype, shape: e.shape, *chunks() {
        for (let o = 0; o < bytes.byteLength; o += 4099) yield bytes.subarray(o, o + 4099);
      } };
    }
    const b = join(dir, 'streamed.safetensors');
    await writeSafetensorsFile(b, streamed, meta);
    expect(Buffer.compare(readFileSync(b), ref)).toBe(0);
  });

  it('a producer failing mid-write leaves the existing output untouched and no temporary file', async () => {
    const sub = join(dir, 'keep');
    mkdirSync(sub);
    const out = join(sub, 'model.safetensors');
    writeFileSync(out, 'previous contents');
    const failing: Record<string, WritableEntry> = {
      a: f32Entry([1, 2], [2]),
      b: { dtype: 'F32', shape: [1 << 20], *chunks() {
        yield new Uint8Array(1 << 20);
        throw new Error('disk read failed halfway');
      } },
    };
    const e = await rejection(writeSafetensorsFile(out, failing));
    expect(e).toBeInstanceOf(SiloError);
    expect(e.message).toContain(out);
    expect(e.message).toMatch(/tensor "b": disk read failed halfway/);
    expect(readFileSync(out, 'utf8')).toBe('previous contents');
    expect(readdirSync(sub)).toEqual(['model.safetensors']);
  });

  it('a beforeCommit that throws abandons the write the same way', async () => {
    const out = join(dir, 'vetoed.safetensors');
    writeFileSync(out, 'old');
    const veto = new SiloError('found a problem while streaming');
    await expect(writeSafetensorsFile(out, { a: f32Entry([1], [1]) }, undefined, { beforeCommit: () => { throw veto; } })).rejects.toBe(veto);
    expect(readFileSync(out, 'utf8')).toBe('old');
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('a missing target folder, or a target that is a folder, is a SiloError naming the path', async () => {
    const missing = join(dir, 'no/such/folder/out.safetensors');
    const e = await rejection(writeSafetensorsFile(missing, { a: f32Entry([1], [1]) }));
    expect(e).toBeInstanceOf(OutputFileError);
    expect(e.message).toContain(`cannot write ${missing}: `);
    expect(existsSync(join(dir, 'no'))).toBe(false);
    const folder = join(dir, 'a-folder');
    mkdirSync(folder);
    writeFileSync(join(folder, 'inside'), 'x');
    const f = await rejection(writeSafetensorsFile(folder, { a: f32Entry([1], [1]) }));
    expect(f).toBeInstanceOf(OutputFileError);
    expect(f.message).toContain(`cannot write ${folder}: `);
    expect(readdirSync(folder)).toEqual(['inside']);
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });
});
