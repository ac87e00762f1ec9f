// The SR operator's Resizer against MATLAB's imresize, through the Set5 x4 pairs in
// ../shared/assets/images/sr (LR made by MATLAB bicubic imresize of HR, 8-bit). MATLAB and the
// Resizer (DPS/SILO) share the antialiased Keys kernel and differ only at the borders (MATLAB
// replicates the edge, the Resizer mirrors it): a CPU emulation of imresize with our matrices in
// replicate mode (height first, then width, rounding half up and clamping to uint8 after each pass, as
// MATLAB does on uint8 images) must reproduce every LR pixel exactly; the GPU operator (mirror borders,
// float, no intermediate rounding) must match within one level away from the borders.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { decodePng } from '../../src/io/png.js';
import { SuperResolutionOperator, resizerMatrix } from '../../src/solvers/degradations/superres.js';
import { getEngine } from '../helpers/engine.js';

const DIR = new URL('../../../shared/assets/images/sr', import.meta.url).pathname;

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const u8 = (v: number) => Math.min(255, Math.max(0, Math.floor(v + 0.5)));

describe('SR x4 Resizer vs MATLAB imresize (Set5)', () => {
  for (const n of ['001', '002', '003', '004', '005']) {
    it(`img_${n}: exact with uint8 rounding per pass; GPU float within one level (bar uint8 clamps)`, async () => {
      const hr = await decodePng(readFileSync(`${DIR}/img_${n}_SRF_4_HR.png`), `img_${n}_SRF_4_HR.png`);
      const lr = await decodePng(readFileSync(`${DIR}/img_${n}_SRF_4_LR.png`), `img_${n}_SRF_4_LR.png`);
      const [H, W, h, w] = [hr.height, hr.width, lr.height, lr.width];
      const op = new SuperResolutionOperator(engine, H, W, { factor: 4 });
      expect([op.outH, op.outW]).toEqual([h, w]);
      const mh = resizerMatrix(H, h, 0.25, true, 'replicate');
      const mw = resizerMatrix(W, w, 0.25, true, 'replicate');
      const c = hr.channels;
      // CPU imresize: along H first (uint8 intermediate), then along W.
      let mismatches = 0;
      for (let ch = 0; ch < 3; ch++) {
        const mid = new Float64Array(h * W);
        for (let o = 0; o < h; o++)
          for (let x = 0; x < W; x++) {
            let s = 0;
            for (let i = 0; i < H; i++) {
              const m = mh[o * H + i]!;
              if (m !== 0) s += m * hr.data[(i * W + x) * c + ch]!;
            }
            mid[o * W + x] = u8(s);
          }
        for (let y = 0; y < h; y++)
          for (let o = 0; o < w; o++) {
            let s = 0;
            for (let j = 0; j < W; j++) {
              const m = mw[o * W + j]!;
              if (m !== 0) s += m * mid[y * W + j]!;
            }
            if (u8(s) !== lr.data[(y * w + o) * lr.channels + ch]) mismatches++;
          }
      }
      expect(mismatches, `img_${n}: LR pixels our imresize emulation does not reproduce`).toBe(0);

      // GPU: the operator on HR in [-1, 1], back to levels.
      const plane = H * W;
      const x = new Float32Array(3 * plane);
      for (let i = 0; i < plane; i++) for (let ch = 0; ch < 3; ch++) x[ch * plane + i] = hr.data[i * c + ch]! / 127.5 - 1;
      const xt = engine.tensor(x, [1, 3, H, W], 'f32', 'hr');
      const { result } = await runProgram(engine, 'sr4_set5', (rec) => op.apply(rec, xt));
      const y = await result.read();
      result.dispose();
      xt.dispose();
      op.dispose();
      // Interior: LR pixels whose 16 + 2 taps stay inside HR (3 LR pixels from each border).
      let worst = 0;
      let over = 0;
      let count = 0;
      const b = 3;
      for (let ch = 0; ch < 3; ch++)
        for (let yy = b; yy < h - b; yy++)
          for (let xx = b; xx < w - b; xx++) {
            const i = yy * w + xx;
            const d = Math.abs(u8((y[ch * h * w + i]! + 1) * 127.5) - lr.data[i * lr.channels + ch]!);
            if (d > 1) over++;
            worst = Math.max(worst, d);
            count++;
          }
      // MATLAB rounds the intermediate to uint8 (up to 0.5 level, times sum|w| ~ 1.14 through the second
      // pass) before the final rounding: one level apart, except where the cubic's overshoot made MATLAB
      // clamp an intermediate value to 0 or 255 (img_005 has one such pixel: 42.4 vs 44).
      console.log(`img_${n}: interior max |GPU - MATLAB| ${worst} level(s), ${over} of ${count} samples above 1`);
      expect(worst).toBeLessThanOrEqual(2);
      expect(over / count).toBeLessThan(1e-3);
    });
  }
});
