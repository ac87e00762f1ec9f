// UNet2DConditionModel against diffusers' own outputs in ../shared/golden/unet_mini (read in place): eps,
// the 12 SILO readout features, the time embedding at 7 timesteps (incl. SILO's 199.8) and every debug.*
// module output; an f16 run; the linear-projection path; another structure with small random weights;
// config and weight-file errors.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import type { Engine } from '../../src/engine/device.js';
import { runProgram } from '../../src/engine/recorder.js';
import { transposeLast2 } from '../../src/engine/ops/matmul.js';
import { convTuning } from '../../src/engine/ops/conv2d.js';
import { f32Entry, parseSafetensors, serializeSafetensors, type SafetensorsFile } from '../../src/formats/safetensors.js';
import { readSafetensorsFile } from '../../src/formats/safetensors-node.js';
import { runUNetCase, UNET_F16_TOLERANCE } from '../../src/check/unet.js';
import { WeightLoader, WeightError } from '../../src/models/weights.js';
import { parseUNetConfig, UNetConfigError } from '../../src/models/unet/config.js';
import { UNet2DConditionModel } from '../../src/models/unet/unet.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { expectAllPass, goldenDir, goldenFiles, goldenManifest } from '../helpers/golden.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const size = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
type Shapes = Map<string, number[]>;

/**
 * diffusers' UNet2DConditionModel state-dict names and shapes for an SD-1.x config, written out here
 * independently of the model code (checked against unet_mini's real file below).
 */
function stateDictShapes(raw: Record<string, unknown>): Shapes {
  const c = parseUNetConfig(raw);
  const s: Shapes = new Map();
  const T = c.timeEmbedDim;
  const C0 = c.blockOutChannels[0]!;
  const vec = (p: string, n: number) => {
    s.set(`${p}.weight`, [n]);
    s.set(`${p}.bias`, [n]);
  };
  const lin = (p: string, i: number, o: number, bias = true) => {
    s.set(`${p}.weight`, [o, i]);
    if (bias) s.set(`${p}.bias`, [o]);
  };
  const conv = (p: string, i: number, o: number, k: number) => {
    s.set(`${p}.weight`, [o, i, k, k]);
    s.set(`${p}.bias`, [o]);
  };
  const resnet = (p: string, i: number, o: number) => {
    vec(`${p}.norm1`, i);
    conv(`${p}.conv1`, i, o, 3);
    lin(`${p}.time_emb_proj`, T, o);
    vec(`${p}.norm2`, o);
    conv(`${p}.conv2`, o, o, 3);
    if (i !== o) conv(`${p}.conv_shortcut`, i, o, 1);
  };
  const transformer = (p: string, ch: number, b: number) => {
    vec(`${p}.norm`, ch);
    const proj = (q: string) => (c.useLinearProjection ? lin(q, ch, ch) : conv(q, ch, ch, 1));
    proj(`${p}.proj_in`);
    proj(`${p}.proj_out`);
    for (let j = 0; j < c.transformerLayers[b]!; j++) {
      const q = `${p}.transformer_blocks.${j}`;
      for (const n of ['norm1', 'norm2', 'norm3']) vec(`${q}.${n}`, ch);
      for (const [a, ctx] of [['attn1', ch], ['attn2', c.crossAttentionDim[b]!]] as const) {
        lin(`${q}.${a}.to_q`, ch, ch, false);
        lin(`${q}.${a}.to_k`, ctx, ch, false);
        lin(`${q}.${a}.to_v`, ctx, ch, false);
        lin(`${q}.${a}.to_out.0`, ch, ch);
      }
      lin(`${q}.ff.net.0.proj`, ch, 8 * ch);
      lin(`${q}.ff.net.2`, 4 * ch, ch);
    }
  };
  lin('time_embedding.linear_1', C0, T);
  lin('time_embedding.linear_2', T, T);
  conv('conv_in', c.inChannels, C0, c.convInKernel);
  const nb = c.blockOutChannels.length;
  let prev = C0;
  for (let b = 0; b < nb; b++) {
    const o = c.blockOutChannels[b]!;
    for (let i = 0; i < c.layersPerBlock[b]!; i++) {
      resnet(`down_blocks.${b}.resnets.${i}`, i === 0 ? prev : o, o);
      if (c.downBlockTypes[b] === 'CrossAttnDownBlock2D') transformer(`down_blocks.${b}.attentions.${i}`, o, b);
    }
    if (b < nb - 1) conv(`down_blocks.${b}.downsamplers.0.conv`, o, o, 3);
    prev = o;
  }
  resnet('mid_block.resnets.0', prev, prev);
  transformer('mid_block.attentions.0', prev, nb - 1);
  resnet('mid_block.resnets.1', prev, prev);
  for (let u = 0; u < nb; u++) {
    const b = nb - 1 - u;
    const o = c.blockOutChannels[b]!;
    const inC = c.blockOutChannels[Math.max(b - 1, 0)]!;
    const layers = c.layersPerBlock[b]! + 1;
    for (let i = 0; i < layers; i++) {
      const skip = i === layers - 1 ? inC : o;
      resnet(`up_blocks.${u}.resnets.${i}`, (i === 0 ? prev : o) + skip, o);
      if (c.upBlockTypes[u] === 'CrossAttnUpBlock2D') transformer(`up_blocks.${u}.attentions.${i}`, o, b);
    }
    if (u < nb - 1) conv(`up_blocks.${u}.upsamplers.0.conv`, o, o, 3);
    prev = o;
  }
  vec('conv_norm_out', C0);
  conv('conv_out', C0, c.outChannels, c.convOutKernel);
  return s;
}

