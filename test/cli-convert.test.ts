// `silo convert`: .pth -> .safetensors, in-process (convertCheckpoint, main) and through the bundled CLI.
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertCheckpoint } from '../src/cli/convert.js';
import { main, SUBCOMMANDS, type CliIO } from '../src/cli/silo.js';
import { parseSafetensors } from '../src/formats/safetensors.js';
import { f16BitsToF32 } from '../src/engine/dtype.js';
import { TorchCheckpoint } from '../src/formats/torch-checkpoint.js';
import { buildCheckpoint, PickleWriter, specPickle, tensorSpec } from './helpers/torch-fixtures.js';
import { GOLDEN_ROOT } from './helpers/golden.js';
// @ts-expect-error plain ESM script without types
import { bundle } from '../scripts/build.mjs';

const TAEF2 = `${GOLDEN_ROOT}/taef2`;
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'silo-convert-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Data section (after the header) of a safetensors file. */
function dataSection(b: Uint8Array): Uint8Array {
  const n = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
  return b.subarray(8 + n);
}

function capture(): CliIO & { outText: () => string; errText: () => string } {
  const out: string[] = [];
  const err: string[] = [];
  return { out: (l) => out.push(l), err: (l) => err.push(l), outText: () => out.join('\n'), errText: () => err.join('\n') };
}

describe('convertCheckpoint on the TAEF2 checkpoints', () => {
  for (const part of ['encoder', 'decoder']) {
    it(`taef2_${part}.pth -> safetensors with byte-identical tensor data`, async () => {
      const out = join(dir, `${part}.safetensors`);
      const r = await convertCheckpoint(`${TAEF2}/taef2_${part}.pth`, out);
      expect(r.tensors).toBe(79);
      expect(r.dtypes).toEqual({ F16: 79 });
      expect(r.skipped).toEqual([]);
      const got = new Uint8Array(readFileSync(out));
      const ref = new Uint8Array(readFileSync(`${TAEF2}/taef2_${part}.safetensors`));
      const a = parseSafetensors(got, out);
      const b = parseSafetensors(ref, 'golden');
      expect(a.names()).toEqual(b.names());
      for (const n of a.names()) {
        expect(a.info(n).shape, n).toEqual(b.info(n).shape);
        expect(a.info(n).dtype, n).toBe('F16');
        expect(Buffer.compare(a.getBytes(n), b.getBytes(n)), n).toBe(0);
      }
      expect(r.dataBytes).toBe(dataSection(ref).length);
      expect(Buffer.compare(dataSection(got), dataSection(ref))).toBe(0);
      // Same canonical layout as safetensors' own save_file: the whole file matches.
      expect(Buffer.compare(got, ref)).toBe(0);
    });
  }
});

