// SILO's released operators: the registry (which checkpoint each task uses, and the messages where
// none fits), and `silo convert` on checkpoints in SILO's formats (readout dicts -> folder; bare CNN
// state dicts -> one file). No GPU: converted tensors are compared bit for bit with the originals.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { releasedOperator, selectReleasedOperators, RELEASED_OPERATORS, OperatorNotReleasedError, PRIOR_RV, PRIOR_SD15 } from '../src/hub/silo-operators.js';
import { convertOpenSiloCheckpoint, convertSiloCheckpoint } from '../src/hub/silo-convert-node.js';
import { TorchCheckpoint } from '../src/formats/torch-checkpoint.js';
import { SiloCheckpointError } from '../src/hub/silo-checkpoint.js';
import { aggregationConfig, inferDegradationConfig } from '../src/models/silo/config.js';
import { parseSafetensors } from '../src/formats/safetensors.js';
import { main, type CliIO } from '../src/cli/silo.js';
import { DEGRADATION_TASKS } from '../src/solvers/degradations/tasks.js';
import { readoutCheckpoint, readoutDims, siloTrainConfig, stateDictCheckpoint, tinyCnnWeights, tinyReadoutWeights, type Weights } from './helpers/silo-release.js';
import type { Spec } from './helpers/torch-fixtures.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'silo-ops-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function capture(): CliIO & { outText: () => string; errText: () => string } {
  const out: string[] = [];
  const err: string[] = [];
  return { out: (l) => out.push(l), err: (l) => err.push(l), outText: () => out.join('\n'), errText: () => err.join('\n') };
}

/** Every tensor of `file` equals the original bit for bit, and nothing else is in it. */
function expectSameTensors(file: string, w: Weights) {
  const f = parseSafetensors(readFileSync(file), file);
  expect(f.names().sort()).toEqual([...w.keys()].sort());
  for (const [name, t] of w) {
    expect(f.info(name).shape, name).toEqual(t.shape);
    expect(f.info(name).dtype, name).toBe('F32');
    expect(Buffer.compare(Buffer.from(f.getBytes(name)), Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), name).toBe(0);
  }
}

