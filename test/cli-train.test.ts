// `silo train` in-process with the real TAEF2 autoencoder on a few photos: the output folder (checkpoint,
// operator, loss.csv, validation.json, curve.svg, the latent cache), resuming from the checkpoint with the
// history continued, a resume with other settings refused, and every argument mistake a usage error that
// names the flag before anything runs.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { parseSafetensors } from '../src/formats/safetensors.js';
import { inferDegradationConfig } from '../src/models/silo/config.js';
import { GOLDEN_ROOT } from './helpers/golden.js';
import { parseTrainArgs } from '../src/cli/train.js';
import { miniSdFolder } from './helpers/sd-folder.js';

const IMAGES = new URL('../../shared/assets/images', import.meta.url).pathname;
const TAEF2 = `${GOLDEN_ROOT}/taef2`;

function capture(): CliIO & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l) };
}

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'silo-train-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const base = (out: string) => [
  'train', '--task', 'gaussian_blur',
  '--encoder', `${TAEF2}/taef2_encoder.safetensors`, '--decoder', `${TAEF2}/taef2_decoder.safetensors`,
  '--data', `${IMAGES}/faces256`, '--data', `${IMAGES}/natural/kodim03.png`,
  '--validate', `${IMAGES}/faces256/ffhq_69037.png`,
  '--size', '32', '--batch', '2', '--lr', '1e-3', '--cache', '4', '--val-every', '2', '--checkpoint-every', '2', '--quiet',
  '--out', out,
];

