// `silo restore` in-process on a real photo (../shared/assets) with the tiny golden models: it degrades
// the ground truth, restores it, writes a PNG and a JSON report whose dispatch counts show the
// autoencoder outside SILO's loop and inside the baselines'. Pixel-space methods run on 64x64 images
// (8x8 latents), every task once; SILO-CNN's golden operator fixes a 64x64 latent (512x512 image), so it
// runs one step on one task here (the golden silo_step case checks the step itself) (`npm run restore-matrix` runs the full matrix, see docs/restore.md).
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { decodePng } from '../src/io/png.js';
import { GOLDEN_ROOT } from './helpers/golden.js';

const SWIFTSHADER = /swiftshader/i.test(process.env['VK_ICD_FILENAMES'] ?? '');
const PHOTO = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;

function capture(): CliIO & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l) };
}

let tmp: string;
let kernel: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'silo-restore-'));
  // A 7x7 diagonal motion kernel as a text matrix (normalised on load).
  kernel = join(tmp, 'motion.txt');
  writeFileSync(kernel, Array.from({ length: 7 }, (_, i) => Array.from({ length: 7 }, (_, j) => (i === j ? 1 : i === j + 1 ? 0.5 : 0)).join(' ')).join('\n'));
});

interface Report {
  dispatches: { encode: number; loop: number; per_step: number; autoencoder_in_loop: number; decode: number };
  metrics: Record<string, number | null>;
  peak_gpu_bytes: Record<string, number>;
  timings_ms: Record<string, number>;
  settings: Record<string, unknown>;
  unet_forward: { mode: string; kept_activation_bytes: number };
}

async function run(method: string, task: string, extra: string[] = []): Promise<{ report: Report; png: Awaited<ReturnType<typeof decodePng>>; io: ReturnType<typeof capture> }> {
  const io = capture();
  const out = join(tmp, `${method}-${task}.png`);
  const reportPath = join(tmp, `${method}-${task}.json`);
  const args = ['restore', '--golden', GOLDEN_ROOT, '--method', method, '--ground-truth', PHOTO, '--task', task, '--out', out, '--report', reportPath, '--quiet', ...extra];
  if (task === 'motion_blur') args.push('--kernel', kernel);
  const code = await main(args, io);
  expect(code, `${method} ${task}: ${io.errors.join('\n')}`).toBe(0);
  const report = JSON.parse(readFileSync(reportPath, 'utf8')) as Report;
  const png = await decodePng(readFileSync(out), out);
  return { report, png, io };
}

const TASKS = ['gaussian_blur', 'motion_blur', 'sr4', 'sr8', 'inpaint_center', 'inpaint_random', 'jpeg10', 'avgpool4'];

// Each task runs once through the CLI, the two pixel-space baselines taking turns (every task and both
// methods, half the restorations of the full matrix; `npm run restore-matrix` runs all of it).
const TURNS: Record<string, string[]> = {
  'latent-dps': ['gaussian_blur', 'sr4', 'inpaint_center', 'avgpool4'],
  psld: ['motion_blur', 'sr8', 'inpaint_random', 'jpeg10'], // PSLD's gluing applies A's adjoint to y itself
};

