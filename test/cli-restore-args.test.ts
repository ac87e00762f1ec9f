// `silo restore` / `silo check` argument checking: strict numbers, ranges, conflicting or ignored flags
// and clashing paths are errors with the usage (exit 2) or name the path (exit 1), all found before the
// GPU starts: Engine.create is spied on and must never be called here, so these tests take milliseconds.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { Engine } from '../src/engine/device.js';
import { parseNumberArg } from '../src/cli/numbers.js';
import { encodePng } from '../src/io/png.js';
import { GOLDEN_ROOT } from './helpers/golden.js';

const PHOTO = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;

function capture(): CliIO & { lines: string[]; errors: string[]; text(): string } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l), text: () => errors.join('\n') };
}

let tmp: string;
const engineCreate = vi.spyOn(Engine, 'create');
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'silo-args-'));
  engineCreate.mockImplementation(() => {
    throw new Error('Engine.create must not be reached by an argument error');
  });
});
afterEach(() => expect(engineCreate).not.toHaveBeenCalled());
afterAll(() => {
  engineCreate.mockRestore();
  rmSync(tmp, { recursive: true, force: true });
});

/** A restore command line that is valid apart from `extra` (later flags are appended, not replaced). */
function restoreArgs(extra: string[], base: { out?: string; gt?: boolean; method?: string } = {}): string[] {
  return [
    'restore',
    '--golden',
    GOLDEN_ROOT,
    '--method',
    base.method ?? 'latent-dps',
    ...(base.gt === false ? [] : ['--ground-truth', PHOTO]),
    '--out',
    base.out ?? join(tmp, 'out.png'),
    ...extra,
  ];
}

async function expectUsage(args: string[], message: RegExp): Promise<void> {
  const io = capture();
  expect(await main(args, io), `${args.join(' ')}: ${io.text()}`).toBe(2);
  expect(io.text()).toMatch(message);
  expect(io.text()).toMatch(/usage: silo /);
  expect(io.text()).not.toMatch(/unexpected error|\n\s+at /);
}

describe('parseNumberArg', () => {
  it('takes plain decimals only', () => {
    expect(parseNumberArg('x', '42', { integer: true })).toBe(42);
    expect(parseNumberArg('x', '-0.5')).toBe(-0.5);
    expect(parseNumberArg('x', '1e-3')).toBe(0.001);
    expect(parseNumberArg('x', '.25')).toBe(0.25);
    expect(parseNumberArg('x', '+3', { integer: true })).toBe(3);
    for (const bad of ['', ' ', ' 5', '5 ', '0x10', '0x1', '1_000', '5px', 'Infinity', '-Infinity', 'NaN', '1e', '0b11', '--1', '1,5']) {
      expect(() => parseNumberArg('x', bad), JSON.stringify(bad)).toThrow(/^--x ".*": expected a number$/);
    }
    for (const bad of ['1.5', '1e3', '2.0']) expect(() => parseNumberArg('x', bad, { integer: true }), bad).toThrow(/expected an integer/);
    expect(() => parseNumberArg('x', '1e999')).toThrow(/expected a finite number/);
    expect(() => parseNumberArg('x', '9007199254740993', { integer: true })).toThrow(/at most 9007199254740991/);
    expect(() => parseNumberArg('x', '0', { above: 0 })).toThrow(/expected a number > 0/);
    expect(() => parseNumberArg('x', '1000', { integer: true, min: 1, max: 999 })).toThrow(/expected an integer in 1\.\.999/);
  });
});

