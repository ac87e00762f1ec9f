// diffusers' AutoencoderKL against the vae_mini golden case (read in place from ../shared/golden), its
// attention's alternative weight layouts and matmul path, and diffusers' tiled encode / decode.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { LimitError } from '../../src/engine/errors.js';
import { runProgram, type Recorder } from '../../src/engine/recorder.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { f32Entry, parseSafetensors, serializeSafetensors, type SafetensorsFile } from '../../src/formats/safetensors.js';
import type { CaseFiles } from '../../src/check/files.js';
import { readJson, readSafetensors } from '../../src/check/files.js';
import { runVae, vaeTolerance, VAE_F16_TOLERANCE } from '../../src/check/vae.js';
import { AutoencoderKL } from '../../src/models/vae/autoencoder.js';
import { parseVaeConfig, VaeConfigError } from '../../src/models/vae/config.js';
import {
  decoderPeakElements,
  encoderPeakElements,
  planTiles,
  tileLayout,
  tilePeakBytes,
  tilesConsistent,
  type TileSettings,
} from '../../src/models/vae/tiling.js';
import { vaeDecodeStages, vaeEncodeStages } from '../../src/models/vae/vjp.js';
import { chainForward, chainTapeBytes } from '../../src/models/vjp-stages.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { expectAllPass, goldenFiles, goldenManifest } from '../helpers/golden.js';
import { cropRef, tiledBlendRef, type Arr4 } from '../ref/region.js';

let engine: Engine;
let files: CaseFiles;
let manifest: Record<string, unknown>;
let config: Record<string, unknown>;
let weights: SafetensorsFile;
let golden: SafetensorsFile;
let vae: AutoencoderKL;

beforeAll(async () => {
  engine = await getEngine();
  files = goldenFiles('vae_mini');
  manifest = goldenManifest('vae_mini');
  config = await readJson(files, 'config.json');
  weights = await readSafetensors(files, 'diffusion_pytorch_model.safetensors');
  golden = await readSafetensors(files, 'golden.safetensors');
  vae = AutoencoderKL.load(engine, weights, config);
});

/** The same case folder with one file replaced. */
function replaced(name: string, bytes: Uint8Array): CaseFiles {
  return { location: files.location, bytes: async (n) => (n === name ? bytes : files.bytes(n)), text: (n) => files.text(n), exists: (n) => files.exists(n) };
}

/** A copy of a safetensors file with tensors renamed / reshaped / dropped by `edit` (null drops). */
function rewrite(src: SafetensorsFile, edit: (name: string, shape: number[]) => [string, number[]] | null): Uint8Array {
  const entries: Record<string, ReturnType<typeof f32Entry>> = {};
  for (const name of src.names()) {
    const r = edit(name, src.info(name).shape);
    if (r) entries[r[0]] = f32Entry(src.getF32(name), r[1]);
  }
  return serializeSafetensors(entries);
}

describe('AutoencoderKL stage chains', () => {
  // The stages' output shapes (convs, the padded stride-2 downsampler, upsamplers, attention, heads) give
  // the bytes a tape of each chain holds, for odd sizes, without running it.
  for (const [what, shape] of [['encode', [2, 3, 24, 40]], ['decode', [1, 4, 3, 5]]] as const) {
    it(`chainTapeBytes of the ${what} chain equals the inputs its recorded tape holds (${shape.join('x')})`, async () => {
      const stages = what === 'encode' ? vaeEncodeStages(vae) : vaeDecodeStages(vae);
      const x = engine.tensor(randomData(shape.reduce((a: number, b: number) => a * b, 1), 3), [...shape], 'f32', 'x');
      try {
        const { result } = await runProgram(engine, `${what} tape`, (rec) => chainForward(rec, stages, x, { output: true }));
        const held = result.tape.inputs.reduce((s, t) => s + t.byteLength, 0);
        expect(result.tape.inputs.length).toBe(stages.length);
        expect(chainTapeBytes(stages, shape)).toBe(held);
        expect(stages[stages.length - 1]!.outShape!(result.tape.inputs[stages.length - 1]!.shape)).toEqual(result.out!.shape);
        for (const t of result.tape.inputs) if (t !== x) t.dispose();
        result.out!.dispose();
      } finally {
        x.dispose();
      }
    });
  }
});

