// The inpainting mask at latent size for SILO's cond_inpaint readout operator (random-box inpainting):
// torchvision's antialiased bilinear resize, checked against values worked out by hand, and passed by the
// restoration session to a cond_inpaint operator (converted from a checkpoint in SILO's format).
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resizeMaskAntialiased } from '../src/solvers/degradations/latent-mask.js';
import { makeDegradation } from '../src/solvers/degradations/tasks.js';
import { InpaintingOperator } from '../src/solvers/degradations/inpaint.js';
import * as loop from '../src/restore/loop.js';
import { loadModels } from '../src/restore/models.js';
import { RestorationSession } from '../src/restore/session.js';
import { dirFolder } from '../src/formats/folder-node.js';
import { convertSiloCheckpoint } from '../src/hub/silo-convert-node.js';
import { decodePng } from '../src/io/png.js';
import { getEngine } from './helpers/engine.js';
import { GOLDEN_ROOT } from './helpers/golden.js';
import { readoutCheckpoint, tinyReadoutWeights } from './helpers/silo-release.js';

vi.mock('../src/restore/loop.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../src/restore/loop.js')>();
  return { ...m, restore: vi.fn(m.restore) };
});
const restoreSpy = vi.mocked(loop.restore);

describe('resizeMaskAntialiased', () => {
  it('16 -> 2 per axis: tent weights 8 px wide each side of the centre, normalised (hand-computed)', () => {
    // Output 0 has its centre at 4 and taps 0..11 with weights 1 - |j - 3.5| / 8: 0.5625, 0.6875, 0.8125,
    // 0.9375 (twice, mirrored) for j < 8 (sum 6) and 0.4375, 0.3125, 0.1875, 0.0625 for j = 8..11 (sum 1).
    // With the right half masked, output 0 keeps 6/7 and output 1 (the mirror image) 1/7.
    const mask = new Float32Array(16 * 16);
    for (let y = 0; y < 16; y++) mask.fill(1, y * 16, y * 16 + 8);
    const out = resizeMaskAntialiased(mask, 16, 16, 2, 2);
    expect(Array.from(out)).toEqual([6 / 7, 1 / 7, 6 / 7, 1 / 7].map(Math.fround));
    expect(Array.from(resizeMaskAntialiased(new Float32Array(24 * 40).fill(1), 24, 40, 3, 5))).toEqual(new Array(15).fill(1));
  });

  it('an 8x shrink of a box on the 8-px grid is exact inside and blends only the cells at its edge', () => {
    const mask = new Float32Array(64 * 64).fill(1);
    for (let y = 16; y < 48; y++) mask.fill(0, y * 64 + 16, y * 64 + 48);
    const out = resizeMaskAntialiased(mask, 64, 64, 8, 8);
    expect(out[3 * 8 + 3]).toBe(0); // cell (3, 3) covers pixels 24..31: masked, neighbours too
    expect(out[0]).toBe(1);
    // Cell (1, 3): column 3's taps 20..35 lie inside the box's columns, so the cell is masked where its rows are.
    // Row 1's taps 4..19 (total weight 8) reach the box at rows 16..19, weights 0.4375 + 0.3125 + 0.1875 + 0.0625 = 1:
    // 1/8 of the cell is masked, 7/8 kept.
    expect(out[1 * 8 + 3]).toBeCloseTo(7 / 8, 6);
  });
});

describe('a cond_inpaint readout operator gets the latent mask', () => {
  let tmp: string;
  beforeAll(() => (tmp = mkdtempSync(join(tmpdir(), 'silo-mask-'))));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('inpaint_random: the session passes the resized mask; a task without a mask is refused', async () => {
    const engine = await getEngine();
    // unet_mini's readout features (64 x 9, 32 x 3) and time embedding (128); latent 8 = 64 px images.
    const weights = tinyReadoutWeights({ featureDims: [...Array(9).fill(64), 32, 32, 32], projection: 128, latent: 8, emb: 128, condInpaint: true });
    writeFileSync(join(tmp, 'rand_ip.pt'), readoutCheckpoint(weights, { optimizerParams: 2 }));
    await convertSiloCheckpoint(join(tmp, 'rand_ip.pt'), join(tmp, 'rand_ip'));
    const models = await loadModels(engine, { golden: dirFolder(GOLDEN_ROOT), operator: { kind: 'readout', folder: dirFolder(join(tmp, 'rand_ip')), label: 'rand_ip' } });
    const session = new RestorationSession(engine, models);
    try {
      expect(models.base.readout!.config.condInpaint).toBe(true);
      const png = await decodePng(readFileSync(new URL('../../shared/assets/images/faces256/ffhq_69037.png', import.meta.url).pathname), 'face');
      const photo = { width: png.width, height: png.height, channels: 3 as const, data: png.data };
      let mask: Float32Array | undefined;
      restoreSpy.mockImplementationOnce(async (...args) => {
        mask = await args[1].readoutMask!.read();
        expect(args[1].readoutMask!.shape).toEqual([1, 1, 8, 8]);
        return loop.restore(...args);
      });
      const r = await session.run({ task: 'inpaint_random', method: 'silo-rg', groundTruth: photo, steps: 1, seed: 9 });
      expect(r.image.width).toBe(64);
      const A = makeDegradation(engine, 'inpaint_random', 64, 64, { seed: 9 });
      try {
        expect(A.operator).toBeInstanceOf(InpaintingOperator);
        const m = (A.operator as InpaintingOperator).mask;
        expect(Array.from(mask!)).toEqual(Array.from(resizeMaskAntialiased(m, 64, 64, 8, 8)));
        expect(mask!.some((v) => v > 0 && v < 1), 'the random box is not on the 8-px grid: edge cells blend').toBe(true);
      } finally {
        A.operator.dispose();
      }
      await expect(session.run({ task: 'sr4', method: 'silo-rg', groundTruth: photo, steps: 1 })).rejects.toThrow('this readout operator was trained for inpainting (cond_inpaint: it reads the mask), but task sr4 has no mask');
    } finally {
      session.dispose();
    }
  }, 300_000);
});
