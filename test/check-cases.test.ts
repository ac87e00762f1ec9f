// Golden case runners read every input and choice a case stores: variant case folders built in a temp
// dir from the REAL shared golden data (rows sliced, tensors re-labelled, a weight folded so a stored
// input must flow through unchanged results), never from our own outputs. Each variant passes when the
// runner honours the choice and fails (or is refused, naming the folder and the key) when it would not.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../src/engine/device.js';
import { parseSafetensors, serializeSafetensors, type SafetensorsEntry, type SafetensorsFile } from '../src/formats/safetensors.js';
import { dirCaseFiles } from '../src/check/files-node.js';
import { compare } from '../src/check/compare.js';
import { CaseError } from '../src/check/contract.js';
import { detectKind } from '../src/check/registry.js';
import { runClipTextMini } from '../src/check/clip.js';
import { runSiloRg } from '../src/check/silo_rg.js';
import { runSiloCnn } from '../src/check/silo_cnn.js';
import { runSiloStep, runDpsStep } from '../src/check/steps.js';
import { runUNetCase } from '../src/check/unet.js';
import { runSchedulers } from '../src/check/schedulers.js';
import { runDegradations } from '../src/check/degradations.js';
import { main, type CliIO } from '../src/cli/silo.js';
import { getEngine } from './helpers/engine.js';
import { expectAllPass, goldenDir, goldenManifest } from './helpers/golden.js';

type Json = Record<string, unknown>;
type Entries = Record<string, SafetensorsEntry>;

let engine: Engine;
let tmp: string;
beforeAll(async () => {
  engine = await getEngine();
  tmp = mkdtempSync(join(tmpdir(), 'silo-cases-'));
  // The step cases name their models as ../unet_mini, ../silo_cnn, ../vae_mini: link them beside the variants.
  for (const c of ['unet_mini', 'silo_cnn', 'vae_mini']) symlinkSync(goldenDir(c), join(tmp, c));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const load = (path: string): SafetensorsFile => parseSafetensors(readFileSync(path), path);

/** Every tensor of a file as raw entries, to edit and re-serialise. */
function entriesOf(file: SafetensorsFile): Entries {
  const out: Entries = {};
  for (const n of file.names()) {
    const info = file.info(n);
    out[n] = { dtype: info.dtype as SafetensorsEntry['dtype'], shape: info.shape, data: file.getBytes(n).slice() };
  }
  return out;
}

/** Rows `rows` (in that order) of a tensor's first axis. */
function rowsOf(file: SafetensorsFile, name: string, rows: number[]): SafetensorsEntry {
  const info = file.info(name);
  const bytes = file.getBytes(name);
  const rowBytes = bytes.byteLength / info.shape[0]!;
  const out = new Uint8Array(rowBytes * rows.length);
  rows.forEach((r, i) => out.set(bytes.subarray(r * rowBytes, (r + 1) * rowBytes), i * rowBytes));
  return { dtype: info.dtype as SafetensorsEntry['dtype'], shape: [rows.length, ...info.shape.slice(1)], data: out };
}

/**
 * A case folder `name` in the temp dir: the source case's files linked (weights and configs are not
 * copied), then the given files written over them.
 */
function variant(name: string, source: string, links: string[], write: Record<string, string | Uint8Array>): string {
  const dir = join(tmp, name);
  mkdirSync(dir);
  for (const f of links) symlinkSync(join(goldenDir(source), f), join(dir, f));
  for (const [f, data] of Object.entries(write)) writeFileSync(join(dir, f), data);
  return dir;
}

const run = (dir: string) => dirCaseFiles(dir);
const manifestOf = (dir: string): Json => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Json;
const fails = (items: { name: string }[], name: string) => items.filter((i) => i.name === name).map((i) => compare(i as Parameters<typeof compare>[0]).pass);

async function refused(p: Promise<unknown>, dir: string, key: RegExp): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, 'the runner must refuse the case').toBeInstanceOf(CaseError);
  expect((err as Error).message).toContain(dir);
  expect((err as Error).message).toMatch(key);
}

