// A diffusers pipeline folder assembled (by symlinks) from the golden mini models: loaded from disk
// and over HTTP with progress, each component reproduces its golden output, and missing pieces are
// named. The scheduler config is SD-1.5's.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { dirFolder } from '../../src/formats/folder-node.js';
import { urlFolder } from '../../src/formats/folder.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import { loadDiffusersPipeline, type PipelineProgress } from '../../src/models/pipeline.js';
import { getEngine, expectClose } from '../helpers/engine.js';
import { goldenDir } from '../helpers/golden.js';
import { serveDir } from '../helpers/static-server.js';
import { miniSdFolder } from '../helpers/sd-folder.js';

let engine: Engine;
let root: string;
let server: { base: string; close: () => void };
let base: string;

beforeAll(async () => {
  engine = await getEngine();
  root = mkdtempSync(join(tmpdir(), 'silo-pipe-'));
  miniSdFolder(root, 'sd');
  server = await serveDir(root);
  base = server.base;
});
afterAll(() => {
  server?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('loadDiffusersPipeline', () => {
  for (const where of ['disk', 'http'] as const) {
    it(`loads every component from ${where} and each reproduces its golden output`, async () => {
      const events: PipelineProgress[] = [];
      const folder = where === 'disk' ? dirFolder(join(root, 'sd')) : urlFolder(`${base}/sd`);
      const live = engine.pool.stats.liveBytes;
      const pipe = await loadDiffusersPipeline(engine, folder, { onProgress: (p) => events.push(p) });
      try {
        expect(pipe.schedulerConfig!['beta_schedule']).toBe('scaled_linear');
        for (const c of ['unet', 'vae', 'text_encoder'] as const) {
          expect(events.some((e) => e.component === c && e.phase === 'download'), `${c} download progress`).toBe(true);
          const up = events.filter((e) => e.component === c && e.phase === 'upload');
          expect(up.at(-1)!.loaded, `${c} upload progress reaches the total`).toBe(up.at(-1)!.total);
        }
        const ug = await readSafetensorsFile(`${goldenDir('unet_mini')}/golden.safetensors`);
        const cg = await readSafetensorsFile(`${goldenDir('clip_text_mini')}/golden.safetensors`);
        const vg = await readSafetensorsFile(`${goldenDir('vae_mini')}/golden.safetensors`);
        const prompt = 'A high quality photo of a face';
        const ids = pipe.tokenizer!.call(prompt).inputIds;
        expect(Array.from(ids)).toEqual(cg.getIntegers('input.input_ids').slice(0, 77));
        const sample = ug.toTensor(engine, 'input.sample');
        const ehs = ug.toTensor(engine, 'input.encoder_hidden_states');
        const z = vg.toTensor(engine, 'input.z');
        const { result } = await runProgram(engine, 'pipeline', (rec) => ({
          eps: pipe.unet!.forward(rec, sample, Number(ug.getF32('input.timestep')[0]), ehs).eps,
          text: pipe.textEncoder!.forward(rec, ids, [1, 77]),
          image: pipe.vae!.decode(rec, z),
        }));
        expectClose(await result.eps.read(), ug.getF32('eps'), { atol: 2e-4, rtol: 1e-3 }, 'unet eps');
        expectClose(await result.text.lastHiddenState.read(), cg.getF32('last_hidden_state').subarray(0, 77 * 48), { atol: 1e-4, rtol: 1e-4 }, 'text');
        expectClose(await result.image.read(), vg.getF32('dec.sample'), { atol: 2e-4, rtol: 1e-3 }, 'vae decode');
        for (const t of [sample, ehs, z, result.eps, result.text.lastHiddenState, result.text.pooledOutput, result.image]) t.dispose();
      } finally {
        pipe.dispose();
      }
      expect(engine.pool.stats.liveBytes).toBe(live); // dispose() freed every weight
    });
  }

  it('names a component that the index lacks and a folder without model_index.json', async () => {
    writeFileSync(join(root, 'sd/model_index_partial.json'), '{}');
    await expect(loadDiffusersPipeline(engine, dirFolder(join(root, 'nowhere')))).rejects.toThrow(/nowhere\/model_index\.json/);
    mkdirSync(join(root, 'partial'), { recursive: true });
    writeFileSync(join(root, 'partial/model_index.json'), JSON.stringify({ unet: ['diffusers', 'UNet2DConditionModel'] }));
    await expect(loadDiffusersPipeline(engine, dirFolder(join(root, 'partial')))).rejects.toThrow(/partial\/model_index\.json: has no "vae" component/);
    await expect(loadDiffusersPipeline(engine, dirFolder(join(root, 'partial')), { components: ['unet'] })).rejects.toThrow(/partial\/unet\/config\.json/);
  });
});