describe('AutoencoderKL vs vae_mini golden', () => {
  it('f32: enc.*, dec.sample and debug.* within the manifest tolerance (atol 2e-4, rtol 1e-3), the VJPs dec.vjp_z / enc.vjp_image_of_mean within 1e-3 * max|ref|', async () => {
    const items = await runVae(engine, files, manifest, { dtype: 'f32', log: console.log });
    const names = items.map((i) => i.name);
    expect(names).toEqual(
      expect.arrayContaining(['enc.moments', 'enc.mean', 'enc.logvar', 'enc.std', 'enc.latent_sample', 'dec.sample', 'dec.vjp_z', 'enc.vjp_image_of_mean']),
    );
    expect(items.find((i) => i.name === 'dec.vjp_z')!.tol).toEqual({ atolRelativeToMaxAbs: 1e-3 });
    expect(names.filter((n) => n.startsWith('debug.')).length).toBe(golden.names().filter((n) => n.startsWith('debug.')).length);
    expectAllPass(items, 'vae_mini f32');
  });

  it(`f16 storage (skipped without shader-f16): within atol ${VAE_F16_TOLERANCE.atol}, rtol ${VAE_F16_TOLERANCE.rtol}`, async (ctx) => {
    if (!engine.hasF16) ctx.skip();
    const items = await runVae(engine, files, manifest, { dtype: 'f16' });
    expect(items.some((i) => i.name.includes('vjp'))).toBe(false); // the backward ops are f32 only
    expectAllPass(items, 'vae_mini f16');
  });

  it("old SD-1.x attention names (query/key/value/proj_attn), 1x1-conv-shaped in the encoder, give the golden outputs and VJPs", async () => {
    const old: Record<string, string> = { to_q: 'query', to_k: 'key', to_v: 'value', 'to_out.0': 'proj_attn' };
    const bytes = rewrite(weights, (name, shape) => {
      const m = /^(encoder|decoder)\.mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(name);
      if (!m) return [name, shape];
      const renamed = name.replace(`.${m[2]}.`, `.${old[m[2]!]}.`);
      return [renamed, m[1] === 'encoder' && m[3] === 'weight' ? [...shape, 1, 1] : shape];
    });
    expect(parseSafetensors(bytes, 'x').names().some((n) => n.endsWith('proj_attn.weight'))).toBe(true);
    const items = await runVae(engine, replaced('diffusion_pytorch_model.safetensors', bytes), manifest, { dtype: 'f32' });
    expectAllPass(
      items.filter((i) => ['enc.mean', 'enc.logvar', 'dec.sample', 'dec.vjp_z', 'enc.vjp_image_of_mean'].includes(i.name)),
      'vae_mini old names',
    );
  });

  it('the matmul attention path (for head dims above the flash kernel), whole and in 4 query chunks, gives the golden outputs', async () => {
    const image = engine.tensor(golden.getF32('input.image'), golden.info('input.image').shape);
    const z = engine.tensor(golden.getF32('input.z'), golden.info('input.z').shape);
    const attns = [vae.encoder.midBlock.attention!, vae.decoder.midBlock.attention!];
    try {
      // Whole: the decoder against dec.sample; in 4 chunks of 16 query rows: the encoder against enc.mean.
      for (const chunkRows of [undefined, 16]) {
        for (const a of attns) {
          a.forceMatmul = true;
          a.chunkRows = chunkRows;
        }
        const what = `matmul attention${chunkRows ? `, chunks of ${chunkRows} rows` : ''}`;
        if (chunkRows) {
          const { result, report } = await runProgram(engine, 'vae matmul attention', (rec) => vae.encode(rec, image, { tiling: 'off' }));
          expect(report.ops['vae_encode/encoder/mid_block/attentions.0/scores']?.dispatches).toBe(4);
          expectAllPass([{ name: 'enc.mean', actual: await result.mean.read(), expected: golden.getF32('enc.mean'), tol: vaeTolerance(manifest, 'enc.mean') }], what);
          for (const t of Object.values(result)) t.dispose();
        } else {
          const { result, report } = await runProgram(engine, 'vae matmul attention', (rec) => vae.decode(rec, z, { tiling: 'off' }));
          expect(report.ops['vae_decode/decoder/mid_block/attentions.0/scores']?.dispatches).toBe(1);
          expectAllPass([{ name: 'dec.sample', actual: await result.read(), expected: golden.getF32('dec.sample'), tol: vaeTolerance(manifest, 'dec.sample') }], what);
          result.dispose();
        }
      }
    } finally {
      for (const a of attns) {
        a.forceMatmul = false;
        a.chunkRows = undefined;
      }
      image.dispose();
      z.dispose();
    }
  });

  it('a missing or mis-shaped golden tensor is an error naming the file and the tensor', async () => {
    const path = `${files.location}/golden.safetensors`;
    const esc = path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const noZ = rewrite(golden, (n, s) => (n === 'input.z' ? null : [n, s]));
    await expect(runVae(engine, replaced('golden.safetensors', noZ), manifest, {})).rejects.toThrow(new RegExp(`${esc}: missing tensor "input\\.z"`));
    const badNoise = rewrite(golden, (n, s) => [n, n === 'input.posterior_noise' ? [1, 4, 4, 16] : s]);
    await expect(runVae(engine, replaced('golden.safetensors', badNoise), manifest, {})).rejects.toThrow(
      new RegExp(`${esc}: tensor "input\\.posterior_noise" has shape \\[1, 4, 4, 16\\], expected \\[1, 4, 8, 8\\]`),
    );
    const badOut = rewrite(golden, (n, s) => [n, n === 'dec.sample' ? [1, 3, 32, 128] : s]);
    await expect(runVae(engine, replaced('golden.safetensors', badOut), manifest, {})).rejects.toThrow(
      new RegExp(`${esc}: tensor "dec\\.sample" has shape \\[1, 3, 32, 128\\], expected \\[1, 3, 64, 64\\]`),
    );
  });
});