describe('the registry of released operators', () => {
  it('has one row per checkpoint SILO\'s scripts load, with their settings', () => {
    expect(RELEASED_OPERATORS.map((r) => r.path).sort()).toEqual([
      'trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt',
      'trained_ckpt/RG/gb_rg_ffhq_operator.pt',
      'trained_ckpt/RG/ip_rg_coco_operator.pt',
      'trained_ckpt/RG/ip_rg_ffhq_operator.pt',
      'trained_ckpt/RG/jpeg_rg_ffhq_operator.pt',
      'trained_ckpt/RG/rand_ip_rg_ffhq_operator.pt',
      'trained_ckpt/RG/sr_4_cnn_ffhq_operator.pt',
      'trained_ckpt/RG/sr_4_rg_ffhq_operator.pt',
      'trained_ckpt/RG/sr_8_rg_ffhq_operator.pt',
    ]);
    expect(releasedOperator('gaussian_blur')).toMatchObject({ method: 'silo-rg', kind: 'readout', prior: PRIOR_RV, eta: 0.5, clamp: true, prompt: 'A high quality photo of a face', script: 'scripts/rg_ffhq_gb.sh' });
    expect(releasedOperator('inpaint_random')).toMatchObject({ path: 'trained_ckpt/RG/rand_ip_rg_ffhq_operator.pt', eta: 1, condInpaint: true, clamp: false });
    expect(releasedOperator('jpeg10')).toMatchObject({ eta: 0.5, clamp: false });
    expect(releasedOperator('inpaint_center', undefined, 'coco')).toMatchObject({ prior: PRIOR_SD15, prompt: 'A high quality photo', dataset: 'coco' });
  });

  it('with no method picks what SILO runs: FFHQ rows first, the CNN for sr8 (its fast path)', () => {
    expect(releasedOperator('sr4')).toMatchObject({ method: 'silo-rg', path: 'trained_ckpt/RG/sr_4_rg_ffhq_operator.pt', prior: PRIOR_RV });
    expect(releasedOperator('sr8')).toMatchObject({ method: 'silo-cnn', kind: 'cnn', path: 'trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt' });
    expect(releasedOperator('sr8', 'silo-rg').path).toBe('trained_ckpt/RG/sr_8_rg_ffhq_operator.pt');
    expect(releasedOperator('inpaint_center').dataset).toBe('ffhq');
    // sr4's CNN is the "preserve" network SILO runs on COCO with SD-1.5 (cnn_coco_sr_4.sh); usable since it has a VJP.
    const preserve = { kind: 'preserve', dataset: 'coco', prior: PRIOR_SD15, eta: 0.75, clamp: true, prompt: 'A high quality photo', script: 'scripts/cnn_coco_sr_4.sh' };
    expect(releasedOperator('sr4', 'silo-cnn')).toMatchObject(preserve);
    expect(releasedOperator('sr4', undefined, 'coco')).toMatchObject(preserve);
  });

  it('says plainly when no released operator fits, what the release has, and what would do', () => {
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(OperatorNotReleasedError);
        return (e as Error).message;
      }
      throw new Error('no error');
    };
    const sr4rgCoco = err(() => releasedOperator('sr4', 'silo-rg', 'coco'));
    expect(sr4rgCoco).toMatch(/no released operator for sr4 with --method silo-rg \(coco\)/);
    expect(sr4rgCoco).toMatch(/silo-cnn "preserve" CNN \(COCO, SD-1\.5 prior, trained_ckpt\/RG\/sr_4_cnn_ffhq_operator\.pt\)/);
    expect(sr4rgCoco).toMatch(/Use --method silo-cnn, or --operator with a readout operator folder trained for sr4 \(silo train, issue #13\)/);
    const gbcnn = err(() => releasedOperator('gaussian_blur', 'silo-cnn'));
    expect(gbcnn).toMatch(/silo-rg readout \(FFHQ, Realistic Vision v5\.1 prior, trained_ckpt\/RG\/gb_rg_ffhq_operator\.pt\)/);
    expect(gbcnn).toMatch(/Use --method silo-rg, or --operator with a DegradationModel/);
    for (const t of ['motion_blur', 'avgpool4']) {
      const m = err(() => releasedOperator(t));
      expect(m).toMatch(new RegExp(`SILO released no operator for ${t}`));
      expect(m).toMatch(/latent-dps and psld need no operator/);
    }
    expect(err(() => releasedOperator('sr4', 'psld'))).toMatch(/method psld uses no SILO operator/);
    expect(err(() => releasedOperator('sr16'))).toMatch(/unknown task "sr16" \(known: gaussian_blur/);
    expect(err(() => releasedOperator('jpeg10', undefined, 'coco'))).toMatch(/no released operator for jpeg10 \(coco\)/);
  });

  it('covers every task either with an operator or with a message', () => {
    for (const t of DEGRADATION_TASKS) {
      if (t === 'motion_blur' || t === 'avgpool4') expect(() => releasedOperator(t)).toThrow(OperatorNotReleasedError);
      else expect(releasedOperator(t).task).toBe(t);
    }
    expect(selectReleasedOperators({ all: true })).toHaveLength(RELEASED_OPERATORS.length);
    expect(selectReleasedOperators({ all: true, method: 'silo-cnn' }).map((r) => r.kind).sort()).toEqual(['cnn', 'preserve']);
    expect(selectReleasedOperators({ tasks: ['sr4', 'sr4', 'sr8'] }).map((r) => r.name)).toEqual(['sr_4_rg_ffhq_operator', 'sr_8_cnn_ffhq_operator']);
  });
});

describe('silo convert on SILO checkpoints', () => {
  it('a readout dict becomes a folder: config from the shapes, stored step/config kept, optimizer left out, tensors bit-exact', async () => {
    const w = tinyReadoutWeights({ condInpaint: true });
    const src = join(dir, 'rand_ip_rg_ffhq_operator.pt');
    writeFileSync(src, readoutCheckpoint(w, { step: 34000 }));
    const out = join(dir, 'rand-ip');
    const io = capture();
    expect(await main(['convert', src, out], io)).toBe(0);
    expect(io.outText()).toMatch(/SILO readout operator folder/);
    expect(io.outText()).toMatch(/left out optimizer_state_dict/);
    expect(readdirSync(out).sort()).toEqual(['config.json', 'weights.safetensors']);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      projection_dim: 128, feature_dims: [8, 8, 4], save_timestep: [0], num_timesteps: 1000, use_output_head: true, output_head_channels: 4,
      output_head_act: false, bottleneck_sequential: false, sigma_condition: true, cond_inpaint: true, latent_size: 8, sigma_emb_dim: 16,
    });
    expect(cfg._silo_checkpoint.step).toBe(34000);
    expect(cfg._silo_checkpoint.dropped).toEqual(['optimizer_state_dict']);
    expect(cfg._silo_checkpoint.config).toMatchObject({ lr: 0.0002, dims: [8, 8, 4], dataset_args: { control_range: [-1, 1] }, aggregation_kwargs: { cond_inpaint: true } });
    // The stored config said cond_inpaint true, the tensors agree: no note.
    expect(io.errText()).toBe('');
    const parsed = aggregationConfig(cfg);
    expect(parsed).toMatchObject({ featureDims: [8, 8, 4], projectionDim: 128, condInpaint: true, latentSize: 8, sigmaEmbDim: 16 });
    expectSameTensors(join(out, 'weights.safetensors'), w); // no optimizer tensor, nothing missing
    // A rerun replaces the folder it wrote.
    expect(await main(['convert', src, out], capture())).toBe(0);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp') || f.endsWith('.old'))).toEqual([]);
  });

  it('a bare CNN state dict still converts to one file, loadable as a DegradationModel', async () => {
    const w = tinyCnnWeights();
    const src = join(dir, 'sr_8_cnn_ffhq_operator.pt');
    writeFileSync(src, stateDictCheckpoint(w));
    const out = join(dir, 'cnn.safetensors');
    const r = await convertSiloCheckpoint(src, out);
    expect(r.layout).toBe('state-dict');
    expectSameTensors(out, w);
    expect(inferDegradationConfig(parseSafetensors(readFileSync(out), out))).toMatchObject({ latentDim: 4, sigmaCondition: true, latentSize: 8, sigmaEmbDim: 16 });
  });

  it('stored settings the tensors overrule are reported; a contradiction in dims or projection_dim is refused naming both', async () => {
    const w = tinyReadoutWeights();
    const d = readoutDims(w);
    const config = (patch: (c: { dict: [string, Spec][] }) => void) => {
      const c = siloTrainConfig(d.featureDims, d.projection, { condInpaint: true }) as { dict: [string, Spec][] };
      patch(c);
      return c as Spec;
    };
    const note = join(dir, 'note.pt');
    writeFileSync(note, readoutCheckpoint(w, { config: config(() => {}) }));
    const io = capture();
    expect(await main(['convert', note, join(dir, 'note-out')], io)).toBe(0);
    expect(io.errText()).toMatch(/note: the stored config says aggregation_kwargs\.cond_inpaint true, the tensors need false: using false/);

    const badDims = join(dir, 'bad-dims.pt');
    writeFileSync(badDims, readoutCheckpoint(w, { config: config((c) => (c.dict.find(([k]) => k === 'dims')![1] = [1280, 640, 320])) }));
    const e1 = capture();
    expect(await main(['convert', badDims, join(dir, 'bad-dims-out')], e1)).toBe(1);
    expect(e1.errText()).toMatch(/bad-dims\.pt: the stored config says dims \[1280,640,320\] but the tensors give feature_dims \[8,8,4\]/);
    expect(existsSync(join(dir, 'bad-dims-out'))).toBe(false);

    const badProj = join(dir, 'bad-proj.pt');
    writeFileSync(badProj, readoutCheckpoint(w, { config: config((c) => (c.dict.find(([k]) => k === 'projection_dim')![1] = 384)) }));
    await expect(convertSiloCheckpoint(badProj, join(dir, 'bad-proj-out'))).rejects.toThrow(/stored config says projection_dim 384 but the tensors give 128/);
    expect(readdirSync(dir).filter((f) => f.includes('bad-proj-out'))).toEqual([]);
  });

  it('refuses what is not a readout dict where one is expected, a .safetensors output for a folder, and a foreign folder', async () => {
    // aggregation_network holding something that is not an AggregationNetwork state dict.
    const odd = join(dir, 'odd.pt');
    writeFileSync(odd, readoutCheckpoint(tinyCnnWeights(), { config: siloTrainConfig([8], 128) }));
    await expect(convertSiloCheckpoint(odd, join(dir, 'odd-out'))).rejects.toThrow(SiloCheckpointError);
    await expect(convertSiloCheckpoint(odd, join(dir, 'odd-out'))).rejects.toThrow(/odd\.pt: aggregation_network has no bottleneck_layers\.0\.conv1\.weight: not a SILO AggregationNetwork state dict/);

    // Where the release promises a readout dict (silo pull), a bare state dict is refused by name.
    const bare = await TorchCheckpoint.open(stateDictCheckpoint(tinyCnnWeights()), 'bare.pt');
    await expect(convertOpenSiloCheckpoint(bare, 'bare.pt', join(dir, 'bare-out'), {}, 'readout')).rejects.toThrow(
      /bare\.pt: not a SILO readout checkpoint \(expected a dict with an "aggregation_network" state dict; found keys sigma_condition_precondition\.0\.weight/,
    );
    expect(existsSync(join(dir, 'bare-out'))).toBe(false);

    const rg = join(dir, 'rg.pt');
    writeFileSync(rg, readoutCheckpoint(tinyReadoutWeights()));
    const io = capture();
    expect(await main(['convert', rg, join(dir, 'rg.safetensors')], io)).toBe(1);
    expect(io.errText()).toMatch(/is a SILO readout checkpoint, which converts to a folder .* --key aggregation_network/);
    // --key aggregation_network: the bare weights as one file, as before.
    expect(await main(['convert', rg, join(dir, 'rg.safetensors'), '--key', 'aggregation_network'], capture())).toBe(0);
    expect(parseSafetensors(readFileSync(join(dir, 'rg.safetensors')), 'rg').names()).toContain('mixing_weights');

    const foreign = join(dir, 'foreign');
    mkdirSync(foreign);
    writeFileSync(join(foreign, 'notes.txt'), 'mine');
    const f = capture();
    expect(await main(['convert', rg, foreign], f)).toBe(1);
    expect(f.errText()).toMatch(/cannot write .*foreign: it exists and is not a converted operator folder/);
    expect(readFileSync(join(foreign, 'notes.txt'), 'utf8')).toBe('mine');
  });
});