describe('silo restore arguments', () => {
  it('numbers: strict spellings and ranges, before anything loads', async () => {
    await expectUsage(restoreArgs(['--size', '0']), /--size 0: expected an image side in pixels > 0/);
    await expectUsage(restoreArgs(['--size', '70']), /--size 70: expected a multiple of 8 \(the VAE's latent factor\); nearest valid sizes: 64 or 72/);
    await expectUsage(restoreArgs(['--size', '4']), /--size 4: .*nearest valid sizes: 8$/m);
    await expectUsage(restoreArgs(['--size', '64.0']), /--size "64\.0": expected an image side/);
    await expectUsage(restoreArgs(['--steps', '0x1']), /--steps "0x1": expected a number of steps/);
    await expectUsage(restoreArgs(['--steps', '0']), /--steps 0: expected a number of steps .* in 1\.\.999/);
    await expectUsage(restoreArgs(['--steps', '1000']), /--steps 1000: expected a number of steps .* in 1\.\.999/);
    await expectUsage(restoreArgs(['--steps', '']), /--steps "": expected/);
    await expectUsage(restoreArgs(['--steps', ' 5']), /--steps " 5": expected/);
    await expectUsage(restoreArgs(['--eta=-5']), /--eta -5: expected a step size > 0/);
    await expectUsage(restoreArgs(['--eta', '0']), /--eta 0: expected a step size > 0/);
    await expectUsage(restoreArgs(['--eta', 'Infinity']), /--eta "Infinity": expected a step size/);
    await expectUsage(restoreArgs(['--sigma=-0.1']), /--sigma -0\.1: expected a noise level >= 0/);
    await expectUsage(restoreArgs(['--sigma', 'NaN']), /--sigma "NaN"/);
    await expectUsage(restoreArgs(['--seed', 'abc']), /--seed "abc": expected a non-negative integer seed/);
    await expectUsage(restoreArgs(['--seed=-1']), /--seed -1: expected a non-negative integer seed >= 0/);
    await expectUsage(restoreArgs(['--seed', '1.5']), /--seed "1\.5"/);
    await expectUsage(restoreArgs(['--seed', '99999999999999999999']), /--seed .*at most 9007199254740991/);
    await expectUsage(restoreArgs(['--cfg', '1e999']), /--cfg "1e999": expected a finite number/);
    await expectUsage(restoreArgs(['--activation-budget', '0']), /--activation-budget 0: expected a number of MiB > 0/);
    await expectUsage(restoreArgs(['--dtype', 'bf16']), /--dtype bf16: expected f32, f16 or auto/);
    await expectUsage(restoreArgs(['--activation-budget=-5']), /--activation-budget -5/);
  });

  it('names, conflicting and silently ignored flags', async () => {
    await expectUsage(restoreArgs(['--method', 'dps']), /--method given more than once/);
    await expectUsage(['restore', '--golden', GOLDEN_ROOT, '--method', 'dps', '--ground-truth', PHOTO], /--method dps: expected one of silo-cnn, silo-rg, latent-dps, psld/);
    await expectUsage(restoreArgs(['--task', 'deblur']), /--task deblur: expected one of gaussian_blur/);
    await expectUsage(restoreArgs(['--forward', 'keep']), /--forward keep: expected auto, reuse or recompute/);
    await expectUsage(restoreArgs(['--steps', '10', '--steps', '20']), /--steps given more than once/);
    await expectUsage(restoreArgs(['--input', PHOTO]), /--input and --ground-truth both given/);
    await expectUsage(restoreArgs([], { gt: false }), /give --input <measurement> or --ground-truth <image>/);
    await expectUsage(restoreArgs(['--model', tmp]), /--model and --golden both given/);
    // Without --model/--golden/--operator the task's released SILO operator is used: none for some tasks and methods.
    await expectUsage(['restore', '--ground-truth', PHOTO, '--task', 'avgpool4'], /SILO released no operator for avgpool4: .*latent-dps and psld need no operator/);
    await expectUsage(['restore', '--ground-truth', PHOTO, '--task', 'sr4', '--method', 'silo-rg', '--dataset', 'coco'], /no released operator for sr4 with --method silo-rg \(coco\).*"preserve" CNN.*Use --method silo-cnn/);
    await expectUsage(['restore', '--ground-truth', PHOTO, '--offline', '--golden', GOLDEN_ROOT], /--offline applies to downloads/);
    await expectUsage(['restore', '--ground-truth', PHOTO, '--task', 'sr8', '--dataset', 'coco'], /no released operator for sr8 \(coco\)/);
    await expectUsage(['restore', '--ground-truth', PHOTO, '--dataset', 'imagenet'], /--dataset imagenet: expected ffhq or coco/);
    await expectUsage(restoreArgs(['--dataset', 'coco'], { method: 'silo-cnn' }), /--dataset picks one of SILO's released operators/);
    await expectUsage(restoreArgs(['--clamp'], { method: 'psld' }), /--clamp\/--no-clamp only apply to silo-cnn and silo-rg/);
    await expectUsage(restoreArgs(['--task', 'motion_blur']), /motion_blur needs --kernel/);
    await expectUsage(restoreArgs(['--kernel', PHOTO]), /--kernel is only used by --task motion_blur \(the task is gaussian_blur\)/);
    await expectUsage(restoreArgs(['--operator', PHOTO]), /--operator is only used by silo-cnn and silo-rg \(the method is latent-dps\)/);
    await expectUsage(restoreArgs(['--sigma-emb', PHOTO], { method: 'psld' }), /--sigma-emb is only used by silo-cnn and silo-rg/);
    await expectUsage(restoreArgs([], { method: 'silo-rg' }), /method silo-rg with --golden needs --operator/);
    await expectUsage(restoreArgs(['--eta', '0.5'], { method: 'psld' }), /--eta does not apply to psld/);
    await expectUsage(restoreArgs(['--negative-prompt', 'blurry']), /--negative-prompt has no effect with --cfg 1/);
    await expectUsage(restoreArgs(['--cfg-fix']), /--cfg-fix has no effect with --cfg 1/);
    await expectUsage(restoreArgs(['--forward', 'reuse', '--activation-budget', '64']), /--activation-budget only applies to --forward auto/);
    await expectUsage(restoreArgs(['--background', 'grey']), /--background "grey": expected white, black or #rrggbb/);
    await expectUsage(restoreArgs(['--background', '#12345']), /--background "#12345"/);
    await expectUsage(restoreArgs(['extra']), /--input and --ground-truth both given/); // a positional is the measurement
    await expectUsage(['restore', '--golden', GOLDEN_ROOT, PHOTO, 'extra'], /unexpected argument\(s\) extra: give one image to restore/);
    await expectUsage(['restore', '--golden', GOLDEN_ROOT, PHOTO, '--input', PHOTO], /give the measurement once/);
  });

  it("--task sr4 --method silo-cnn resolves to SILO's preserve CNN (offline with empty caches: named as missing, before the GPU)", async () => {
    const keys = ['SILO_CACHE', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE'] as const;
    const saved = keys.map((k) => process.env[k]);
    Object.assign(process.env, { SILO_CACHE: join(tmp, 'no-silo'), HF_HUB_CACHE: join(tmp, 'no-hub'), HF_HUB_OFFLINE: '1' });
    try {
      const io = capture();
      expect(await main(['restore', '--ground-truth', PHOTO, '--task', 'sr4', '--method', 'silo-cnn', '--out', join(tmp, 'p.png')], io), io.text()).toBe(1);
      expect(io.text()).toMatch(/SILO's operator sr_4_cnn_ffhq_operator \(sr4, silo-cnn\) is not in the cache/);
    } finally {
      keys.forEach((k, i) => (saved[i] === undefined ? delete process.env[k] : (process.env[k] = saved[i])));
    }
  });

  it('the help documents --background, the eta defaults and the output rules', async () => {
    const io = capture();
    expect(await main(['restore', '--help'], io)).toBe(0);
    const help = io.lines.join('\n');
    expect(help).toMatch(/--background\s+white\|black\|#rrggbb: .*\(default white\)/);
    expect(help).toMatch(/--eta .*SILO's for the task, 0\.5, or 1\.0 for inpainting;\n.*latent-dps 1\.0; psld has none/);
    expect(help).toMatch(/--size\s+image side, a multiple of 8/);
    expect(help).toMatch(/written only when the run succeeds/);
  });
});

describe('silo restore paths, checked before the GPU starts', () => {
  it('a missing output folder, a folder that is a file, an output that is a folder or a link', async () => {
    let io = capture();
    expect(await main(restoreArgs([], { out: join(tmp, 'no-such-dir', 'out.png') }), io)).toBe(1);
    expect(io.text()).toBe(`silo restore: --out ${join(tmp, 'no-such-dir', 'out.png')}: the folder ${join(tmp, 'no-such-dir')} does not exist`);
    writeFileSync(join(tmp, 'a-file'), 'x');
    io = capture();
    expect(await main(restoreArgs(['--report', join(tmp, 'a-file', 'r.json')]), io)).toBe(1);
    expect(io.text()).toMatch(/--report .*a-file\/r\.json: .*a-file is not a folder/);
    mkdirSync(join(tmp, 'taken.png'));
    io = capture();
    expect(await main(restoreArgs([], { out: join(tmp, 'taken.png') }), io)).toBe(1);
    expect(io.text()).toMatch(/--out .*taken\.png: exists and is a folder/);
    symlinkSync(join(tmp, 'elsewhere.png'), join(tmp, 'link.png'));
    io = capture();
    expect(await main(restoreArgs([], { out: join(tmp, 'link.png') }), io)).toBe(1);
    expect(io.text()).toMatch(/--out .*link\.png: exists and is a symbolic link/);
    io = capture();
    expect(await main(restoreArgs([], { out: `${tmp}/` }), io)).toBe(1);
    expect(io.text()).toMatch(/expected a file name, not a folder/);
  });

  it('missing inputs are named before anything loads', async () => {
    const io = capture();
    expect(await main(['restore', '--golden', GOLDEN_ROOT, '--method', 'latent-dps', '--ground-truth', join(tmp, 'nope.png'), '--out', join(tmp, 'o.png')], io)).toBe(1);
    expect(io.text()).toMatch(/--ground-truth .*nope\.png: no such file or directory \(ENOENT\)$/);
    expect(await main(['restore', '--golden', join(tmp, 'nowhere'), '--method', 'latent-dps', '--ground-truth', PHOTO, '--out', join(tmp, 'o.png')], io)).toBe(1);
    expect(io.text()).toMatch(/--golden .*nowhere: no such file or directory/);
    expect(await main(['restore', '--golden', PHOTO, '--method', 'latent-dps', '--ground-truth', PHOTO, '--out', join(tmp, 'o.png')], io)).toBe(1);
    expect(io.text()).toMatch(/--golden .*ffhq_69037\.png: not a folder/);
  });

  it('a measurement of the wrong shape or an unreadable kernel is named before anything loads', async () => {
    const y = join(tmp, 'y.png');
    writeFileSync(y, await encodePng({ width: 16, height: 8, channels: 3, data: new Uint8Array(16 * 8 * 3) }));
    const args = (extra: string[]) => ['restore', '--golden', GOLDEN_ROOT, '--method', 'latent-dps', '--out', join(tmp, 'o.png'), ...extra];
    let io = capture();
    expect(await main(args(['--input', y]), io)).toBe(1);
    expect(io.text()).toBe(`silo restore: ${y}: the measurement must be square, got 16x8`);
    writeFileSync(y, await encodePng({ width: 16, height: 16, channels: 3, data: new Uint8Array(16 * 16 * 3) }));
    io = capture();
    expect(await main(args(['--input', y, '--task', 'sr4', '--size', '128']), io)).toBe(1);
    expect(io.text()).toBe(`silo restore: ${y}: the measurement must be 32x32 for task sr4 at size 128, got 16x16`);
    mkdirSync(join(tmp, 'kernel-dir'));
    io = capture();
    expect(await main(args(['--ground-truth', PHOTO, '--task', 'motion_blur', '--kernel', join(tmp, 'kernel-dir')]), io)).toBe(1);
    expect(io.text()).toMatch(/^silo restore: --kernel .*kernel-dir: illegal operation on a directory \(EISDIR\)$/);
  });

  it('--out equal to --ground-truth (plain, ./a/../ spelling, symlinked folder, symlinked input) is refused', async () => {
    const photos = join(tmp, 'photos');
    mkdirSync(join(photos, 'sub'), { recursive: true });
    const gt = join(photos, 'me.png');
    writeFileSync(gt, 'not even read: the clash is found first');
    symlinkSync(photos, join(tmp, 'photos-link'));
    symlinkSync(gt, join(tmp, 'me-link.png'));
    const clash = /--out .* is the input --ground-truth .*; writing it would destroy the input/;
    for (const [input, out] of [
      [gt, gt],
      [gt, join(photos, 'sub', '..', 'me.png')],
      [gt, join(tmp, 'photos-link', 'me.png')],
      [join(tmp, 'me-link.png'), gt],
    ]) {
      await expectUsage(['restore', '--golden', GOLDEN_ROOT, '--method', 'latent-dps', '--ground-truth', input!, '--out', out!], clash);
    }
    expect(readdirSync(photos).sort()).toEqual(['me.png', 'sub']);
  });

  it('outputs differ from each other, from every input and lie outside model folders', async () => {
    const out = join(tmp, 'same.png');
    await expectUsage(restoreArgs(['--report', out], { out }), /--report .*same\.png and --out .*same\.png are the same file/);
    await expectUsage(restoreArgs(['--measurement-out', `${tmp}/./r.json`, '--report', join(tmp, 'r.json')]), /--measurement-out .*r\.json and --report .*r\.json are the same file/);
    writeFileSync(join(tmp, 'kernel.txt'), '1');
    await expectUsage(restoreArgs(['--task', 'motion_blur', '--kernel', join(tmp, 'kernel.txt'), '--report', join(tmp, 'kernel.txt')]), /--report .*kernel\.txt is the input --kernel/);
    await expectUsage(restoreArgs([], { out: join(GOLDEN_ROOT, 'vae_mini', 'config.json') }), /--out .*config\.json is inside the folder --golden/);
    await expectUsage(restoreArgs([], { out: join(GOLDEN_ROOT, 'new.png') }), /is inside the folder --golden/);
  });
});

describe('silo check arguments', () => {
  it('rejects an unknown --kind and repeated flags before the GPU starts', async () => {
    await expectUsage(['check', GOLDEN_ROOT, '--kind', 'unet2'], /--kind unet2: expected one of unet, vae, clip/);
    await expectUsage(['check', GOLDEN_ROOT, '--dtype', 'f16', '--dtype', 'f32'], /--dtype given more than once/);
    await expectUsage(['check', 'x', '--dtype', 'f64'], /--dtype f64: expected f32 or f16/);
  });
});