describe('clip: model_prompt_indices', () => {
  const links = ['config.json', 'model.safetensors', 'tokens.json', 'bpe_simple_vocab_16e6.txt.gz'];
  const golden = () => load(join(goldenDir('clip_text_mini'), 'golden.safetensors'));

  /** The shared case re-cut to the prompts `order` of its model rows (the shared case ran prompts [0, 1]). */
  function clipVariant(name: string, order: number[], manifestIndices: unknown): string {
    const g = golden();
    const e = entriesOf(g);
    for (const n of ['input.input_ids', 'last_hidden_state', 'pooled_output']) e[n] = rowsOf(g, n, order);
    const m: Json = { ...goldenManifest('clip_text_mini'), model_prompt_indices: manifestIndices };
    if (manifestIndices === undefined) delete m['model_prompt_indices'];
    for (const n of ['input.input_ids', 'last_hidden_state', 'pooled_output']) (m['tensors'] as Record<string, Json>)[n] = { shape: e[n]!.shape, dtype: (m['tensors'] as Record<string, Json>)[n]!['dtype'] };
    return variant(name, 'clip_text_mini', links, { 'manifest.json': JSON.stringify(m), 'golden.safetensors': serializeSafetensors(e) });
  }

  it('runs the prompts the manifest names, in its order ([1, 0] and [1]), and fails if they were taken as the first B', async () => {
    expect(goldenManifest('clip_text_mini')['model_prompt_indices']).toEqual([0, 1]);
    // Prompts 1 and 0 (rows swapped): passes only when the runner reads the indices.
    const swapped = clipVariant('clip_1_0', [1, 0], [1, 0]);
    expectAllPass(await runClipTextMini(engine, run(swapped), manifestOf(swapped), {}), 'clip [1, 0]');
    const second = clipVariant('clip_1', [1], [1]);
    expectAllPass(await runClipTextMini(engine, run(second), manifestOf(second), {}), 'clip [1]');
    // The same golden data under the shared set's assumption (the first B prompts) must fail on the ids.
    const assumed = clipVariant('clip_1_0_assumed', [1, 0], [0, 1]);
    const items = await runClipTextMini(engine, run(assumed), manifestOf(assumed), {});
    expect(fails(items, 'input.input_ids')).toEqual([false]);
  });

  it('refuses a missing, out-of-range or mis-sized model_prompt_indices, naming the folder and the key', async () => {
    for (const [name, indices, why] of [
      ['clip_none', undefined, /model_prompt_indices.*missing/],
      ['clip_range', [0, 17], /model_prompt_indices.*prompt indices in \[0, 17\)/],
      ['clip_size', [0], /model_prompt_indices.*names 1 prompts, but input\.input_ids has 2 rows/],
    ] as const) {
      const dir = clipVariant(name, [0, 1], indices);
      await refused(runClipTextMini(engine, run(dir), manifestOf(dir), {}), dir, why);
    }
  });

  it('refuses a manifest choice or a stored input it does not understand', async () => {
    const m = { ...goldenManifest('clip_text_mini'), negative_prompt_indices: [2] };
    const dir = variant('clip_choice', 'clip_text_mini', [...links, 'golden.safetensors'], { 'manifest.json': JSON.stringify(m) });
    await refused(runClipTextMini(engine, run(dir), manifestOf(dir), {}), dir, /manifest\.json "negative_prompt_indices": a choice the clip runner does not understand/);
    const e = entriesOf(golden());
    e['input.attention_mask'] = { dtype: 'I64', shape: [2, 77], data: new BigInt64Array(154).fill(1n) };
    const m2 = goldenManifest('clip_text_mini');
    (m2['tensors'] as Json)['input.attention_mask'] = { shape: [2, 77], dtype: 'int64' };
    const dir2 = variant('clip_mask', 'clip_text_mini', links, { 'manifest.json': JSON.stringify(m2), 'golden.safetensors': serializeSafetensors(e) });
    await refused(runClipTextMini(engine, run(dir2), manifestOf(dir2), {}), dir2, /tensor "input\.attention_mask": an input the clip runner does not understand/);
  });
});

