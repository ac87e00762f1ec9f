// Weight files read through positional reads: files beyond 2 GiB (sparse, so no 2 GiB is written),
// reads in pieces, files that change or vanish after their header was read, no descriptor leaks,
// diffusers components from disk, and truncated HTTP bodies.
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { appendFileSync, closeSync, existsSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSafetensors, SafetensorsError, SafetensorsFile } from '../src/formats/safetensors.js';
import { fileByteReader, readSafetensorsFile } from '../src/formats/safetensors-node.js';
import { dirFolder } from '../src/formats/folder-node.js';
import { urlFolder } from '../src/formats/folder.js';
import { SiloError } from '../src/engine/errors.js';
import { openComponent } from '../src/models/diffusers-folder.js';
import { goldenDir } from './helpers/golden.js';

const UNET = `${goldenDir('unet_mini')}/diffusion_pytorch_model.safetensors`;
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'silo-large-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const PAD = 2 ** 31 + 4096; // bytes of a never-read U8 tensor, so "w" starts past the 2 GiB mark
const W = Float32Array.from({ length: 16 }, (_, i) => (i - 7.5) / 3);

/**
 * A sparse safetensors file: header (built by hand here, not by our writer), a hole of PAD bytes, then
 * the 64 bytes of "w". The file is PAD + 64 + header bytes long but only the header and "w" are written.
 */
function writeSparse(path: string): number {
  const header = JSON.stringify({
    pad: { dtype: 'U8', shape: [PAD], data_offsets: [0, PAD] },
    w: { dtype: 'F32', shape: [4, 4], data_offsets: [PAD, PAD + 64] },
  });
  const json = Buffer.from(header.padEnd(Math.ceil(header.length / 8) * 8, ' '));
  const head = Buffer.alloc(8 + json.length);
  head.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(head, 8);
  const size = head.length + PAD + 64;
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    writeSync(fd, head, 0, head.length, 0);
    writeSync(fd, new Uint8Array(W.buffer), 0, 64, head.length + PAD);
  } finally {
    closeSync(fd);
  }
  return size;
}

describe('safetensors files beyond 2 GiB', () => {
  it('a sparse 2 GiB+ file opens and a tensor past the 2 GiB mark reads back exactly', () => {
    const path = join(dir, 'sparse.safetensors');
    const size = writeSparse(path);
    expect(statSync(path).size).toBe(size);
    expect(size).toBeGreaterThan(2 ** 31);
    expect(statSync(path).blocks * 512).toBeLessThan(1 << 20); // really sparse: nothing near 2 GiB was written
    return readSafetensorsFile(path).then((f) => {
      expect(f.names()).toEqual(['pad', 'w']);
      expect(f.info('pad').byteLength).toBe(PAD);
      expect(Array.from(f.getF32('w'))).toEqual(Array.from(W));
    });
  });

  it('through a diffusers folder component on disk', async () => {
    const unet = join(dir, 'sd/unet');
    mkdirSync(unet, { recursive: true });
    writeFileSync(join(unet, 'config.json'), '{}');
    writeSparse(join(unet, 'diffusion_pytorch_model.safetensors'));
    const progress: Array<[number, number | null]> = [];
    const c = await openComponent(dirFolder(join(dir, 'sd')), 'unet', { onProgress: (p) => progress.push([p.loaded, p.total]) });
    expect(c.file).toBe('unet/diffusion_pytorch_model.safetensors');
    expect(Array.from(c.weights.getF32('w'))).toEqual(Array.from(W));
    expect(progress.at(-1)![0]).toBeGreaterThan(2 ** 31);
  });
});

