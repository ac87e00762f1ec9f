// The advice a user gets when the adapter's limits are too small for the chosen size: the bytes per
// pixel of the largest unsplittable buffer (from the UNet's config), the size that follows, and, with
// the tiny golden models on an engine capped at a 10 MiB maxBufferSize, that the size it names
// really runs where the asked-for size failed, for Latent-DPS (the decoder and its gradient in every
// step, untiled). For SILO-CNN (autoencoder only before and after the loop, tiled) the advice is
// checked, not run: 768x768 ran once under the same cap (6.5 minutes on lavapipe, too slow for CI).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { f32Entry, serializeSafetensors } from '../src/formats/safetensors.js';
import { preserveConfig } from '../src/models/silo/config.js';
import { parseVaeConfig } from '../src/models/vae/config.js';
import { preserveWeights } from './helpers/silo-preserve.js';
import { Engine } from '../src/engine/device.js';
import { LimitError } from '../src/engine/errors.js';
import { dirFolder } from '../src/formats/folder-node.js';
import { decodePng } from '../src/io/png.js';
import { parseUNetConfig } from '../src/models/unet/config.js';
import { limitAdvice, restorationBytesPerPixel, sizeThatFits } from '../src/restore/limit-advice.js';
import { loadModels } from '../src/restore/models.js';
import { RestorationSession } from '../src/restore/session.js';
import { GOLDEN_ROOT } from './helpers/golden.js';

const PHOTO = new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname;
const SD15_UNET = { blockOutChannels: [320, 640, 1280, 1280], downBlockTypes: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'] } as const;

describe('limit advice', () => {
  it('bytes per pixel: the GEGLU projection of the first cross-attention level, else the image', () => {
    // SD-1.5: [1, 64*64, 2560] f32 at 512x512 is 40 MiB = 160 bytes per image pixel.
    expect(restorationBytesPerPixel({ ...SD15_UNET, blockOutChannels: [...SD15_UNET.blockOutChannels], downBlockTypes: [...SD15_UNET.downBlockTypes] })).toBe(160);
    const tiny = parseUNetConfig(JSON.parse(readFileSync(`${GOLDEN_ROOT}/unet_mini/config.json`, 'utf8')), 'unet_mini');
    expect(restorationBytesPerPixel(tiny)).toBe(16);
    // With the autoencoder in the loop: the decoder's upsampler lifts 256 (SD) / 64 (tiny) channels to full size.
    const tinyVae = parseVaeConfig(JSON.parse(readFileSync(`${GOLDEN_ROOT}/vae_mini/config.json`, 'utf8')));
    expect(restorationBytesPerPixel(tiny, 8, tinyVae)).toBe(256);
    expect(restorationBytesPerPixel(tiny, 8, { blockOutChannels: [128, 256, 512, 512] })).toBe(1024);
    expect(restorationBytesPerPixel({ blockOutChannels: [2, 4], downBlockTypes: ['DownBlock2D', 'DownBlock2D'] })).toBe(12);
  });

  it('the size: the largest multiple that fits, or null', () => {
    // 128 MiB (a browser's default binding) for SD-1.5: sqrt(2^27 / 160) = 915.9 -> 896.
    expect(sizeThatFits(2 ** 27, 160, 64)).toBe(896);
    expect(sizeThatFits(2 ** 20, 16, 64)).toBe(256);
    expect(sizeThatFits(1000, 16, 64)).toBeNull();
  });

  it('a message without a size limit is the error itself; one with names limit, need and size', () => {
    expect(limitAdvice(new LimitError('no shader-f16'), 512)).toBe('no shader-f16');
    const e = new LimitError('tensor x: too big', { limit: 'maxBufferSize', needed: 12 << 20, available: 10 << 20 });
    expect(limitAdvice(e, 1024, 64, 16)).toBe(
      "this adapter's maxBufferSize is 10.0 MiB, and a 1024x1024 restoration needs 12.0 MiB in one buffer; choose a size of 768x768 or smaller, or use a browser or GPU that offers a larger maxBufferSize (tensor x: too big)",
    );
    // The failed buffer bounds the bytes per pixel from below: 12 MiB at 512x512 is 48 per pixel.
    expect(limitAdvice(e, 512, 64, 16)).toMatch(/choose a size of 448x448 or smaller/);
    const weight = new LimitError('w', { limit: 'maxBufferSize', needed: 100, available: 10 });
    expect(limitAdvice(weight, 64, 64, 16)).toMatch(/no smaller size helps/);
  });
});

describe('limit advice against a capped engine (tiny golden models)', () => {
  let engine: Engine;
  let session: RestorationSession;
  let tmp: string;
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'silo-limit-'));
    const w = preserveWeights(preserveConfig({ base_channels: 8, num_blocks: 2, noise_embed_dim: 16, pos_embed_channels: 6, max_noise: 0.1 }), 11);
    writeFileSync(join(tmp, 'op.safetensors'), serializeSafetensors(Object.fromEntries(Object.entries(w).map(([k, v]) => [k, f32Entry(v.data, v.shape)]))));
    engine = await Engine.create({ limits: { maxBufferSize: 10 << 20 } });
    const operator = { kind: 'cnn' as const, file: { folder: dirFolder(tmp), name: 'op.safetensors', label: 'op.safetensors' } };
    session = new RestorationSession(engine, await loadModels(engine, { golden: dirFolder(GOLDEN_ROOT), operator }));
  }, 120_000);
  afterAll(() => {
    session?.dispose();
    engine?.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  for (const [method, asked, named, run] of [['silo-cnn', 1024, 768, false], ['latent-dps', 512, 192, true]] as const) {
    it(`${method}: ${asked}x${asked} fails naming maxBufferSize; the advice names ${named}${run ? ', which runs' : ''}`, async () => {
      expect(engine.limits.maxBufferSize).toBe(10 << 20);
      const photo = await decodePng(readFileSync(PHOTO), PHOTO);
      const req = { task: 'sr4' as const, method, groundTruth: photo, steps: 1 };
      const err = await session.run({ ...req, size: asked }).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(LimitError);
      const advice = session.limitAdvice(err as LimitError, asked, method);
      expect(advice).toMatch(new RegExp(`^this adapter's maxBufferSize is 10\\.0 MiB, and a ${asked}x${asked} restoration needs [\\d.]+ MiB in one buffer; choose a size of ${named}x${named} or smaller`));
      if (!run) return;
      const ok = await session.run({ ...req, size: named });
      expect([ok.image.width, ok.image.height]).toEqual([named, named]);
    }, 600_000);
  }
});