describe('AutoencoderKL config and API', () => {
  it('reads diffusers config.json and rejects what it does not run', () => {
    const cfg = parseVaeConfig(config);
    expect(cfg).toMatchObject({ blockOutChannels: [32, 64, 64, 64], layersPerBlock: 2, latentChannels: 4, normGroups: 32, scalingFactor: 0.18215, sampleSize: 64 });
    expect(vae.scalingFactor).toBe(0.18215);
    expect(() => parseVaeConfig({ ...config, up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'AttnUpDecoderBlock2D'] })).toThrow(
      /up_block_types entry "AttnUpDecoderBlock2D" is not supported/,
    );
    expect(() => parseVaeConfig({ ...config, act_fn: 'relu' })).toThrow(VaeConfigError);
    expect(() => parseVaeConfig({ ...config, norm_num_groups: 24 })).toThrow(/norm_num_groups 24 does not divide block width 32/);
    expect(() => parseVaeConfig({ ...config, use_quant_conv: false })).not.toThrow();
  });

  it('sample() with a seed draws mean + std * N(0, 1): deterministic, and the noise implied is standard normal', async () => {
    const image = engine.tensor(golden.getF32('input.image'), golden.info('input.image').shape);
    const { result } = await runProgram(engine, 'vae sample', (rec) => {
      const post = vae.encode(rec, image);
      return { post, a: vae.sample(rec, post, 7), b: vae.sample(rec, post, 7), c: vae.sample(rec, post, 8) };
    });
    const [mean, std, a, b, c] = await Promise.all([result.post.mean.read(), result.post.std.read(), result.a.read(), result.b.read(), result.c.read()]);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
    const eps = Array.from(a, (v, i) => (v - mean[i]!) / std[i]!);
    const m = eps.reduce((s, v) => s + v, 0) / eps.length;
    const v = eps.reduce((s, x) => s + (x - m) ** 2, 0) / eps.length;
    expect(Math.abs(m)).toBeLessThan(0.2); // 256 draws: the sample mean has std 1/16
    expect(Math.abs(v - 1)).toBeLessThan(0.3);
    for (const t of [image, ...Object.values(result.post), result.a, result.b, result.c]) t.dispose();
  });
});

