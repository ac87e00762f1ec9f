// `silo restore --dtype`: f16 weights (mixed precision) end to end with the tiny golden models, against
// the same run with f32 weights, and the refusal of f16 on an adapter without shader-f16.
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { Engine } from '../src/engine/device.js';
import { LimitError } from '../src/engine/errors.js';
import { decodePng } from '../src/io/png.js';
import { resolveWeightsDtype } from '../src/restore/models.js';
import { getEngine } from './helpers/engine.js';
import { GOLDEN_ROOT } from './helpers/golden.js';

const PHOTO = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;

let engine: Engine;
let tmp: string;
beforeAll(async () => {
  engine = await getEngine();
  tmp = mkdtempSync(join(tmpdir(), 'silo-weights-'));
});

function capture(): CliIO & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l) };
}

async function restore(dtype: string) {
  const io = capture();
  const out = join(tmp, `${dtype}.png`);
  const reportPath = join(tmp, `${dtype}.json`);
  const args = ['restore', '--golden', GOLDEN_ROOT, '--method', 'latent-dps', '--task', 'sr4', '--ground-truth', PHOTO, '--size', '64', '--steps', '2', '--out', out, '--report', reportPath, '--dtype', dtype];
  expect(await main(args, io), io.errors.join('\n')).toBe(0);
  const report = JSON.parse(readFileSync(reportPath, 'utf8')) as { settings: Record<string, unknown>; peak_gpu_bytes: Record<string, number> };
  return { report, png: await decodePng(readFileSync(out), out), log: io.lines.join('\n') };
}

describe('restore --dtype', () => {
  it('f16 weights restore like f32 weights (the UNet, VAE and CLIP weights in half the memory)', async (ctx) => {
    if (!engine.hasF16) ctx.skip('this adapter has no shader-f16');
    const f32 = await restore('f32');
    const f16 = await restore('f16');
    expect(f32.report.settings['weights']).toBe('f32');
    expect(f16.report.settings['weights']).toBe('f16');
    expect(f16.log).toMatch(/weights stored in f16, activations and gradients in f32/);
    // Two guided steps of the tiny random models: the weights' rounding (2^-11) moves the 8-bit image
    // by a level or two at most.
    let sum = 0;
    let max = 0;
    for (let i = 0; i < f32.png.data.length; i++) {
      const d = Math.abs(f32.png.data[i]! - f16.png.data[i]!);
      sum += d;
      max = Math.max(max, d);
    }
    const mean = sum / f32.png.data.length;
    console.log(`f16 vs f32 weights: mean |diff| ${mean.toFixed(3)}, max ${max} (8-bit levels)`);
    expect(mean).toBeLessThan(0.5);
    expect(max).toBeLessThanOrEqual(4);
  }, 600_000);

  it('auto picks f16 where the adapter has shader-f16; f16 without it is refused by name', async () => {
    expect(resolveWeightsDtype(engine, 'auto')).toBe(engine.hasF16 ? 'f16' : 'f32');
    expect(resolveWeightsDtype(engine)).toBe('f32');
    const plain = await Engine.create({ disableFeatures: ['shader-f16'] });
    try {
      expect(resolveWeightsDtype(plain, 'auto')).toBe('f32');
      expect(() => resolveWeightsDtype(plain, 'f16')).toThrow(LimitError);
      expect(() => resolveWeightsDtype(plain, 'f16')).toThrow(/f16 weights need the shader-f16 feature, which this adapter does not offer/);
      expect(() => resolveWeightsDtype(plain, 'bf16' as 'f16')).toThrow(/weights must be 'f32', 'f16' or 'auto', got "bf16"/);
    } finally {
      plain.destroy();
    }
  });
});
