// `silo restore` with a NaN in a weight, end to end through the CLI: the tester's finding was a black
// PNG, PSNR 3.458 and exit code 0. A copy of the golden folder whose VAE decoder has a NaN in
// conv_out.bias (written here; the other models are links to ../shared) must be refused at load,
// naming the file and tensor; loaded anyway with --allow-nonfinite-weights, the run must stop naming
// the step and the first bad stage. Either way: exit 1 and no output file.
import { describe, it, expect, beforeAll } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type CliIO } from '../src/cli/silo.js';
import { readSafetensorsFile } from '../src/formats/safetensors-node.js';
import { f32Entry, serializeSafetensors } from '../src/formats/safetensors.js';
import { GOLDEN_ROOT } from './helpers/golden.js';

const PHOTO = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;
const BAD_TENSOR = 'decoder.conv_out.bias';

let tmp: string;
let golden: string;
beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'silo-restore-nan-'));
  golden = join(tmp, 'golden');
  mkdirSync(join(golden, 'vae_mini'), { recursive: true });
  for (const d of ['unet_mini', 'clip_text_mini', 'silo_cnn']) symlinkSync(join(GOLDEN_ROOT, d), join(golden, d));
  symlinkSync(join(GOLDEN_ROOT, 'vae_mini', 'config.json'), join(golden, 'vae_mini', 'config.json'));
  const src = await readSafetensorsFile(join(GOLDEN_ROOT, 'vae_mini', 'diffusion_pytorch_model.safetensors'));
  const entries: Record<string, ReturnType<typeof f32Entry>> = {};
  for (const n of src.names()) {
    const v = src.getF32(n).slice();
    if (n === BAD_TENSOR) v[0] = NaN;
    entries[n] = f32Entry(v, src.info(n).shape);
  }
  expect(src.has(BAD_TENSOR)).toBe(true);
  writeFileSync(join(golden, 'vae_mini', 'diffusion_pytorch_model.safetensors'), serializeSafetensors(entries));
});

function capture(): CliIO & { text: () => string } {
  const lines: string[] = [];
  return { out: (l) => lines.push(l), err: (l) => lines.push(l), text: () => lines.join('\n') };
}

async function run(name: string, extra: string[]) {
  const io = capture();
  const out = join(tmp, `${name}.png`);
  const report = join(tmp, `${name}.json`);
  const measurement = join(tmp, `${name}-y.png`);
  const args = ['restore', '--golden', golden, '--method', 'latent-dps', '--task', 'sr4', '--ground-truth', PHOTO, '--size', '64', '--steps', '1'];
  const code = await main([...args, '--out', out, '--report', report, '--measurement-out', measurement, '--quiet', ...extra], io);
  return { code, text: io.text(), written: [out, report, measurement].filter((p) => existsSync(p)) };
}

describe('silo restore never turns a NaN weight into an image', () => {
  it('refuses the weights at load, naming the file and the tensor; writes nothing', async () => {
    const r = await run('refused', []);
    expect(r.code, r.text).toBe(1);
    expect(r.text).toMatch(new RegExp(`vae_mini/diffusion_pytorch_model\\.safetensors.*"${BAD_TENSOR.replace(/\./g, '\\.')}"`, 's'));
    expect(r.text).toMatch(/non-finite|NaN/i);
    expect(r.written).toEqual([]);
  });

  it('loaded anyway, the run stops at step 0 naming the decoder stage; writes nothing', async () => {
    const r = await run('allowed', ['--allow-nonfinite-weights']);
    expect(r.code, r.text).toBe(1);
    expect(r.text).toMatch(/step 0 of 1 \(t=\d+, method latent-dps\)/);
    expect(r.text).toMatch(/vae decoder: decoder\.conv_out/);
    expect(r.written).toEqual([]);
  });
});