describe('safetensors read on demand from disk', () => {
  it('reads in small pieces give the same bytes as the file in memory (every golden UNet tensor)', async () => {
    const mem = parseSafetensors(readFileSync(UNET), UNET);
    const disk = SafetensorsFile.open(await fileByteReader(UNET, 1001), UNET);
    expect(disk.names()).toEqual(mem.names());
    for (const n of mem.names()) expect(Buffer.compare(disk.getBytes(n), mem.getBytes(n)), n).toBe(0);
    expect(Array.from(disk.getF32('conv_in.weight'))).toEqual(Array.from(mem.getF32('conv_in.weight')));
  });

  it('a file that changes size after its header was read is an error naming the file and tensor', async () => {
    const path = join(dir, 'changing.safetensors');
    writeFileSync(path, readFileSync(UNET));
    const f = await readSafetensorsFile(path);
    f.getF32('conv_in.bias');
    appendFileSync(path, new Uint8Array(8));
    const err = (() => {
      try {
        f.getF32('conv_in.bias');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(SafetensorsError);
    expect((err as Error).message).toMatch(/changing\.safetensors, tensor "conv_in\.bias": cannot read .*changed on disk since its header was read/);
  });

  it('a file removed after opening, and a truncated file, are errors naming the file', async () => {
    const path = join(dir, 'gone.safetensors');
    writeFileSync(path, readFileSync(UNET));
    const f = await readSafetensorsFile(path);
    rmSync(path);
    expect(() => f.getRaw('conv_in.bias')).toThrow(/gone\.safetensors, tensor "conv_in\.bias": cannot read .*ENOENT/);
    const cut = join(dir, 'cut.safetensors');
    const bytes = readFileSync(UNET);
    writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
    await expect(readSafetensorsFile(cut)).rejects.toThrow(/cut\.safetensors, tensor ".*": data_offsets .* reach past the .*-byte data section \(truncated file\?\)/);
    await expect(readSafetensorsFile(dir)).rejects.toThrow(SiloError);
  });

  it('leaves no file descriptor open', async (ctx) => {
    if (!existsSync('/proc/self/fd')) {
      console.log('SKIP descriptor count: no /proc/self/fd');
      ctx.skip();
    }
    const before = readdirSync('/proc/self/fd').length;
    for (let k = 0; k < 20; k++) {
      const f = await readSafetensorsFile(UNET);
      for (const n of f.names().slice(0, 20)) f.getF32(n);
    }
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });
});

describe('SafetensorsFile.open checks sizes before it reads or allocates', () => {
  /** A reader over `bytes` claiming `size` bytes, recording every read. */
  const fakeReader = (bytes: Uint8Array, size = bytes.byteLength) => {
    const reads: Array<[number, number]> = [];
    return {
      reads,
      reader: {
        size,
        read(offset: number, length: number) {
          reads.push([offset, length]);
          if (offset + length > bytes.byteLength) throw new Error(`EIO reading ${length} bytes at ${offset}`);
          return bytes.slice(offset, offset + length);
        },
      },
    };
  };
  const head = (n: bigint) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, n, true);
    return b;
  };

  it('an absurd header length, or one past the end of the file, is refused after reading only 8 bytes', () => {
    const absurd = fakeReader(head(2n ** 40n), 2 ** 45);
    expect(() => SafetensorsFile.open(absurd.reader, 'absurd.safetensors')).toThrow(/absurd\.safetensors: header length 1099511627776 is absurd/);
    expect(absurd.reads).toEqual([[0, 8]]);
    const past = fakeReader(head(5000n), 1000);
    expect(() => SafetensorsFile.open(past.reader, 'past.safetensors')).toThrow(/past\.safetensors: header length 5000 runs past the end of the 1000-byte file/);
    expect(past.reads).toEqual([[0, 8]]);
    const tiny = fakeReader(new Uint8Array(3));
    expect(() => SafetensorsFile.open(tiny.reader, 'tiny.safetensors')).toThrow(/tiny\.safetensors: file is 3 bytes, shorter than the 8-byte header length/);
    expect(tiny.reads).toEqual([]);
  });

  it('a header read that fails, and tensor offsets beyond the file, name the file; no tensor is read at open', () => {
    const text = new TextEncoder().encode(JSON.stringify({ w: { dtype: 'F32', shape: [2 ** 28], data_offsets: [0, 2 ** 30] } }));
    const bytes = new Uint8Array(8 + text.length);
    bytes.set(head(BigInt(text.length)));
    bytes.set(text, 8);
    const failing = fakeReader(bytes.subarray(0, 8), bytes.length);
    expect(() => SafetensorsFile.open(failing.reader, 'eio.safetensors')).toThrow(/eio\.safetensors: cannot read the header: EIO/);
    const short = fakeReader(bytes);
    expect(() => SafetensorsFile.open(short.reader, 'short.safetensors')).toThrow(/short\.safetensors, tensor "w": data_offsets \[0, 1073741824\] reach past the 0-byte data section/);
    expect(short.reads).toEqual([[0, 8], [8, text.length]]);
  });
});

describe('urlFolder downloads', () => {
  it('a body shorter than its Content-Length is an error naming the URL, with or without progress', async () => {
    vi.stubGlobal('fetch', async () => new Response(new Uint8Array(50), { headers: { 'content-length': '100' } }));
    try {
      const folder = urlFolder('https://h.invalid/m');
      await expect(folder.bytes('x.bin', () => undefined)).rejects.toThrow(/https:\/\/h\.invalid\/m\/x\.bin: received 50 of 100 bytes/);
      await expect(folder.bytes('x.bin')).rejects.toThrow(/https:\/\/h\.invalid\/m\/x\.bin: received 50 of 100 bytes/);
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it('streams into one buffer of the declared size and reports progress', async () => {
    const body = new Uint8Array(3000).map((_, i) => i & 255);
    vi.stubGlobal('fetch', async () => new Response(body, { headers: { 'content-length': '3000' } }));
    try {
      const seen: number[] = [];
      const got = await urlFolder('https://h.invalid/m').bytes('x.bin', (l, t) => {
        expect(t).toBe(3000);
        seen.push(l);
      });
      expect(Buffer.compare(got, body)).toBe(0);
      expect(seen.at(-1)).toBe(3000);
    } finally {
      vi.unstubAllGlobals();
    }
  });
});