describe('silo_rg: input.cond_inpaint', () => {
  const C = 128;
  const CIN = 385;
  /** SILO's cond_inpaint network: one more head input channel (the mask) after sigma_map. */
  function condConfig(): Json {
    return { ...(JSON.parse(readFileSync(join(goldenDir('silo_rg'), 'config.json'), 'utf8')) as Json), cond_inpaint: true };
  }

  /**
   * The shared weights with output_head.0 widened to the mask channel: its 3x3 kernel is zero except the
   * centre tap, c_o per output channel, and c_o is taken off the bias. With an all-ones mask the centre
   * tap adds exactly c_o everywhere, so the output is the shared golden output; with any other mask it is
   * not. The forward-only golden (no VJP tensors) keeps the test to one forward pass per variant.
   */
  function condVariant(name: string, mask: Float32Array | null, config: Json): string {
    const w = load(join(goldenDir('silo_rg'), 'weights.safetensors'));
    const e = entriesOf(w);
    const k = w.getF32('output_head.0.weight');
    const bias = Float32Array.from(w.getF32('output_head.0.bias'));
    const widened = new Float32Array(C * (CIN + 1) * 9);
    for (let o = 0; o < C; o++) {
      widened.set(k.subarray(o * CIN * 9, (o + 1) * CIN * 9), o * (CIN + 1) * 9);
      const c = 0.25 * (((o * 37) % 17) / 8 - 1); // in [-0.25, 0.25], varied per channel
      widened[(o * (CIN + 1) + CIN) * 9 + 4] = c;
      bias[o] = bias[o]! - c;
    }
    e['output_head.0.weight'] = { dtype: 'F32', shape: [C, CIN + 1, 3, 3], data: widened };
    e['output_head.0.bias'] = { dtype: 'F32', shape: [C], data: bias };
    const g = load(join(goldenDir('silo_rg'), 'golden.safetensors'));
    const ge = entriesOf(g);
    const m = goldenManifest('silo_rg');
    const table = m['tensors'] as Record<string, Json>;
    delete (m['seeds'] as Json)['vjp_cotangent'];
    for (const n of Object.keys(ge)) {
      if (n === 'input.vjp_cotangent' || n.startsWith('vjp_')) {
        delete ge[n];
        delete table[n];
      }
    }
    if (mask) {
      ge['input.cond_inpaint'] = { dtype: 'F32', shape: [1, 1, 64, 64], data: mask };
      table['input.cond_inpaint'] = { shape: [1, 1, 64, 64], dtype: 'float32' };
    }
    m['config'] = config;
    return variant(name, 'silo_rg', [], {
      'manifest.json': JSON.stringify(m),
      'config.json': JSON.stringify(config),
      'weights.safetensors': serializeSafetensors(e),
      'golden.safetensors': serializeSafetensors(ge),
    });
  }

  it('passes the stored mask to the network: the folded all-ones case matches the shared golden, a zero mask does not', async () => {
    const ones = condVariant('rg_cond_ones', new Float32Array(64 * 64).fill(1), condConfig());
    const items = await runSiloRg(engine, run(ones), manifestOf(ones), {});
    expect(items.map((i) => i.name)).toContain('output');
    expectAllPass(items, 'silo_rg cond_inpaint (ones)');
    // The same network with a zero mask: the centre tap adds nothing, the bias shift shows in the output.
    const zeros = condVariant('rg_cond_zeros', new Float32Array(64 * 64), condConfig());
    const z = await runSiloRg(engine, run(zeros), manifestOf(zeros), {});
    expect(fails(z, 'output')).toEqual([false]);
    // Two forward passes of the 64x64 readout network: ~30-80 s on a busy CPU adapter.
  }, 300_000);

  it('refuses a cond_inpaint network without input.cond_inpaint, and a stored mask for a network without cond_inpaint', async () => {
    const missing = condVariant('rg_cond_missing', null, condConfig());
    await refused(runSiloRg(engine, run(missing), manifestOf(missing), {}), missing, /golden tensor "input\.cond_inpaint": missing: config cond_inpaint = true/);
    const g = load(join(goldenDir('silo_rg'), 'golden.safetensors'));
    const ge = entriesOf(g);
    ge['input.cond_inpaint'] = { dtype: 'F32', shape: [1, 1, 64, 64], data: new Float32Array(4096).fill(1) };
    const m = goldenManifest('silo_rg');
    (m['tensors'] as Json)['input.cond_inpaint'] = { shape: [1, 1, 64, 64], dtype: 'float32' };
    const extra = variant('rg_mask_unused', 'silo_rg', ['config.json', 'weights.safetensors'], { 'manifest.json': JSON.stringify(m), 'golden.safetensors': serializeSafetensors(ge) });
    await refused(runSiloRg(engine, run(extra), manifestOf(extra), {}), extra, /"input\.cond_inpaint": stored, but the network does not take it \(config cond_inpaint = false\)/);
  });

  it('refuses a manifest config or readout resolution that disagrees with the case', async () => {
    const m = goldenManifest('silo_rg');
    m['config'] = { ...(m['config'] as Json), cond_inpaint: true };
    const dir = variant('rg_config', 'silo_rg', ['config.json', 'weights.safetensors', 'golden.safetensors'], { 'manifest.json': JSON.stringify(m) });
    await refused(runSiloRg(engine, run(dir), manifestOf(dir), {}), dir, /manifest\.json config\.cond_inpaint: true, but config\.json says false/);
    const m2 = goldenManifest('silo_rg');
    m2['readout'] = { ...(m2['readout'] as Json), latent_dim: 32 };
    const dir2 = variant('rg_latent', 'silo_rg', ['config.json', 'weights.safetensors', 'golden.safetensors'], { 'manifest.json': JSON.stringify(m2) });
    await refused(runSiloRg(engine, run(dir2), manifestOf(dir2), {}), dir2, /readout\.latent_dim: 32: features are resized to 64/);
  });
});

