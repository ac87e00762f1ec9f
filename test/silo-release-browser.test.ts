// SILO's released operators out of a trained_ckpt.zip picked in the browser (operatorFromReleaseZip,
// and resolveBrowserModels' 'release-zip' source): the zip is the test imitation of the release, built
// from the golden weights by torch-fixtures.ts (independent of src/formats). The converted tensors
// equal the golden ones, the readout config equals what the golden case was built with, the models
// load, SILO's settings for the operator come along; a wrong zip, a missing entry, a corrupt entry, a
// checkpoint of the wrong kind and a task SILO released nothing for are named.
import { beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import type { Engine } from '../src/engine/device.js';
import { bytesSource } from '../src/formats/zip.js';
import { dirFolder } from '../src/formats/folder-node.js';
import { operatorFromReleaseZip } from '../src/hub/silo-release-browser.js';
import { openWeightStore } from '../src/hub/weight-store.js';
import { loadModels } from '../src/restore/models.js';
import { resolveBrowserModels } from '../src/restore/models-browser.js';
import { getEngine } from './helpers/engine.js';
import { GOLDEN_ROOT } from './helpers/golden.js';
import { goldenCnnWeights, goldenReadoutWeights, goldenReleaseZip, releaseZip, stateDictCheckpoint, type Weights } from './helpers/silo-release.js';

let engine: Engine;
let zip: Uint8Array;
beforeAll(async () => {
  engine = await getEngine();
  zip = goldenReleaseZip(['sr4']);
}, 60_000);

async function expectSameTensors(folder: { safetensors?(n: string): Promise<{ names(): string[]; getF32(n: string): Float32Array }> }, name: string, want: Weights) {
  const st = await folder.safetensors!(name);
  expect(st.names().sort()).toEqual([...want.keys()].sort());
  for (const [k, w] of want) expect(Array.from(st.getF32(k)), k).toEqual(Array.from(w.data));
}

describe('operatorFromReleaseZip', () => {
  it("sr4: SILO's readout operator, converted in memory, equal to the golden weights, with SILO's settings", async () => {
    const z = await operatorFromReleaseZip(bytesSource(zip, 'trained_ckpt.zip'), 'sr4');
    expect(z.row).toMatchObject({ task: 'sr4', method: 'silo-rg', kind: 'readout', path: 'trained_ckpt/RG/sr_4_rg_ffhq_operator.pt' });
    expect(z.defaults).toEqual({ eta: z.row.eta, prompt: 'A high quality photo of a face', clampW: z.row.clamp, source: `SILO's ${z.row.script}` });
    expect(z.operator.kind).toBe('readout');
    const folder = (z.operator as { folder: Parameters<typeof expectSameTensors>[0] & { text(n: string): Promise<string> } }).folder;
    await expectSameTensors(folder, 'weights.safetensors', goldenReadoutWeights());
    const cfg = JSON.parse(await folder.text('config.json'));
    const golden = JSON.parse(readFileSync(`${GOLDEN_ROOT}/silo_rg/config.json`, 'utf8'));
    for (const k of ['feature_dims', 'projection_dim', 'use_output_head', 'output_head_channels']) expect([k, cfg[k]]).toEqual([k, golden[k]]);
    expect(cfg._silo_checkpoint).toMatchObject({ step: 12000, dropped: ['optimizer_state_dict'] });
    const models = await loadModels(engine, { golden: dirFolder(GOLDEN_ROOT), operator: z.operator });
    try {
      expect(models.base.readout).toBeDefined();
      expect(models.operatorLatentSize).toBe(64);
    } finally {
      models.dispose();
    }
  }, 120_000);

  it("sr8: SILO's CNN (its scripts' choice for sr8), equal to the golden weights", async () => {
    const z = await operatorFromReleaseZip(bytesSource(zip, 'trained_ckpt.zip'), 'sr8');
    expect(z.row).toMatchObject({ task: 'sr8', method: 'silo-cnn', kind: 'cnn' });
    expect(z.operator.kind).toBe('cnn');
    const file = (z.operator as { file: { folder: Parameters<typeof expectSameTensors>[0]; name: string } }).file;
    await expectSameTensors(file.folder, file.name, goldenCnnWeights());
  });

  it('refuses what is not the release, naming the zip and entry', async () => {
    const src = (b: Uint8Array, n = 'x.zip') => bytesSource(b, n);
    await expect(operatorFromReleaseZip(src(new TextEncoder().encode('not a zip at all'), 'notes.zip'), 'sr4')).rejects.toThrow(/notes\.zip/);
    const other = releaseZip({ 'trained_ckpt/CNN/other.pt': stateDictCheckpoint(goldenCnnWeights()) }, { stored: () => true });
    await expect(operatorFromReleaseZip(src(other, 'other.zip'), 'sr4')).rejects.toThrow(
      /other\.zip: no entry trained_ckpt\/RG\/sr_4_rg_ffhq_operator\.pt; is this SILO's trained_ckpt\.zip\? Its checkpoints: trained_ckpt\/CNN\/other\.pt/,
    );
    // The readout's place holding a bare state dict.
    const wrongKind = releaseZip({ 'trained_ckpt/RG/sr_4_rg_ffhq_operator.pt': stateDictCheckpoint(goldenCnnWeights()) }, { stored: () => true });
    await expect(operatorFromReleaseZip(src(wrongKind), 'sr4')).rejects.toThrow(/x\.zip:trained_ckpt\/RG\/sr_4_rg_ffhq_operator\.pt: not a SILO readout checkpoint/);
    // One flipped byte inside the (stored) entry's data, after its local header: the zip's CRC-32 names it.
    const bad = zip.slice();
    const at = new TextDecoder('latin1').decode(bad).indexOf('trained_ckpt/RG/sr_4_rg_ffhq_operator.pt');
    expect(at).toBeGreaterThan(0);
    bad[at + 100_000]! ^= 0xff;
    await expect(operatorFromReleaseZip(src(bad, 'corrupt.zip'), 'sr4')).rejects.toThrow(/corrupt\.zip.*(CRC|crc)/);
    await expect(operatorFromReleaseZip(src(zip), 'avgpool4')).rejects.toThrow(/SILO released no operator for avgpool4/);
  });

  it("resolveBrowserModels' release-zip source: a picked File, with SILO's settings and provenance", async () => {
    const file = new File([zip as Uint8Array<ArrayBuffer>], 'trained_ckpt.zip');
    const lines: string[] = [];
    const r = await resolveBrowserModels({ kind: 'tiny', url: 'http://127.0.0.1:9/unused' }, { kind: 'release-zip', file, task: 'sr4' }, { store: await openWeightStore('memory'), log: (l) => lines.push(l) });
    r.close();
    expect(r.spec.operator?.kind).toBe('readout');
    expect(r.released).toMatchObject({ task: 'sr4', method: 'silo-rg', defaults: { prompt: 'A high quality photo of a face' } });
    expect(r.provenance.operator).toMatchObject({ zip: 'trained_ckpt.zip', entry: 'trained_ckpt/RG/sr_4_rg_ffhq_operator.pt', prior: 'stablediffusionapi/realistic-vision-v51' });
    expect(lines.join('\n')).toMatch(/SILO's silo-rg operator for sr4 \(ffhq\) from trained_ckpt\.zip:trained_ckpt\/RG\/sr_4_rg_ffhq_operator\.pt, converted in memory/);
  });
});