describe('silo restore with the tiny golden models', () => {
  it('the baselines take turns over every task', () => {
    expect([...TURNS['latent-dps']!, ...TURNS['psld']!].sort()).toEqual([...TASKS].sort());
  });

  for (const method of ['latent-dps', 'psld']) {
    it(`${method}: ${TURNS[method]!.join(', ')} on a 64x64 crop of a real face, 1 step`, async () => {
      for (const task of TURNS[method]!) {
        // psld also exercises --forward recompute (the VJP re-runs the UNet forward).
        const { report, png } = await run(method, task, ['--size', '64', '--steps', '1', ...(method === 'psld' ? ['--forward', 'recompute'] : [])]);
        expect(report.unet_forward.mode).toBe(method === 'psld' ? 'recompute' : 'reuse');
        // The method's own eta: Latent-DPS 1.0 (not SILO's task value), PSLD none.
        expect(report.settings['eta']).toBe(method === 'psld' ? null : 1);
        expect(report.unet_forward.kept_activation_bytes).toBeGreaterThan(0);
        expect([png.width, png.height, png.channels]).toEqual([64, 64, 3]);
        // The pixel-space baselines decode (and PSLD encodes) inside every step.
        expect(report.dispatches.autoencoder_in_loop, `${method} ${task}`).toBeGreaterThan(0);
        expect(report.dispatches.decode).toBeGreaterThan(0);
        for (const k of ['psnr', 'psnr_y', 'ssim', 'consistency_psnr', 'consistency_psnr_vs_measurement']) {
          expect(Number.isFinite(report.metrics[k]), `${method} ${task} ${k} = ${report.metrics[k]}`).toBe(true);
        }
      }
    }, 900_000);
  }

  for (const task of ['sr4']) {
    it(`silo-cnn: ${task} at 512x512 (the golden operator's 64x64 latent), 1 step, no autoencoder in the loop`, async (ctx) => {
      if (SWIFTSHADER) {
        // Measured: over 15 minutes on SwiftShader (the mini UNet's attention over 4096 tokens); the golden
        // silo_step case checks the same step there. Reported as skipped, never as passed.
        console.log('SKIP silo-cnn at 512x512: too slow for SwiftShader (runs on lavapipe)');
        ctx.skip();
      }
      const { report, png, io } = await run('silo-cnn', task, ['--steps', '1']);
      expect([png.width, png.height]).toEqual([512, 512]);
      expect(report.dispatches.autoencoder_in_loop).toBe(0);
      expect(report.settings['eta']).toBe(0.5); // SILO's for sr4
      expect(report.dispatches.loop).toBeGreaterThan(0);
      // E(y) once before the loop (encoder dispatches), D(z_0) once after it.
      expect(report.dispatches.encode).toBeGreaterThan(50);
      expect(report.dispatches.decode).toBeGreaterThan(50);
      expect(io.lines.some((l) => /sigma embedding .*silo_cnn\/golden\.safetensors/.test(l))).toBe(true);
      expect(Number.isFinite(report.metrics['psnr'])).toBe(true);
    }, 900_000);
  }

  it('rejects bad arguments and files with clear messages', async () => {
    const io = capture();
    expect(await main(['restore', '--golden', GOLDEN_ROOT, '--method', 'dps'], io)).toBe(2);
    expect(io.errors.join('\n')).toMatch(/--method dps: expected one of silo-cnn, silo-rg, latent-dps, psld/);
    expect(await main(['restore', '--golden', GOLDEN_ROOT, '--task', 'deblur'], io)).toBe(2);
    expect(io.errors.join('\n')).toMatch(/--task deblur: expected one of gaussian_blur/);
    expect(await main(['restore', '--golden', GOLDEN_ROOT, '--steps', '1000'], io)).toBe(2);
    expect(io.errors.join('\n')).toMatch(/--steps 1000: expected .* in 1\.\.999/);
    expect(await main(['restore', '--golden', GOLDEN_ROOT, '--forward', 'keep'], io)).toBe(2);
    expect(io.errors.join('\n')).toMatch(/--forward keep: expected auto, reuse or recompute/);
    expect(await main(['restore', '--golden', GOLDEN_ROOT, '--activation-budget=-5'], io)).toBe(2);
    expect(io.errors.join('\n')).toMatch(/--activation-budget -5/);
    expect(await main(['restore', '--golden', GOLDEN_ROOT, '--task', 'motion_blur', '--ground-truth', PHOTO], io)).toBe(2);
    expect(io.errors.join('\n')).toMatch(/motion_blur needs --kernel/);
    const notImage = join(tmp, 'not-an-image.png');
    writeFileSync(notImage, 'hello');
    expect(await main(['restore', '--golden', GOLDEN_ROOT, '--method', 'latent-dps', '--ground-truth', notImage, '--size', '64', '--steps', '1', '--out', join(tmp, 'x.png')], io)).toBe(1);
    expect(io.errors.join('\n')).toMatch(/not-an-image\.png/);
    expect(await main(['restore', '--golden', join(tmp, 'nowhere'), '--method', 'latent-dps', '--ground-truth', PHOTO, '--size', '64'], io)).toBe(1);
    expect(io.errors.join('\n')).toMatch(/nowhere/);
  }, 120_000);
});
