// `silo restore` end to end with the tiny golden models, restore() wrapped in a spy: what eta each
// method gets, that a failing run (restore() throwing, e.g. a diverged sampler) writes nothing, that a
// full disk while saving keeps the old files, and that transparent input pixels are composited over
// --background. A stand-in restore() (the measurement as the "restored" image) keeps each run to
// seconds; the real sampler's runs are in cli-restore.test.ts.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { SiloError } from '../src/engine/errors.js';
import * as restoreModule from '../src/restore/loop.js';
import * as atomic from '../src/formats/atomic-write-node.js';
import type { Engine } from '../src/engine/device.js';
import type { Tensor } from '../src/engine/tensor.js';
import { encodePng, decodePng } from '../src/io/png.js';
import { GOLDEN_ROOT } from './helpers/golden.js';

vi.mock('../src/restore/loop.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../src/restore/loop.js')>();
  return { ...m, restore: vi.fn(m.restore) };
});
vi.mock('../src/formats/atomic-write-node.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../src/formats/atomic-write-node.js')>();
  return { ...m, writeFilesAtomic: vi.fn(m.writeFilesAtomic) };
});
const restoreSpy = vi.mocked(restoreModule.restore);
const writeSpy = vi.mocked(atomic.writeFilesAtomic);
const realWriteFilesAtomic = (await vi.importActual<typeof import('../src/formats/atomic-write-node.js')>('../src/formats/atomic-write-node.js')).writeFilesAtomic;

const PHOTO = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;

function capture(): CliIO & { lines: string[]; errors: string[]; text(): string } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l), text: () => [...lines, ...errors].join('\n') };
}

type Opts = Parameters<typeof restoreModule.restore>[4];

/** restore() stand-in: records the options and y, "restores" y itself (same-size tasks only). */
function fakeRestore(seen: { opts?: Opts; y?: Float32Array }) {
  return async (engine: Engine, _m: unknown, _A: unknown, y: Tensor, opts: Opts) => {
    seen.opts = opts;
    const data = await y.read();
    seen.y = data;
    const phase = { ms: 1, dispatches: 1, autoencoderDispatches: 0, peakLiveBytes: 0 };
    return {
      image: engine.tensor(data, y.shape, 'f32', 'fake_image'),
      latent: engine.tensor(new Float32Array(4 * 64), [1, 4, 8, 8], 'f32', 'fake_latent'),
      report: {
        method: opts.method,
        steps: opts.steps,
        timesteps: [1, 1] as [number, number],
        encode: phase,
        loop: { ...phase, perStepMs: 1, perStepDispatches: 1, replayedSteps: 0, perStepEncodeMs: 1, perStepExposedEncodeMs: 1 },
        decode: phase,
        previews: { count: 0, ms: 0, dispatches: 0 },
        residuals: [],
        finalResidual: 0,
        forwardMode: 'reuse' as const,
        unetTapeBytes: 0,
      },
    };
  };
}

/** Stops a run at restore(), after recording its options. */
function stopAtRestore(seen: { opts?: Opts }) {
  return async (_e: unknown, _m: unknown, _A: unknown, _y: unknown, opts: Opts): Promise<never> => {
    seen.opts = opts;
    throw new SiloError('restore: stopped by the test');
  };
}

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'silo-run-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const base = (method: string, task: string, extra: string[] = []) => ['restore', '--golden', GOLDEN_ROOT, '--method', method, '--ground-truth', PHOTO, '--task', task, '--steps', '1', '--quiet', '--out', join(tmp, 'unused.png'), ...extra];