describe('silo train', () => {
  it('writes the checkpoint, the operator, the curves and the cache; a resume continues the history', async () => {
    const out = join(tmp, 'run');
    const io = capture();
    const code = await main([...base(out), '--steps', '4', '--cache-file', join(out, 'cache.safetensors')], io);
    expect(io.errors.join('\n')).toBe('');
    expect(code).toBe(0);
    const text = io.lines.join('\n');
    expect(text).toMatch(/5 training images, 1 held out, 32x32 crops, cache of 4 crops/);
    expect(text).toMatch(/validation at step 4: held-out latent L1 [\d.]+ \(identity [\d.]+, ratio [\d.]+\); decoded PSNR/);
    expect(text).toMatch(/finished at step 4/);
    const ckpt = parseSafetensors(readFileSync(join(out, 'checkpoint.safetensors')), 'ckpt');
    expect(ckpt.metadata?.['step']).toBe('4');
    const op = parseSafetensors(readFileSync(join(out, 'operator.safetensors')), 'operator');
    expect(inferDegradationConfig(op)).toMatchObject({ latentDim: 32, outputDim: 32, latentSize: 4, sigmaCondition: true, sigmaEmbDim: 320 });
    for (const n of op.names()) expect(op.getF32(n)).toEqual(ckpt.getF32(n));
    expect(readFileSync(join(out, 'loss.csv'), 'utf8').trim().split('\n').length).toBe(5);
    expect((JSON.parse(readFileSync(join(out, 'validation.json'), 'utf8')) as { step: number }[]).map((v) => v.step)).toEqual([0, 2, 4]);
    expect(readFileSync(join(out, 'curve.svg'), 'utf8')).toMatch(/^<svg/);
    const cacheTime = statSync(join(out, 'cache.safetensors')).mtimeMs;

    // Resume to 6 steps: the cache file is reused (not rewritten), loss.csv continues.
    const io2 = capture();
    expect(await main([...base(out), '--steps', '6', '--cache-file', join(out, 'cache.safetensors'), '--resume', join(out, 'checkpoint.safetensors')], io2)).toBe(0);
    expect(io2.lines.join('\n')).toMatch(/resumed at step 4/);
    expect(io2.lines.join('\n')).not.toMatch(/latent cache written/);
    expect(statSync(join(out, 'cache.safetensors')).mtimeMs).toBe(cacheTime);
    const rows = readFileSync(join(out, 'loss.csv'), 'utf8').trim().split('\n').slice(1);
    expect(rows.map((r) => Number(r.split(',')[0]))).toEqual([1, 2, 3, 4, 5, 6]);
    // The validations before the resume stay; the resumed run validates its first step again, once.
    expect((JSON.parse(readFileSync(join(out, 'validation.json'), 'utf8')) as { step: number }[]).map((v) => v.step)).toEqual([0, 2, 4, 6]);
    expect(parseSafetensors(readFileSync(join(out, 'checkpoint.safetensors')), 'c').metadata?.['step']).toBe('6');

    // Other settings: refused, naming what differs; the checkpoint is untouched.
    const io3 = capture();
    expect(await main([...base(out), '--steps', '8', '--lr', '5e-3', '--resume', join(out, 'checkpoint.safetensors')].filter((a, i, all) => !(a === '--lr' && all[i + 1] === '1e-3') && !(a === '1e-3' && all[i - 1] === '--lr')), io3)).toBe(1);
    expect(io3.errors.join('\n')).toMatch(/checkpoint.safetensors: the checkpoint was trained with train_settings/);
  }, 600_000);

  it('--model: a diffusers folder\'s VAE is the encoder and its UNet\'s time embedding gives e_sigma', async () => {
    const sd = join(tmp, 'sd');
    mkdirSync(sd);
    symlinkSync(`${GOLDEN_ROOT}/vae_mini`, join(sd, 'vae'));
    symlinkSync(`${GOLDEN_ROOT}/unet_mini`, join(sd, 'unet'));
    const out = join(tmp, 'sd-run');
    const io = capture();
    const code = await main(['train', '--task', 'sr4', '--model', sd, '--data', `${IMAGES}/faces256`, '--validate', `${IMAGES}/natural/kodim03.png`, '--size', '32', '--batch', '2', '--steps', '3', '--quiet', '--out', out], io);
    expect(io.errors.join('\n')).toBe('');
    expect(code).toBe(0);
    expect(io.lines.join('\n')).toMatch(/operator for sd-vae \(4 channels, \/8, scaled by 0.18215\)/);
    const op = parseSafetensors(readFileSync(join(out, 'operator.safetensors')), 'op');
    expect(inferDegradationConfig(op)).toMatchObject({ latentDim: 4, latentSize: 4, sigmaEmbDim: 128 });
    expect(op.metadata?.['sigma_embedding']).toBe('unet time embedding (128)');
  }, 300_000);

  it('--operator readout: trains on the prior UNet\'s features and writes the folder silo restore --operator reads', async () => {
    const sd = miniSdFolder(tmp, 'sd-full');
    const out = join(tmp, 'rg-run');
    const io = capture();
    const code = await main(['train', '--operator', 'readout', '--task', 'sr4', '--model', sd, '--data', `${IMAGES}/faces256`, '--validate', `${IMAGES}/natural/kodim03.png`, '--size', '64', '--batch', '2', '--steps', '2', '--quiet', '--out', out], io);
    expect(io.errors.join('\n')).toBe('');
    expect(code).toBe(0);
    expect(io.lines.join('\n')).toMatch(/training readout operator for sd-vae/);
    expect(io.lines.join('\n')).toMatch(/operator written to .*rg-run\/operator$/m);
    const cfg = JSON.parse(readFileSync(join(out, 'operator/config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg).toMatchObject({ _class_name: 'AggregationNetwork', latent_size: 8, output_head_channels: 4, sigma_emb_dim: 128, sigma_condition: true });
    const meta = parseSafetensors(readFileSync(join(out, 'checkpoint.safetensors')), 'c').metadata!;
    expect(JSON.parse(meta['prior']!)).toMatchObject({ timestep: 0, prompt: '' });
    expect(JSON.parse(meta['train_settings']!)).toMatchObject({ operator: 'readout', lr: 2e-4, sigmaRange: [0, 0.1] });
    // restore runs SILO-RG with it on the same prior (64x64: the operator's 8x8 latent).
    const rio = capture();
    const rcode = await main(['restore', '--model', sd, '--method', 'silo-rg', '--operator', join(out, 'operator'), '--task', 'sr4', '--ground-truth', `${IMAGES}/natural/kodim03.png`, '--size', '64', '--steps', '2', '--quiet', '--out', join(tmp, 'rg.png')], rio);
    expect(rio.errors.join('\n')).toBe('');
    expect(rcode).toBe(0);
    expect(rio.lines.join('\n')).toMatch(/readout operator .*rg-run\/operator/);
    expect(existsSync(join(tmp, 'rg.png'))).toBe(true);
  }, 600_000);

  it('motion_blur trains with its kernel file; the kernel is in the checkpoint and a resume with another is refused', async () => {
    const kernel = join(tmp, 'motion.txt');
    // A 7x7 diagonal streak as a text matrix (normalised on load).
    writeFileSync(kernel, Array.from({ length: 7 }, (_, i) => Array.from({ length: 7 }, (_, j) => (i === j ? 1 : i === j + 1 ? 0.5 : 0)).join(' ')).join('\n'));
    const out = join(tmp, 'motion-run');
    const args = ['train', '--task', 'motion_blur', '--kernel', kernel, '--encoder', `${TAEF2}/taef2_encoder.safetensors`, '--data', `${IMAGES}/faces256`, '--size', '32', '--batch', '2', '--quiet', '--out', out];
    const io = capture();
    expect(await main([...args, '--steps', '2'], io)).toBe(0);
    expect(io.errors.join('\n')).toBe('');
    const meta = parseSafetensors(readFileSync(join(out, 'checkpoint.safetensors')), 'c').metadata!;
    expect(meta['kernel']).toMatch(/^7x7 fnv1a:[0-9a-f]{8}$/);
    const other = join(tmp, 'motion2.txt');
    writeFileSync(other, Array.from({ length: 7 }, (_, i) => Array.from({ length: 7 }, (_, j) => (i === j ? 1 : 0)).join(' ')).join('\n'));
    const io2 = capture();
    expect(await main([...args.map((a) => (a === kernel ? other : a)), '--steps', '3', '--resume', join(out, 'checkpoint.safetensors')], io2)).toBe(1);
    expect(io2.errors.join('\n')).toMatch(/checkpoint.safetensors: the checkpoint was trained with kernel 7x7 fnv1a:[0-9a-f]{8}; this run has 7x7 fnv1a:/);
    const io3 = capture();
    expect(await main(args.map((a) => (a === kernel ? join(tmp, 'no-kernel.npy') : a === out ? join(tmp, 'y') : a)), io3)).toBe(1);
    expect(io3.errors.join('\n')).toMatch(/--kernel .*no-kernel\.npy: no such file/);
    expect(existsSync(join(tmp, 'y'))).toBe(false);
  }, 300_000);

  it('missing files are errors that name them', async () => {
    const io = capture();
    expect(await main(['train', '--task', 'sr4', '--encoder', `${TAEF2}/taef2_encoder.safetensors`, '--data', join(tmp, 'nowhere'), '--out', join(tmp, 'x')], io)).toBe(1);
    expect(io.errors.join('\n')).toMatch(/--data .*nowhere: no such file or folder/);
    const io2 = capture();
    expect(await main(['train', '--task', 'sr4', '--encoder', join(tmp, 'enc.safetensors'), '--data', `${IMAGES}/faces256`, '--out', join(tmp, 'x')], io2)).toBe(1);
    expect(io2.errors.join('\n')).toMatch(/enc.safetensors/);
    expect(existsSync(join(tmp, 'x'))).toBe(false);
  });

  const usage: [string[], RegExp][] = [
    [['--encoder', 'e', '--data', 'd', '--out', 'o'], /--task is required/],
    [['--task', 'denoise', '--encoder', 'e', '--data', 'd', '--out', 'o'], /--task denoise: expected one of/],
    [['--task', 'sr4', '--data', 'd', '--out', 'o'], /--encoder \(a TAESD-family encoder .*\) or --model \(a diffusers SD folder\) is required/],
    [['--task', 'sr4', '--encoder', 'e', '--model', 'm', '--data', 'd', '--out', 'o'], /--encoder and --model: give one autoencoder/],
    [['--task', 'sr4', '--encoder', 'e', '--out', 'o'], /--data is required/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd'], /--out is required/],
    [['--operator', 'readout', '--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o'], /--operator readout reads the prior UNet's features: it needs --model/],
    [['--operator', 'readout', '--task', 'sr4', '--model', 'm', '--width', '2', '--data', 'd', '--out', 'o'], /--width widens the CNN operator only/],
    [['--operator', 'rg', '--task', 'sr4'], /--operator rg: expected cnn or readout/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', '--jitter', '0.1,0.2'], /--jitter 0.1,0.2: expected brightness,contrast,saturation,hue/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', '--jitter', '0,0,0,0.9'], /--jitter 0.9: expected a number in 0..0.5/],
    [['--task', 'motion_blur', '--encoder', 'e', '--data', 'd', '--out', 'o'], /--task motion_blur needs --kernel <file>/],
    [['--task', 'sr4', '--kernel', 'k.npy', '--encoder', 'e', '--data', 'd', '--out', 'o'], /--kernel is only used by --task motion_blur \(the task is sr4\)/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', '--crop-scale', '0.5'], /--crop-scale 0.5: expected lo,hi/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', '--crop-scale', '0,1'], /--crop-scale 0: expected a number > 0/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', '--crop-scale', '0.9,0.5'], /--crop-scale 0.9,0.5: lo must not exceed hi/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', '--width', '1.5'], /--width "1.5": expected an integer/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', '--cache-file', 'c'], /--cache-file needs --cache N/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', '--steps', '10', '--steps', '20'], /--steps given more than once/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', '--lr', '0'], /--lr 0: expected a number > 0/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', '--schedule', 'cosine', '--warmup', '50', '--steps', '50'], /--warmup 50: must be below --steps 50/],
    [['--task', 'sr4', '--encoder', 'e', '--data', 'd', '--out', 'o', 'extra.png'], /unexpected argument\(s\) extra.png/],
  ];
  for (const [args, re] of usage) {
    it(`usage error: ${args.join(' ')}`, async () => {
      const io = capture();
      expect(await main(['train', ...args], io)).toBe(2);
      expect(io.errors.join('\n')).toMatch(re);
    });
  }

  it('--operator readout takes SILO\'s readout defaults (AdamW lr 2e-4, sigma ~ U(0, 0.1)); flags override them', () => {
    const v = { operator: 'readout', task: 'sr4', model: 'm', data: ['d'], out: 'o' };
    expect(parseTrainArgs(v).settings).toMatchObject({ operator: 'readout', lr: 2e-4, sigmaRange: [0, 0.1], batch: 16 });
    expect(parseTrainArgs({ ...v, lr: '1e-3', 'sigma-max': '0.05' }).settings).toMatchObject({ lr: 1e-3, sigmaRange: [0, 0.05] });
  });

  it('--crop-scale sets the crop sampler\'s area range (SILO\'s 0.75..1 without it)', () => {
    const v = { task: 'gaussian_blur', encoder: 'e', data: ['d'], out: 'o' };
    expect(parseTrainArgs(v).settings.cropScale).toEqual([0.75, 1]);
    expect(parseTrainArgs({ ...v, 'crop-scale': '0.2, 1' }).settings.cropScale).toEqual([0.2, 1]);
  });

  it('--width widens the operator; width 1 (SILO\'s module) leaves the settings as before', () => {
    const v = { task: 'gaussian_blur', encoder: 'e', data: ['d'], out: 'o' };
    expect(parseTrainArgs(v).settings.width).toBeUndefined();
    expect(parseTrainArgs({ ...v, width: '1' }).settings.width).toBeUndefined();
    expect(parseTrainArgs({ ...v, width: '2' }).settings.width).toBe(2);
  });

  it('--help prints the usage', async () => {
    const io = capture();
    expect(await main(['train', '--help'], io)).toBe(0);
    expect(io.lines.join('\n')).toMatch(/silo train --task <task> \(--encoder <encoder.safetensors> \| --model <sd folder>\)/);
  });
});