describe('step cases: the scheduler, t_index and measurement the manifest names', () => {
  it('silo_step: set_timesteps(50) is read (t = 500 is not on that schedule) and refused instead of assuming 999', async () => {
    const m = goldenManifest('silo_step');
    m['scheduler'] = String(m['scheduler']).replace('set_timesteps(999)', 'set_timesteps(50)');
    const dir = variant('step_50', 'silo_step', ['golden.safetensors'], { 'manifest.json': JSON.stringify(m) });
    await refused(runSiloStep(engine, run(dir), manifestOf(dir), {}), dir, /steps\[0\]\.t_index: 499, but timestep 500 is not on the set_timesteps\(50\) schedule/);
  });

  it('silo_step: a scheduler it does not understand, an unknown step key or a seed for an unstored tensor is refused', async () => {
    const base = () => goldenManifest('silo_step');
    const m1 = base();
    m1['scheduler'] = 'DDIMScheduler.from_config(SD-1.5 scheduler config); set_timesteps(50)';
    const d1 = variant('step_ddim', 'silo_step', ['golden.safetensors'], { 'manifest.json': JSON.stringify(m1) });
    await refused(runSiloStep(engine, run(d1), manifestOf(d1), {}), d1, /manifest\.json "scheduler": .* is not understood/);
    const m2 = base();
    (m2['steps'] as Json[])[1]!['cfg_scale'] = 7.5;
    const d2 = variant('step_cfg', 'silo_step', ['golden.safetensors'], { 'manifest.json': JSON.stringify(m2) });
    await refused(runSiloStep(engine, run(d2), manifestOf(d2), {}), d2, /steps\[1\]\.cfg_scale: a choice the silo_step runner does not understand/);
    const m3 = base();
    ((m3['steps'] as Json[])[0]!['seeds'] as Json)['uncond_noise'] = 5;
    const d3 = variant('step_seed', 'silo_step', ['golden.safetensors'], { 'manifest.json': JSON.stringify(m3) });
    await refused(runSiloStep(engine, run(d3), manifestOf(d3), {}), d3, /steps\[0\]\.seeds\.uncond_noise: a seed for a tensor the golden file does not store/);
  });

  it('dps_step: the measurement operator is read from the manifest (avg_pool2d(image, 2) does not fit input.y)', async () => {
    const m = goldenManifest('dps_step');
    m['measurement'] = String(m['measurement']).replace('avg_pool2d(image, 4)', 'avg_pool2d(image, 2)');
    const dir = variant('dps_pool2', 'dps_step', ['golden.safetensors'], { 'manifest.json': JSON.stringify(m) });
    await refused(runDpsStep(engine, run(dir), manifestOf(dir), {}), dir, /golden tensor "input\.y": \[1,3,32,32\] is not avg_pool2d\(decode\(z_t\), 2\)/);
    const m2 = goldenManifest('dps_step');
    m2['measurement'] = 'input.y = blur(image)';
    const dir2 = variant('dps_blur', 'dps_step', ['golden.safetensors'], { 'manifest.json': JSON.stringify(m2) });
    await refused(runDpsStep(engine, run(dir2), manifestOf(dir2), {}), dir2, /manifest\.json "measurement": .* is not understood/);
  });
});