describe('silo restore: eta defaults follow the method', () => {
  it('latent-dps 1.0, SILO the task\'s (0.5 sr4, 1.0 inpainting), --eta when given, psld none', async () => {
    const cases: [string, string, string[], number | undefined, RegExp][] = [
      ['latent-dps', 'sr4', ['--size', '64'], 1, /eta 1 \(Latent-DPS default\)/],
      ['latent-dps', 'sr4', ['--size', '64', '--eta', '0.25'], 0.25, /eta 0\.25 \(given\)/],
      ['psld', 'sr4', ['--size', '64'], undefined, /eta n\/a \(not used: PSLD/],
      ['silo-cnn', 'sr4', [], 0.5, /eta 0\.5 \(SILO's default for sr4\)/],
      ['silo-cnn', 'inpaint_center', [], 1, /eta 1 \(SILO's default for inpaint_center\)/],
    ];
    for (const [method, task, extra, eta, line] of cases) {
      const seen: { opts?: Opts } = {};
      restoreSpy.mockImplementationOnce(stopAtRestore(seen));
      const io = capture();
      expect(await main(base(method, task, extra), io), io.text()).toBe(1);
      expect(seen.opts?.eta, `${method} ${task} ${extra.join(' ')}`).toBe(eta);
      expect(io.text()).toMatch(line);
      if (method === 'psld') expect(io.lines.find((l) => l.startsWith('sr4:'))).not.toMatch(/eta/);
    }
  }, 300_000);
});

describe('silo restore outputs', () => {
  it('a run that fails writes nothing and keeps an existing output', async () => {
    const dir = join(tmp, 'fail');
    mkdirSync(dir);
    writeFileSync(join(dir, 'out.png'), 'the previous result');
    restoreSpy.mockImplementationOnce(async () => {
      throw new SiloError('restore: the residual norm became NaN at step 0 (t=999); the sampler diverged');
    });
    const io = capture();
    const code = await main(['restore', '--golden', GOLDEN_ROOT, '--method', 'latent-dps', '--ground-truth', PHOTO, '--size', '64', '--steps', '1', '--quiet', '--out', join(dir, 'out.png'), '--report', join(dir, 'r.json'), '--measurement-out', join(dir, 'y.png')], io);
    expect(code).toBe(1);
    expect(io.errors.join('\n')).toBe('silo restore: restore: the residual norm became NaN at step 0 (t=999); the sampler diverged');
    expect(readdirSync(dir)).toEqual(['out.png']);
    expect(readFileSync(join(dir, 'out.png'), 'utf8')).toBe('the previous result');
    expect(io.lines.some((l) => /written/.test(l))).toBe(false);
  }, 120_000);

  it('a full disk while saving keeps the old files, leaves no temporary file and names the path', async () => {
    const dir = join(tmp, 'full');
    mkdirSync(dir);
    writeFileSync(join(dir, 'out.png'), 'old png');
    restoreSpy.mockImplementationOnce(fakeRestore({}));
    writeSpy.mockImplementationOnce((files) =>
      realWriteFilesAtomic(files, async (handle, bytes) => {
        if (bytes[0] === 0x7b /* '{': the JSON report, staged last */) {
          await handle.write(bytes, 0, 10);
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        }
        await handle.writeFile(bytes);
      }),
    );
    const io = capture();
    const code = await main(['restore', '--golden', GOLDEN_ROOT, '--method', 'latent-dps', '--ground-truth', PHOTO, '--size', '64', '--steps', '1', '--quiet', '--out', join(dir, 'out.png'), '--report', join(dir, 'r.json')], io);
    expect(code).toBe(1);
    expect(io.errors.join('\n')).toBe(`silo restore: cannot write ${join(dir, 'r.json')}: no space left on device (ENOSPC)`);
    expect(readdirSync(dir)).toEqual(['out.png']);
    expect(readFileSync(join(dir, 'out.png'), 'utf8')).toBe('old png');
  }, 120_000);

  it('a successful run writes every output whole and records the eta and background used', async () => {
    const dir = join(tmp, 'ok');
    mkdirSync(dir);
    writeFileSync(join(dir, 'out.png'), 'old png');
    restoreSpy.mockImplementationOnce(fakeRestore({}));
    const io = capture();
    const code = await main(['restore', '--golden', GOLDEN_ROOT, '--method', 'latent-dps', '--ground-truth', PHOTO, '--size', '64', '--steps', '1', '--quiet', '--out', join(dir, 'out.png'), '--report', join(dir, 'r.json'), '--measurement-out', join(dir, 'y.png')], io);
    expect(code, io.text()).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['out.png', 'r.json', 'y.png']);
    const png = await decodePng(readFileSync(join(dir, 'out.png')), 'out.png');
    expect([png.width, png.height, png.channels]).toEqual([64, 64, 3]);
    const report = JSON.parse(readFileSync(join(dir, 'r.json'), 'utf8'));
    expect(report.settings.eta).toBe(1);
    expect(report.settings.eta_from).toBe('Latent-DPS default');
    expect(report.settings.background).toBe('#ffffff');
    expect(io.lines.filter((l) => / written to /.test(l))).toEqual([`measurement written to ${join(dir, 'y.png')}`, `restored image written to ${join(dir, 'out.png')}`, `report written to ${join(dir, 'r.json')}`]);
  }, 120_000);
});

describe('silo restore: transparency', () => {
  // 64x64 RGBA measurement: columns 0-15 transparent red, 16-31 opaque (10, 20, 30), 32-63 half-transparent (200, 100, 0, 128).
  const rgba = new Uint8Array(64 * 64 * 4);
  for (let i = 0; i < 64 * 64; i++) {
    const x = i % 64;
    rgba.set(x < 16 ? [255, 0, 0, 0] : x < 32 ? [10, 20, 30, 255] : [200, 100, 0, 128], i * 4);
  }
  /** y's value (in [-1, 1]) at channel c of a pixel in column x. */
  const at = (y: Float32Array, c: number, x: number) => Math.round((y[c * 4096 + 5 * 64 + x]! + 1) * 127.5);

  it('composites transparent pixels over --background (default white) instead of using the hidden RGB', async () => {
    const input = join(tmp, 'alpha.png');
    writeFileSync(input, await encodePng({ width: 64, height: 64, channels: 4, data: rgba }));
    // Hand-computed: transparent -> the background; opaque kept; alpha 128 over white:
    // (200*128 + 255*127) / 255 = 227.39 -> 227, (100*128 + 255*127) / 255 = 177.2 -> 177, (0 + 255*127) / 255 = 127.
    const want: Record<string, [number[], number[], number[]]> = {
      '': [[255, 255, 255], [10, 20, 30], [227, 177, 127]],
      black: [[0, 0, 0], [10, 20, 30], [100, 50, 0]], // 200*128/255 = 100.4, 100*128/255 = 50.2
      '#336699': [[0x33, 0x66, 0x99], [10, 20, 30], [126, 101, 76]], // (200*128 + 51*127)/255 = 125.8; (100*128 + 102*127)/255 = 101.0; (153*127)/255 = 76.2
    };
    for (const [bg, [clear, opaque, half]] of Object.entries(want)) {
      const seen: { y?: Float32Array } = {};
      restoreSpy.mockImplementationOnce(fakeRestore(seen));
      const io = capture();
      const args = ['restore', '--golden', GOLDEN_ROOT, '--method', 'latent-dps', '--input', input, '--task', 'gaussian_blur', '--steps', '1', '--quiet', '--out', join(tmp, `alpha-out${bg.replace('#', '')}.png`)];
      if (bg) args.push('--background', bg);
      expect(await main(args, io), io.text()).toBe(0);
      expect(io.lines).toContain(`${input}: has transparent pixels; composited over ${bg === '' ? '#ffffff' : bg === 'black' ? '#000000' : bg} (--background)`);
      for (let c = 0; c < 3; c++) {
        expect(at(seen.y!, c, 3), `bg ${bg} transparent c${c}`).toBe(clear[c]);
        expect(at(seen.y!, c, 20), `bg ${bg} opaque c${c}`).toBe(opaque[c]);
        expect(at(seen.y!, c, 40), `bg ${bg} half c${c}`).toBe(half[c]);
      }
    }
  }, 300_000);
});