describe('tiled encode / decode (diffusers tiled_encode / tiled_decode)', () => {
  // Small tiles on the mini VAE: 4-latent / 32-pixel tiles, overlap 0.25 -> latent step 3, image blend 8,
  // kept 24 (decode); image step 24, latent blend 1, kept 3 (encode).
  const tiles: TileSettings = { sampleSize: 32, latentSize: 4, overlap: 0.25 };
  // The GPU tiled result is compared with diffusers' loop run on the host (tests/ref/region.ts) over the
  // same per-tile outputs, each computed by an untiled GPU pass on the host-cropped input: what differs
  // is only the blend arithmetic (f32 on the GPU, f64 on the host), hence a few ulps.
  const BLEND_TOL = { atol: 2e-6, rtol: 2e-6 };

  async function perTile(x: Arr4, tileIn: number, step: number, run: (rec: Recorder, t: Tensor) => Tensor): Promise<Arr4[][]> {
    const [, , H, W] = x.shape;
    const rows: Arr4[][] = [];
    for (let y = 0; y < H; y += step) {
      const row: Arr4[] = [];
      for (let x0 = 0; x0 < W; x0 += step) {
        const crop = cropRef(x, y, x0, Math.min(tileIn, H - y), Math.min(tileIn, W - x0));
        const t = engine.tensor(crop.data, crop.shape);
        const { result } = await runProgram(engine, 'tile', (rec) => run(rec, t));
        row.push({ data: await result.read(), shape: result.shape as Arr4['shape'] });
        t.dispose();
        result.dispose();
      }
      rows.push(row);
    }
    return rows;
  }

  it('decode of a 7x10 latent (12 tiles incl. 1-latent edge tiles) equals diffusers loop over per-tile decodes', async () => {
    const z: Arr4 = { data: randomData(4 * 7 * 10, 5, -2, 2), shape: [1, 4, 7, 10] };
    const tz = engine.tensor(z.data, z.shape);
    const { result, report } = await runProgram(engine, 'tiled decode', (rec) => vae.decode(rec, tz, { tiling: 'on', tiles }));
    expect(result.shape).toEqual([1, 3, 56, 80]);
    // Tile rows start at latent 0, 3, 6 and columns at 0, 3, 6, 9: blend_v for rows 1-2, blend_h for columns 1-3.
    expect(report.ops['vae_decode/tiled_decode/blend_v']?.dispatches).toBe(2 * 4);
    expect(report.ops['vae_decode/tiled_decode/blend_h']?.dispatches).toBe(3 * 3);
    const ref = tiledBlendRef(await perTile(z, 4, 3, (rec, t) => vae.decodeRaw(rec, t)), 8, 24);
    expect(ref.shape).toEqual([1, 3, 56, 80]);
    expectClose(await result.read(), ref.data, BLEND_TOL, 'tiled decode');
    tz.dispose();
    result.dispose();
  });

  it('encode of a 56x56 image (9 tiles incl. 8-pixel edge tiles) equals diffusers loop over per-tile encodes', async () => {
    const x: Arr4 = { data: randomData(3 * 56 * 56, 6), shape: [1, 3, 56, 56] };
    const tx = engine.tensor(x.data, x.shape);
    const { result } = await runProgram(engine, 'tiled encode', (rec) => vae.encode(rec, tx, { tiling: 'on', tiles }));
    expect(result.moments.shape).toEqual([1, 8, 7, 7]);
    const ref = tiledBlendRef(await perTile(x, 32, 24, (rec, t) => vae.encodeMoments(rec, t)), 1, 3);
    expectClose(await result.moments.read(), ref.data, BLEND_TOL, 'tiled encode moments');
    // The posterior is taken of the assembled moments.
    expectClose(await result.mean.read(), ref.data.slice(0, 4 * 49), BLEND_TOL, 'tiled encode mean');
    tx.dispose();
    for (const t of Object.values(result)) t.dispose();
  });

  it("'auto' tiles exactly when a full-size activation would exceed the binding limit, with tiles whose every binding fits", async () => {
    const z = engine.tensor(golden.getF32('input.z'), golden.info('input.z').shape);
    const image = engine.tensor(golden.getF32('input.image'), golden.info('input.image').shape);
    const cfg = vae.config;
    // Under the real limit nothing is tiled.
    expect(vae.tilePlan(engine, 'decode', z)).toBeNull();
    expect(vae.tilePlan(engine, 'encode', image)).toBeNull();
    const limits = engine.limits as { maxStorageBufferBindingSize: number };
    const saved = limits.maxStorageBufferBindingSize;
    // The mini VAE's largest activations at 64x64: decoder 64 x 64 x 64 f32 = 1 MiB, encoder 32 x 64 x 64 = 512 KiB.
    expect(decoderPeakElements(cfg, 1, 8, 8) * 4).toBe(1 << 20);
    expect(encoderPeakElements(cfg, 1, 64, 64) * 4).toBe(1 << 19);
    limits.maxStorageBufferBindingSize = 300_000;
    try {
      const dec = vae.tilePlan(engine, 'decode', z)!;
      const enc = vae.tilePlan(engine, 'encode', image)!;
      expect(dec).toEqual({ sampleSize: 32, latentSize: 4, overlap: 0.25 });
      expect(enc).toEqual({ sampleSize: 32, latentSize: 4, overlap: 0.25 }); // 48 fits but does not tile seamlessly
      // Untiled, the recorder refuses the oversized binding; tiled, every dispatch's bindings fit.
      await expect(runProgram(engine, 'untiled', (rec) => vae.decode(rec, z, { tiling: 'off' }))).rejects.toThrow(LimitError);
      await expect(runProgram(engine, 'untiled', (rec) => vae.encode(rec, image, { tiling: 'off' }))).rejects.toThrow(LimitError);
      const { result } = await runProgram(engine, 'auto', (rec) => ({ dec: vae.decode(rec, z), post: vae.encode(rec, image) }));
      expect(result.dec.shape).toEqual([1, 3, 64, 64]);
      expect(result.post.mean.shape).toEqual([1, 4, 8, 8]);
      limits.maxStorageBufferBindingSize = saved;
      // Same as asking for those tiles explicitly.
      const { result: on } = await runProgram(engine, 'on', (rec) => vae.decode(rec, z, { tiling: 'on', tiles: dec }));
      expectClose(await result.dec.read(), await on.read(), { atol: 0, rtol: 0 }, 'auto vs on');
      for (const t of [result.dec, on, ...Object.values(result.post)]) t.dispose();
    } finally {
      limits.maxStorageBufferBindingSize = saved;
      z.dispose();
      image.dispose();
    }
  });

  it('plans a 1024x1024 SD-1.5 decode and encode on a 128 MiB binding limit (planning only)', () => {
    const sd = parseVaeConfig({
      block_out_channels: [128, 256, 512, 512],
      down_block_types: Array(4).fill('DownEncoderBlock2D'),
      up_block_types: Array(4).fill('UpDecoderBlock2D'),
      layers_per_block: 2,
      latent_channels: 4,
      norm_num_groups: 32,
      sample_size: 512,
      scaling_factor: 0.18215,
    });
    const limit = 128 * 2 ** 20;
    // Untiled, the decoder's 256-channel 1024x1024 activation is 1 GiB: 'auto' must tile.
    expect(decoderPeakElements(sd, 1, 128, 128) * 4).toBe(2 ** 30);
    const dec = planTiles(sd, 'decode', { limit, dtype: 'f32', batch: 1 });
    // diffusers' 512-pixel tile needs 256 MiB in f32; the largest seamless tile that fits is 44 latents.
    expect(dec).toEqual({ sampleSize: 352, latentSize: 44, overlap: 0.25 });
    expect(tilePeakBytes(sd, 'decode', dec, 'f32', 1)).toBeLessThanOrEqual(limit);
    expect(tilePeakBytes(sd, 'decode', { sampleSize: 384, latentSize: 48, overlap: 0.25 }, 'f32', 1)).toBeGreaterThan(limit);
    const layout = tileLayout(128, dec, 'decode', (n) => 8 * n);
    expect(layout).toEqual({ starts: [0, 33, 66, 99], sizes: [44, 44, 44, 29], kept: [264, 264, 264, 232], total: 1024 });
    // Every tile is at most the planned one, so every binding of every tile fits.
    expect(Math.max(...layout.sizes)).toBeLessThanOrEqual(dec.latentSize);
    expect(tilesConsistent(dec, 8)).toBe(true);
    // f16 halves the activations: diffusers' default tile fits exactly (256 x 512 x 512 x 2 bytes = 128 MiB).
    expect(planTiles(sd, 'decode', { limit, dtype: 'f16', batch: 1 })).toEqual({ sampleSize: 512, latentSize: 64, overlap: 0.25 });
    // Encode: the 128-channel 512x512 activation is exactly 128 MiB, so diffusers' default tile fits.
    expect(encoderPeakElements(sd, 1, 1024, 1024) * 4).toBeGreaterThan(limit);
    const enc = planTiles(sd, 'encode', { limit, dtype: 'f32', batch: 1 });
    expect(enc).toEqual({ sampleSize: 512, latentSize: 64, overlap: 0.25 });
    expect(tileLayout(1024, enc, 'encode', (n) => n / 8).total).toBe(128);
  });
});
