// Component resolution in a diffusers folder: plain, fp16 variant, sharded index, missing weights,
// from disk and over HTTP (127.0.0.1), with progress; built in a temp dir from the golden unet_mini.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dirFolder } from '../../src/formats/folder-node.js';
import { urlFolder } from '../../src/formats/folder.js';
import { parseSafetensors, serializeSafetensors, shardSafetensors, f32Entry } from '../../src/formats/safetensors.js';
import { openComponent } from '../../src/models/diffusers-folder.js';
import { goldenDir } from '../helpers/golden.js';
import { serveDir } from '../helpers/static-server.js';

let dir: string;
let server: { base: string; close: () => void };
let base: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'silo-folder-'));
  const unetDir = goldenDir('unet_mini');
  const bytes = readFileSync(`${unetDir}/diffusion_pytorch_model.safetensors`);
  const config = readFileSync(`${unetDir}/config.json`, 'utf8');
  // plain
  mkdirSync(join(dir, 'plain/unet'), { recursive: true });
  writeFileSync(join(dir, 'plain/unet/config.json'), config);
  writeFileSync(join(dir, 'plain/unet/diffusion_pytorch_model.safetensors'), bytes);
  writeFileSync(join(dir, 'plain/model_index.json'), JSON.stringify({ _class_name: 'StableDiffusionPipeline', unet: ['diffusers', 'UNet2DConditionModel'] }));
  // fp16 variant next to a plain file: the variant must win
  mkdirSync(join(dir, 'variant/unet'), { recursive: true });
  writeFileSync(join(dir, 'variant/unet/config.json'), config);
  writeFileSync(join(dir, 'variant/unet/diffusion_pytorch_model.safetensors'), bytes);
  const file = parseSafetensors(bytes, 'unet');
  const half = Object.fromEntries(file.names().map((n) => [n, f32Entry(file.getF32(n), file.info(n).shape, 'F16')]));
  writeFileSync(join(dir, 'variant/unet/diffusion_pytorch_model.fp16.safetensors'), serializeSafetensors(half));
  // sharded
  mkdirSync(join(dir, 'sharded/unet'), { recursive: true });
  writeFileSync(join(dir, 'sharded/unet/config.json'), config);
  const full = Object.fromEntries(file.names().map((n) => [n, f32Entry(file.getF32(n), file.info(n).shape)]));
  const { shards, index } = shardSafetensors(full, 4 << 20, 'diffusion_pytorch_model');
  for (const [name, data] of Object.entries(shards)) writeFileSync(join(dir, 'sharded/unet', name), data);
  writeFileSync(join(dir, 'sharded/unet/diffusion_pytorch_model.safetensors.index.json'), JSON.stringify(index));
  // no weights
  mkdirSync(join(dir, 'empty/unet'), { recursive: true });
  writeFileSync(join(dir, 'empty/unet/config.json'), config);
  writeFileSync(join(dir, 'empty/unet/diffusion_pytorch_model.bin'), 'not a safetensors file');

  server = await serveDir(dir);
  base = server.base;
});

afterAll(() => {
  server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('openComponent', () => {
  it('reads config and plain weights from disk with progress', async () => {
    const seen: number[] = [];
    const c = await openComponent(dirFolder(join(dir, 'plain')), 'unet', { onProgress: (p) => seen.push(p.loaded) });
    expect(c.file).toBe('unet/diffusion_pytorch_model.safetensors');
    expect(c.weights.names().length).toBe(684);
    expect(c.config['block_out_channels']).toEqual([32, 64, 64, 64]);
    expect(seen.length).toBeGreaterThan(0);
  });

  it('prefers the requested precision variant and falls back to plain files', async () => {
    const v = await openComponent(dirFolder(join(dir, 'variant')), 'unet', { variant: 'fp16' });
    expect(v.file).toBe('unet/diffusion_pytorch_model.fp16.safetensors');
    expect(v.weights.info('conv_in.weight').dtype).toBe('F16');
    const p = await openComponent(dirFolder(join(dir, 'plain')), 'unet', { variant: 'fp16' });
    expect(p.file).toBe('unet/diffusion_pytorch_model.safetensors');
  });

  it('reads a sharded index over HTTP with streamed progress', async () => {
    const loaded: Array<[string, number]> = [];
    const c = await openComponent(urlFolder(`${base}/sharded`), 'unet', { onProgress: (p) => loaded.push([p.file, p.loaded]) });
    expect(c.file).toBe('unet/diffusion_pytorch_model.safetensors.index.json');
    expect(c.weights.names().length).toBe(684);
    expect(new Set(loaded.map(([f]) => f)).size).toBeGreaterThan(1); // several shards
    const plain = await openComponent(dirFolder(join(dir, 'plain')), 'unet');
    expect(Array.from(c.weights.getF32('conv_in.weight'))).toEqual(Array.from(plain.weights.getF32('conv_in.weight')));
  });

  it('names the folder, the files tried and a .bin to convert when no weights exist', async () => {
    await expect(openComponent(dirFolder(join(dir, 'empty')), 'unet')).rejects.toThrow(
      /no weights for unet; tried unet\/diffusion_pytorch_model\.safetensors, .*found unet\/diffusion_pytorch_model\.bin: convert/,
    );
    await expect(openComponent(urlFolder(`${base}/missing`), 'unet')).rejects.toThrow(/missing\/unet\/config\.json: HTTP 404/);
  });
});