describe('silo CLI (in-process)', () => {
  it('convert writes the file and reports what it wrote', async () => {
    const io = capture();
    const out = join(dir, 'cli-enc.safetensors');
    expect(await main(['convert', `${TAEF2}/taef2_encoder.pth`, out], io)).toBe(0);
    expect(io.outText()).toMatch(/79 tensors \(79 F16\), 2677056 bytes of data/);
    expect(existsSync(out)).toBe(true);
  });

  it('usage errors exit 2 with the usage; help exits 0', async () => {
    const cases: [string[], RegExp][] = [
      [[], /usage: silo <command>/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['convert', 'only-one.pt'], /expected an input and an output path.*\n.*usage: silo convert/s],
      [['convert', 'a.pt', 'b.safetensors', '--dtype', 'f8'], /--dtype f8: expected f32, f16 or bf16/],
      [['convert', '--bogus', 'a', 'b'], /Unknown option '--bogus'/],
    ];
    for (const [argv, msg] of cases) {
      const io = capture();
      expect(await main(argv, io), argv.join(' ')).toBe(2);
      expect(io.errText()).toMatch(msg);
    }
    const io = capture();
    expect(await main(['convert', '--help'], io)).toBe(0);
    expect(io.outText()).toBe(SUBCOMMANDS.convert!.usage);
  });

  it('a malicious checkpoint fails with exit 1, names the file and the global, and writes nothing', async () => {
    const evil = join(dir, 'evil.pt');
    const pkl = new PickleWriter().proto(2).global('os', 'system').str(`touch ${join(dir, 'pwned')}`).raw(0x85).reduce().stop().bytes();
    writeFileSync(evil, buildCheckpoint(pkl, {}).bytes);
    const out = join(dir, 'evil.safetensors');
    const io = capture();
    expect(await main(['convert', evil, out], io)).toBe(1);
    expect(io.errText()).toMatch(new RegExp(`silo convert: pickle ${evil}:archive/data\\.pkl at byte 2: refused global os\\.system`));
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(dir, 'pwned'))).toBe(false);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('--key selects a nested state dict and --dtype casts floats only', async () => {
    const half = new Uint16Array([0x3c00, 0xc000, 0x3555, 0x7bff]); // 1, -2, ~0.333, 65504
    const longs = new BigInt64Array([5n, -7n]);
    const spec = {
      dict: [
        ['model', { dict: [['ema', { dict: [['h', tensorSpec('HalfStorage', '0', 4, [2, 2], [1, 2])], ['n', tensorSpec('LongStorage', '1', 2, [2])]] }]] }],
        ['other', { dict: [['h', tensorSpec('HalfStorage', '0', 4, [4])]] }],
      ],
    } as const;
    const src = join(dir, 'nested.pt');
    writeFileSync(src, buildCheckpoint(specPickle(spec as never), { '0': new Uint8Array(half.buffer), '1': new Uint8Array(longs.buffer) }).bytes);
    const out = join(dir, 'nested.safetensors');
    const io = capture();
    // Without --key the 'model' wrapper is found and flattened with '.'.
    expect(await main(['convert', src, out], io)).toBe(0);
    expect(parseSafetensors(readFileSync(out), out).names()).toEqual(['ema.h', 'ema.n']);
    expect(await main(['convert', src, out, '--key', 'model/ema', '--dtype', 'f32'], io)).toBe(0);
    expect(io.outText()).toMatch(/2 tensors \(1 F32, 1 I64\).*from key model\/ema/);
    const f = parseSafetensors(readFileSync(out), out);
    expect(f.names()).toEqual(['h', 'n']);
    expect(f.info('h')).toMatchObject({ dtype: 'F32', shape: [2, 2] });
    // Transposed view [[h0, h2], [h1, h3]], widened exactly.
    expect([...f.getF32('h')]).toEqual([0, 2, 1, 3].map((i) => f16BitsToF32(half[i]!)));
    expect(f.info('n').dtype).toBe('I64');
    expect([...(f.getRaw('n') as BigInt64Array)]).toEqual([5n, -7n]);
    const missing = capture();
    expect(await main(['convert', src, out, '--key', 'model/nope'], missing)).toBe(1);
    expect(missing.errText()).toMatch(/nested\.pt: key path model\/nope not found \(available: ema\)/);
  });

  it('refuses to overwrite its own input', async () => {
    const io = capture();
    const p = join(dir, 'same.pt');
    writeFileSync(p, buildCheckpoint(specPickle({ dict: [['w', tensorSpec('ByteStorage', '0', 1, [1])]] }), { '0': new Uint8Array(1) }).bytes);
    expect(await main(['convert', p, p], io)).toBe(1);
    expect(io.errText()).toMatch(/output path is the input path/);
  });
});