/** Small random weights in the golden's spirit: norm scales ~1, matrices ~1/sqrt(fan_in), small biases. */
function randomWeights(shapes: Shapes, name: string, seed = 1): SafetensorsFile {
  const entries: Record<string, ReturnType<typeof f32Entry>> = {};
  let k = seed * 1000;
  for (const [n, shape] of shapes) {
    const isNorm = /norm[^.]*\.weight$/.test(n);
    const bound = shape.length === 1 ? (isNorm ? 0.1 : 0.05) : Math.sqrt(3 / size(shape.slice(1)));
    const d = randomData(size(shape), k++, -bound, bound);
    if (isNorm) for (let i = 0; i < d.length; i++) d[i] = d[i]! + 1;
    entries[n] = f32Entry(d, shape);
  }
  return parseSafetensors(serializeSafetensors(entries), name);
}

/** A file's tensors with some replaced/removed, as a new in-memory safetensors file. */
function edited(file: SafetensorsFile, name: string, edit: (n: string, data: Float32Array, shape: number[]) => [Float32Array, number[]] | null) {
  const entries: Record<string, ReturnType<typeof f32Entry>> = {};
  for (const n of file.names()) {
    const r = edit(n, file.getF32(n), file.info(n).shape.slice());
    if (r) entries[n] = f32Entry(r[0], r[1]);
  }
  return parseSafetensors(serializeSafetensors(entries), name);
}

const UNET_MINI = 'unet_mini';
const miniConfig = () => JSON.parse(readFileSync(`${goldenDir(UNET_MINI)}/config.json`, 'utf8')) as Record<string, unknown>;