describe('other runners refuse what they would ignore', () => {
  it('unet: an extra stored input; silo_cnn: a sigma_emb-less case, an unknown file; schedulers: an unknown trace key; degradations: an unknown operator', async () => {
    const ug = load(join(goldenDir('unet_mini'), 'golden.safetensors'));
    const ue = entriesOf(ug);
    ue['input.class_labels'] = { dtype: 'I64', shape: [1], data: new BigInt64Array([3n]) };
    const um = goldenManifest('unet_mini');
    delete um['tensors'];
    const ud = variant('unet_class', 'unet_mini', ['config.json', 'diffusion_pytorch_model.safetensors'], { 'manifest.json': JSON.stringify(um), 'golden.safetensors': serializeSafetensors(ue) });
    await refused(runUNetCase(engine, run(ud), manifestOf(ud), {}), ud, /tensor "input\.class_labels": an input the unet runner does not understand/);

    const cg = load(join(goldenDir('silo_cnn'), 'golden.safetensors'));
    const ce = entriesOf(cg);
    delete ce['input.sigma_emb'];
    const cm = goldenManifest('silo_cnn');
    delete (cm['tensors'] as Json)['input.sigma_emb'];
    const cd = variant('cnn_nosigma', 'silo_cnn', ['weights.safetensors'], { 'manifest.json': JSON.stringify(cm), 'golden.safetensors': serializeSafetensors(ce) });
    await refused(runSiloCnn(engine, run(cd), manifestOf(cd), {}), cd, /golden tensor "input\.sigma_emb": missing: the weights are sigma-conditioned/);
    const fm = goldenManifest('silo_cnn');
    fm['files'] = { ...(fm['files'] as Json), mask: 'mask.safetensors' };
    const fd = variant('cnn_file', 'silo_cnn', ['weights.safetensors', 'golden.safetensors'], { 'manifest.json': JSON.stringify(fm) });
    await refused(runSiloCnn(engine, run(fd), manifestOf(fd), {}), fd, /manifest\.json files\.mask: a file the silo_cnn runner does not read/);

    const sm = goldenManifest('schedulers');
    ((sm['traces'] as Record<string, Json>)['ddim50_eta1']!)['clip_sample'] = true;
    const sd = variant('sched_clip', 'schedulers', ['golden.safetensors'], { 'manifest.json': JSON.stringify(sm) });
    await refused(runSchedulers(engine, run(sd), manifestOf(sd), {}), sd, /traces\.ddim50_eta1\.clip_sample: not understood/);

    const dm = goldenManifest('degradations');
    (dm['what'] as Json)['motion_blur'] = 'MotionBlurOperator(kernel_size=61, intensity=0.5)';
    const dd = variant('deg_motion', 'degradations', ['golden.safetensors'], { 'manifest.json': JSON.stringify(dm) });
    await refused(runDegradations(engine, run(dd), manifestOf(dd), {}), dd, /what\.motion_blur: an operator the degradations runner does not know/);
  });
});

describe('silo_cnn_train through silo check', () => {
  function capture(): CliIO & { lines: string[]; errors: string[] } {
    const lines: string[] = [];
    const errors: string[] = [];
    return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l) };
  }

  it('is run by its own runner (a variant of it too), never as silo_cnn, and passes', async () => {
    const files = dirCaseFiles(goldenDir('silo_cnn_train'));
    const manifest = goldenManifest('silo_cnn_train');
    expect(await detectKind(files, manifest)).toBe('silo_cnn_train');
    expect(await detectKind(files, { ...manifest, case: 'silo_cnn_train_seed2' })).toBe('silo_cnn_train');
    expect(await detectKind(files, { ...manifest, case: 'silo_cnn_b4' })).toBe('silo_cnn');
    const io = capture();
    expect(await main(['check', goldenDir('silo_cnn_train')], io)).toBe(0);
    expect(io.lines.some((l) => /\(silo_cnn_train, f32\)/.test(l))).toBe(true);
    expect(io.lines.some((l) => /ok\s+after_3\.encoder\.1\.weight/.test(l))).toBe(true);
    expect(io.lines.some((l) => /131 of 131 tensors pass/.test(l))).toBe(true);
    // Handed to the silo_cnn runner anyway (--kind silo_cnn), its training tensors are refused by name.
    await refused(runSiloCnn(engine, files, manifest, {}), goldenDir('silo_cnn_train'), /a choice the silo_cnn runner does not understand|an input the silo_cnn runner does not understand/);
  });
});