describe('bundled CLI (dist/silo.mjs as package.json "bin" runs it)', () => {
  it('node silo.mjs convert works end to end', async () => {
    const exe = await bundle('src/cli/silo.ts', join(dir, 'silo.mjs'), 'node');
    expect(readFileSync(exe, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    const out = join(dir, 'bundled.safetensors');
    const r = spawnSync(process.execPath, [exe, 'convert', `${TAEF2}/taef2_decoder.pth`, out], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/79 tensors/);
    expect(Buffer.compare(readFileSync(out), readFileSync(`${TAEF2}/taef2_decoder.safetensors`))).toBe(0);
    const bad = spawnSync(process.execPath, [exe, 'convert', '/nonexistent.pt', out], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/\/nonexistent\.pt: cannot open/);
  });
});

describe('silo convert never changes values silently', () => {
  /** A checkpoint with F32 tensors "big" (overflows f16), "ok", and an F16 tensor "h". */
  function overflowCheckpoint(path: string, big: number[]) {
    const ok = new Float32Array([0.5, -2, 100]);
    const h = new Uint16Array([0x3c00, 0x4000]); // 1, 2
    const spec = {
      dict: [
        ['big', tensorSpec('FloatStorage', '0', big.length, [big.length])],
        ['ok', tensorSpec('FloatStorage', '1', 3, [3])],
        ['h', tensorSpec('HalfStorage', '2', 2, [2])],
      ],
    } as const;
    const storages = { '0': new Uint8Array(new Float32Array(big).buffer), '1': new Uint8Array(ok.buffer), '2': new Uint8Array(h.buffer) };
    writeFileSync(path, buildCheckpoint(specPickle(spec as never), storages).bytes);
  }

  it('--dtype f16 refuses values beyond ±65504 by default, naming the tensor, the count and the largest magnitude', async () => {
    const src = join(dir, 'overflow.pt');
    overflowCheckpoint(src, [1, 1e10, -7e4, 65519, 3]); // 65519 rounds to 65504: not an overflow
    const out = join(dir, 'overflow.safetensors');
    writeFileSync(out, 'previous output');
    const io = capture();
    expect(await main(['convert', src, out, '--dtype', 'f16'], io)).toBe(1);
    expect(io.errText()).toMatch(/1 tensor\(s\) hold values beyond F16's ±65504, which would become ±inf:\n {2}"big": 2 value\(s\), largest magnitude 1\.000e\+10/);
    expect(io.errText()).toMatch(/--overflow saturate clamps them/);
    expect(io.errText()).not.toMatch(/"ok"/);
    expect(readFileSync(out, 'utf8')).toBe('previous output');
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    // The library call refuses the same way.
    await expect(convertCheckpoint(src, out, { dtype: 'F16' })).rejects.toThrow(/"big": 2 value\(s\)/);
  });

  it('--overflow saturate clamps to ±65504 and says so; --overflow inf writes ±inf and says so', async () => {
    const src = join(dir, 'overflow2.pt');
    overflowCheckpoint(src, [1, 1e10, -7e4, 65519, 3]);
    const out = join(dir, 'saturated.safetensors');
    const io = capture();
    expect(await main(['convert', src, out, '--dtype', 'f16', '--overflow', 'saturate'], io)).toBe(0);
    expect(io.errText()).toMatch(/warning: "big": 2 value\(s\) beyond F16's ±65504 clamped to ±65504 \(largest magnitude 1\.000e\+10\)/);
    const f = parseSafetensors(readFileSync(out), out);
    expect(f.info('big').dtype).toBe('F16');
    expect([...f.getF32('big')]).toEqual([1, 65504, -65504, 65504, 3]);
    expect([...f.getF32('ok')]).toEqual([0.5, -2, 100]);
    const inf = capture();
    expect(await main(['convert', src, out, '--dtype', 'f16', '--overflow', 'inf'], inf)).toBe(0);
    expect(inf.errText()).toMatch(/warning: "big": 2 value\(s\) .* written as ±inf/);
    expect([...parseSafetensors(readFileSync(out), out).getF32('big')]).toEqual([1, Infinity, -Infinity, 65504, 3]);
    const bad = capture();
    expect(await main(['convert', src, out, '--overflow', 'wrap'], bad)).toBe(2);
    expect(bad.errText()).toMatch(/--overflow wrap: expected error, saturate or inf/);
  });

  it('NaN/Inf already in the source are refused by name; --allow-nonfinite keeps them with a warning', async () => {
    const src = join(dir, 'nonfinite.pt');
    overflowCheckpoint(src, [1, NaN, Infinity, -Infinity, 2]);
    const out = join(dir, 'nonfinite.safetensors');
    const io = capture();
    expect(await main(['convert', src, out], io)).toBe(1);
    expect(io.errText()).toMatch(/1 tensor\(s\) already hold NaN or Inf:\n {2}"big": 1 NaN, 2 Inf\n.*--allow-nonfinite/);
    expect(existsSync(out)).toBe(false);
    const ok = capture();
    expect(await main(['convert', src, out, '--allow-nonfinite'], ok)).toBe(0);
    expect(ok.errText()).toMatch(/warning: "big": kept 1 NaN and 2 Inf value\(s\) from the source/);
    const got = [...parseSafetensors(readFileSync(out), out).getF32('big')];
    expect(got[0]).toBe(1);
    expect(Number.isNaN(got[1])).toBe(true);
    expect(got.slice(2)).toEqual([Infinity, -Infinity, 2]);
  });

  it('a raw error (e.g. RangeError) while reading a tensor becomes a SiloError naming the input and tensor; nothing is written', async () => {
    const src = join(dir, 'rangeerror.pt');
    overflowCheckpoint(src, [1, 2]);
    const out = join(dir, 'rangeerror.safetensors');
    writeFileSync(out, 'previous output');
    const spy = vi.spyOn(TorchCheckpoint.prototype, 'tensorBytes').mockRejectedValue(new RangeError('Array buffer allocation failed'));
    try {
      const io = capture();
      expect(await main(['convert', src, out], io)).toBe(1);
      expect(io.errText()).toBe(`silo convert: torch checkpoint ${src}: tensor "big": cannot read its data: Array buffer allocation failed`);
    } finally {
      spy.mockRestore();
    }
    expect(readFileSync(out, 'utf8')).toBe('previous output');
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('expanded views and oversized declarations are refused by default; --allow-expanded and --max-tensor-bytes lift that', async () => {
    // One 4-element storage viewed as [64, 4] with stride [0, 1]: 1 KiB of output from 16 stored bytes.
    const src = join(dir, 'expanded.pt');
    const base = new Float32Array([1, -2, 3, 0.5]);
    const spec = { dict: [['w', tensorSpec('FloatStorage', '0', 4, [64, 4], [0, 1])]] } as const;
    writeFileSync(src, buildCheckpoint(specPickle(spec as never), { '0': new Uint8Array(base.buffer) }).bytes);
    const out = join(dir, 'expanded.safetensors');
    const refused = capture();
    expect(await main(['convert', src, out], refused)).toBe(1);
    expect(refused.errText()).toMatch(/tensor "w" .* is an expanded view .*--allow-expanded/);
    expect(existsSync(out)).toBe(false);

    expect(await main(['convert', src, out, '--allow-expanded'], capture())).toBe(0);
    const w = parseSafetensors(readFileSync(out), out).getF32('w');
    expect(w.length).toBe(256);
    for (let r = 0; r < 64; r++) expect([...w.subarray(r * 4, r * 4 + 4)]).toEqual([...base]);

    // A cap below the tensors' 1 KiB refuses before reading; a spelling that is not a byte count is a usage error.
    const capped = capture();
    expect(await main(['convert', src, join(dir, 'capped.safetensors'), '--allow-expanded', '--max-tensor-bytes', '512'], capped)).toBe(1);
    expect(capped.errText()).toMatch(/maxTensorBytes cap of 512 bytes/);
    expect(await main(['convert', src, out, '--max-tensor-bytes', '0x400'], capture())).toBe(2);
    expect(await main(['convert', src, out, '--max-tensor-bytes', '0'], capture())).toBe(2);
  });

  it('the usage documents --overflow and --allow-nonfinite', () => {
    expect(SUBCOMMANDS.convert!.usage).toMatch(/--overflow +finite values too large for --dtype .*error \(default\)/);
    expect(SUBCOMMANDS.convert!.usage).toMatch(/saturate clamps/);
    expect(SUBCOMMANDS.convert!.usage).toMatch(/--allow-nonfinite +convert tensors that already hold NaN or Inf/);
  });
});