/** A structure unlike unet_mini: 2 blocks, plain block first, per-block heads, Linear projections. */
const OTHER_CONFIG = {
  _class_name: 'UNet2DConditionModel',
  block_out_channels: [16, 32],
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D'],
  up_block_types: ['CrossAttnUpBlock2D', 'UpBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  layers_per_block: 1,
  attention_head_dim: [2, 4],
  cross_attention_dim: 24,
  transformer_layers_per_block: 2,
  norm_num_groups: 8,
  norm_eps: 1e-5,
  use_linear_projection: true,
  in_channels: 3,
  out_channels: 5,
  flip_sin_to_cos: false,
  freq_shift: 1,
};

describe('transposeLast2 (the NCHW <-> token layout permute)', () => {
  // 4x4 blocks when both dims are multiples of 4 (block grids that do not fill the 8x8 workgroups), else one element per thread
  for (const shape of [[3, 13, 7], [1, 1, 5], [2, 2, 65, 9], [4, 1], [3, 12, 8], [2, 36, 100], [1, 4, 4], [2, 3, 8, 4], [2, 64, 12], [16, 4]]) {
    it(`${JSON.stringify(shape)} against a CPU transpose`, async () => {
      const x = randomData(size(shape), size(shape));
      const [R, C] = shape.slice(-2) as [number, number];
      const ref = new Float32Array(x.length);
      for (let b = 0; b < x.length / (R * C); b++) {
        for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) ref[b * R * C + c * R + r] = x[b * R * C + r * C + c]!;
      }
      const t = engine.tensor(x, shape);
      const { result } = await runProgram(engine, 'transpose', (rec) => transposeLast2(rec, t));
      expect(result.shape).toEqual([...shape.slice(0, -2), C, R]);
      expectClose(await result.read(), ref, { atol: 0, rtol: 0 }, 'transpose');
      t.dispose();
      result.dispose();
    });
  }
});

describe('UNet2DConditionModel vs diffusers (unet_mini)', () => {
  it('the independent state-dict description matches the real file (names and shapes)', async () => {
    const file = await readSafetensorsFile(`${goldenDir(UNET_MINI)}/diffusion_pytorch_model.safetensors`);
    const shapes = stateDictShapes(miniConfig());
    expect([...shapes.keys()].sort()).toEqual(file.names().slice().sort());
    for (const [n, s] of shapes) expect(file.info(n).shape, n).toEqual(s);
  });

  it('eps, 12 readout features, time embedding (incl. t = 199.8) and debug.* in f32 (manifest tolerances)', async () => {
    const live = engine.pool.stats.liveBytes;
    const items = await runUNetCase(engine, goldenFiles(UNET_MINI), goldenManifest(UNET_MINI), { log: console.log });
    expect(engine.pool.stats.liveBytes, 'the runner freed its weights, inputs and outputs').toBe(live);
    const names = items.map((i) => i.name);
    expect(names).toContain('eps');
    expect(names).toContain('temb.time_embedding');
    expect(names).toContain('vjp_sample');
    expect(names.filter((n) => n.startsWith('readout_hidden_'))).toHaveLength(12);
    expect(names.filter((n) => n.startsWith('debug.')).sort()).toEqual(
      ['conv_in', 'temb', 'down_block_0', 'down_block_1', 'down_block_2', 'down_block_3', 'mid_block', 'up_block_0', 'up_block_1', 'up_block_2', 'up_block_3', 'conv_norm_out']
        .map((n) => `debug.${n}`)
        .sort(),
    );
    expectAllPass(items, 'unet_mini f32');
  });

  it('the same case with Winograd F(2x2, 3x3) for every 3x3 convolution at 16x16 (forward and VJP), manifest tolerances', async () => {
    // SD-1.5's widths take Winograd; the mini config's 32-64 channels do not, so lower the threshold.
    const saved = convTuning.winogradMinChannels;
    convTuning.winogradMinChannels = 1;
    try {
      const items = await runUNetCase(engine, goldenFiles(UNET_MINI), goldenManifest(UNET_MINI), { log: console.log });
      expect(items.map((i) => i.name)).toContain('vjp_sample');
      expectAllPass(items, 'unet_mini f32 (Winograd)');
    } finally {
      convTuning.winogradMinChannels = saved;
    }
  });

  it(`f16 weights and activations (atol ${UNET_F16_TOLERANCE.atolRelativeToMaxAbs} x max|ref|, rtol ${UNET_F16_TOLERANCE.rtol}; needs shader-f16)`, async (ctx) => {
    if (!engine.hasF16) {
      console.log('SKIP f16 UNet: this adapter has no shader-f16');
      ctx.skip();
    }
    const items = await runUNetCase(engine, goldenFiles(UNET_MINI), goldenManifest(UNET_MINI), { dtype: 'f16', log: console.log });
    expectAllPass(items.filter((i) => i.name === 'eps' || i.name.startsWith('readout')), 'unet_mini f16');
  });

  it('use_linear_projection true with the same weights as Linear matrices gives the same eps', async () => {
    const dir = goldenDir(UNET_MINI);
    const base = await readSafetensorsFile(`${dir}/diffusion_pytorch_model.safetensors`);
    const golden = await readSafetensorsFile(`${dir}/golden.safetensors`);
    const weights = edited(base, 'linear-proj.safetensors', (n, d, s) => (/proj_(in|out)\.weight$/.test(n) ? [d, s.slice(0, 2)] : [d, s]));
    const config = parseUNetConfig({ ...miniConfig(), use_linear_projection: true });
    const model = WeightLoader.build(engine, weights, {}, (w) => new UNet2DConditionModel(w, config));
    const sample = engine.tensor(golden.getF32('input.sample'), [1, 4, 16, 16]);
    const ctxT = engine.tensor(golden.getF32('input.encoder_hidden_states'), [1, 77, 48]);
    const { result } = await runProgram(engine, 'unet-linear', (rec) => model.forward(rec, sample, golden.getIntegers('input.timestep')[0]!, ctxT));
    expectAllPass([{ name: 'eps', actual: await result.eps.read(), expected: golden.getF32('eps'), tol: { atol: 2e-4, rtol: 1e-3 } }], 'unet_mini linear proj');
    for (const t of [sample, ctxT, result.eps]) t.dispose();
  });
});

describe('UNet2DConditionModel with another structure (random weights)', () => {
  it('2 blocks, heads per block, Linear projections, 2 transformer layers, batch 2 with per-sample timesteps', async () => {
    const config = parseUNetConfig(OTHER_CONFIG);
    const weights = randomWeights(stateDictShapes(OTHER_CONFIG), 'other.safetensors');
    const model = WeightLoader.build(engine, weights, {}, (w) => new UNet2DConditionModel(w, config));
    expect(model.upBlocks.map((b) => b.attentions[0]?.opts.heads)).toEqual([4, undefined]);
    const [N, H, W] = [2, 8, 12];
    const x = randomData(N * 3 * H * W, 5);
    const c = randomData(N * 5 * 24, 6);
    const sample = engine.tensor(x, [N, 3, H, W]);
    const ctxT = engine.tensor(c, [N, 5, 24]);
    const steps = [10, 700.5];
    const live = engine.pool.stats.liveBytes;
    const { result, report } = await runProgram(engine, 'unet-other', (rec) => model.forward(rec, sample, steps, ctxT, { readout: true }));
    // Dispatches are attributed by diffusers' module path.
    const paths = Object.keys(report.ops);
    for (const p of ['unet/time_embedding/', 'unet/down_blocks.0/resnets.0/', 'unet/down_blocks.1/attentions.0/transformer_blocks.1/attn2/', 'unet/mid_block/attentions.0/', 'unet/up_blocks.0/upsamplers.0/', 'unet/up_blocks.1/resnets.1/', 'unet/conv_out/']) {
      expect(paths.some((k) => k.startsWith(p)), `no dispatch under ${p}`).toBe(true);
    }
    expect(result.eps.shape).toEqual([N, 5, H, W]);
    // Readout: every up-block ResNet (2 blocks x (layers_per_block + 1)), conv2 outputs at the block's width.
    expect(result.readout!.map((t) => t.shape)).toEqual([
      [N, 32, 4, 6],
      [N, 32, 4, 6],
      [N, 16, 8, 12],
      [N, 16, 8, 12],
    ]);
    const eps = await result.eps.read();
    expect(eps.every(Number.isFinite)).toBe(true);
    expect(Math.max(...eps.map(Math.abs))).toBeGreaterThan(1e-3);
    for (const t of [result.eps, ...result.readout!]) t.dispose();
    expect(engine.pool.stats.liveBytes, 'intermediates of the forward pass were all freed').toBe(live);

    // Sample 1 alone (its own timestep, as a GPU tensor this time) equals its row of the batched run.
    const one = engine.tensor(x.subarray(x.length / 2), [1, 3, H, W]);
    const oneCtx = engine.tensor(c.subarray(c.length / 2), [1, 5, 24]);
    const tStep = engine.tensor([steps[1]!], [1]);
    const single = await runProgram(engine, 'unet-other-1', (rec) => model.forward(rec, one, tStep, oneCtx));
    expectClose(await single.result.eps.read(), eps.subarray(eps.length / 2), { atol: 1e-4, rtol: 1e-4 }, 'batch row 1 vs alone');
    for (const t of [sample, ctxT, one, oneCtx, tStep, single.result.eps]) t.dispose();
  });

  it('names the file and tensor for a missing, mis-shaped or unexpected tensor', () => {
    const shapes = stateDictShapes(OTHER_CONFIG);
    const config = parseUNetConfig(OTHER_CONFIG);
    const build = (file: SafetensorsFile, cfg = config) => () => WeightLoader.build(engine, file, {}, (w) => new UNet2DConditionModel(w, cfg));
    const live = engine.pool.stats.liveBytes;

    const missing = new Map(shapes);
    missing.delete('down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight');
    expect(build(randomWeights(missing, 'missing.safetensors'))).toThrow(
      /missing\.safetensors: missing tensor "down_blocks\.1\.attentions\.0\.transformer_blocks\.1\.attn2\.to_k\.weight" \(expected shape \[32, 24\]\)/,
    );
    const wrongCtx = parseUNetConfig({ ...OTHER_CONFIG, cross_attention_dim: 20 });
    expect(build(randomWeights(shapes, 'ctx.safetensors'), wrongCtx)).toThrow(
      /ctx\.safetensors: tensor "down_blocks\.1\.attentions\.0\.transformer_blocks\.0\.attn2\.to_k\.weight" has shape \[32, 24\], expected \[32, 20\]/,
    );
    const convProj = parseUNetConfig({ ...OTHER_CONFIG, use_linear_projection: false });
    expect(build(randomWeights(shapes, 'proj.safetensors'), convProj)).toThrow(
      /proj\.safetensors: tensor "down_blocks\.1\.attentions\.0\.proj_in\.weight" has shape \[32, 32\], expected \[32, 32, 1, 1\]/,
    );
    const extra = new Map(shapes).set('mid_block.attentions.1.norm.weight', [32]);
    const err = (() => {
      try {
        build(randomWeights(extra, 'extra.safetensors'))();
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(WeightError);
    expect(String(err)).toMatch(/extra\.safetensors: 1 unexpected tensor\(s\) not used by the model: "mid_block\.attentions\.1\.norm\.weight"/);
    expect(engine.pool.stats.liveBytes).toBe(live); // every failed build freed what it had uploaded
  });

  it("parses SD-1.5's own config.json; its state dict has SD-1.5's 859,520,964 parameters", () => {
    const sd15 = {
      _class_name: 'UNet2DConditionModel', _diffusers_version: '0.6.0', act_fn: 'silu', attention_head_dim: 8,
      block_out_channels: [320, 640, 1280, 1280], center_input_sample: false, cross_attention_dim: 768,
      down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
      downsample_padding: 1, flip_sin_to_cos: true, freq_shift: 0, in_channels: 4, layers_per_block: 2,
      mid_block_scale_factor: 1, norm_eps: 1e-5, norm_num_groups: 32, out_channels: 4, sample_size: 64,
      up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    };
    const c = parseUNetConfig(sd15);
    expect(c.heads).toEqual([8, 8, 8, 8]);
    expect([c.timeProjDim, c.timeEmbedDim]).toEqual([320, 1280]);
    expect(c.useLinearProjection).toBe(false);
    let params = 0;
    for (const s of stateDictShapes(sd15).values()) params += size(s);
    expect(params).toBe(859_520_964);
  });

  it('rejects unsupported configs by name, and inputs that do not fit', async () => {
    const bad = (patch: Record<string, unknown>) => () => parseUNetConfig({ ...OTHER_CONFIG, ...patch }, 'cfg.json');
    expect(bad({ only_cross_attention: true })).toThrow(UNetConfigError);
    expect(bad({ only_cross_attention: true })).toThrow(/cfg\.json: "only_cross_attention" = true is not supported/);
    expect(bad({ mid_block_type: 'UNetMidBlock2DSimpleCrossAttn' })).toThrow(/"mid_block_type" = "UNetMidBlock2DSimpleCrossAttn" is not supported/);
    expect(bad({ act_fn: 'gelu' })).toThrow(/"act_fn" = "gelu" is not supported/);
    expect(bad({ num_attention_heads: 8 })).toThrow(/"num_attention_heads" = 8 is not supported/);
    expect(bad({ addition_embed_type: 'text_time' })).toThrow(/"addition_embed_type"/);
    expect(bad({ down_block_types: ['DownBlock2D', 'AttnDownBlock2D'] })).toThrow(/down_block_types\[1\] = "AttnDownBlock2D" is not supported/);
    expect(bad({ up_block_types: ['UpBlock2D', 'UpBlock2D'] })).toThrow(/down_block_types\[1\] = CrossAttnDownBlock2D does not mirror up_block_types\[0\] = UpBlock2D/);
    expect(bad({ attention_head_dim: [2, 4, 8] })).toThrow(/"attention_head_dim" must be a positive integer or a list of 2/);
    expect(bad({ attention_head_dim: 5 })).toThrow(/block_out_channels\[1\] = 32 is not divisible by its 5 attention heads/);
    expect(bad({ norm_num_groups: 12 })).toThrow(/block_out_channels\[0\] = 16 is not divisible by norm_num_groups = 12/);
    expect(bad({ transformer_layers_per_block: [[1], [2]] })).toThrow(/nested "transformer_layers_per_block"/);
    expect(bad({ downsample_padding: 0 })).toThrow(/"downsample_padding" = 0 is not supported/);

    const model = WeightLoader.build(engine, randomWeights(stateDictShapes(OTHER_CONFIG), 'w.safetensors'), {}, (w) => new UNet2DConditionModel(w, parseUNetConfig(OTHER_CONFIG)));
    const odd = engine.zeros([1, 3, 5, 6]);
    const ok = engine.zeros([1, 3, 4, 4]);
    const ctxBad = engine.zeros([1, 5, 48]);
    await expect(runProgram(engine, 'bad', (rec) => model.forward(rec, odd, 1, ctxBad))).rejects.toThrow(/H and W must be multiples of 2/);
    await expect(runProgram(engine, 'bad', (rec) => model.forward(rec, ok, 1, ctxBad))).rejects.toThrow(/encoder_hidden_states \[1, 5, 48\] must be \[1, L, 24\]/);
    const ctxOk = engine.zeros([1, 5, 24]);
    await expect(runProgram(engine, 'bad', (rec) => model.forward(rec, ok, [1, 2, 3], ctxOk))).rejects.toThrow(/3 timesteps for a batch of 1/);
    expect(engine.activeRecorder).toBeNull();
    for (const t of [odd, ok, ctxBad, ctxOk]) t.dispose();
  });
});
