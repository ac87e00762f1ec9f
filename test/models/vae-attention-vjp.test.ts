// The VJP of the VAE mid-block attention on its explicit-scores path (head dims above the flash kernel's
// MAX_HEAD_DIM, as SD's one head of 512): against an f64 CPU reference, directional finite differences of
// the f32 forward, the flash path where both apply, chunked vs unchunked query blocks, and through
// AutoencoderKL's decodeVjp / encodeMeanVjp (a random-weight VAE with a 288-wide mid block, and the
// vae_mini golden case with the explicit path forced). CPU reference: test/ref/vae-attention.ts.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Engine } from '../../src/engine/device.js';
import { runProgram, type Recorder } from '../../src/engine/recorder.js';
import type { Tensor } from '../../src/engine/tensor.js';
import { MAX_HEAD_DIM } from '../../src/engine/ops/attention.js';
import { WeightLoader } from '../../src/models/weights.js';
import { RandomWeightSource } from '../../src/models/random-weights.js';
import { VaeAttention } from '../../src/models/vae/attention.js';
import { vaeAttentionVjp } from '../../src/models/vae/attention-vjp.js';
import { AutoencoderKL } from '../../src/models/vae/autoencoder.js';
import { decodeVjp, encodeMeanVjp } from '../../src/models/vae/vjp.js';
import { readJson, readSafetensors } from '../../src/check/files.js';
import { getEngine, randomData, expectClose } from '../helpers/engine.js';
import { goldenFiles } from '../helpers/golden.js';
import { vaeAttentionForward64, vaeAttentionVjpRef, type VaeAttentionRefParams } from '../ref/vae-attention.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const maxAbs = (a: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
};
/**
 * Finite differences: central differences at h = 0.03 and 2h on O(1) inputs, extrapolated (Richardson).
 * Plain central differences are off by ~1e-3 relative here (the h^2 term), and smaller steps trade that for
 * f32 rounding noise / h (~5e-4 at h = 0.01 on the encoder); extrapolated, lavapipe and SwiftShader measured
 * at most 8e-5 of the directional derivative. Limit 1e-3: over 10x that, yet a 2% error in one term of the
 * attention backward (dK's scale) already reaches ~1e-3 even through the whole decoder.
 */
const H = 3e-2;
const FD_REL = 1e-3;
/** Against the f64 CPU reference: f32 rounding measured <= 7e-7 of the largest value; 1e-5 leaves >10x. */
const REF_TOL = 1e-5;
/** Two f32 evaluations of the same math in different summation orders: measured <= 3.3e-7 of the largest value. */
const ORDER_TOL = 2e-6;
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
};

/** Runs `fn` on uploaded inputs and reads its result back. */
async function evaluate(name: string, inputs: { data: Float32Array; shape: number[] }[], fn: (rec: Recorder, ts: Tensor[]) => Tensor) {
  const ts = inputs.map((i) => engine.tensor(i.data, i.shape));
  try {
    const { result, report } = await runProgram(engine, name, (rec) => fn(rec, ts));
    const out = await result.read();
    result.dispose();
    return { out, report };
  } finally {
    for (const t of ts) t.dispose();
  }
}

/**
 * Central difference (f(x + h u) - f(x - h u)) / 2h of f(x) = sum(g * forward(x)), in f64 on the host from
 * the two f32 outputs, and the exact step taken (x +- h u are rounded to f32): uEff = (x+ - x-) / 2h.
 */
async function centralDifference(forward: (rec: Recorder, x: Tensor) => Tensor, x: Float32Array, shape: number[], u: Float32Array, g: Float32Array, h: number) {
  const xp = x.map((v, i) => v + h * u[i]!);
  const xm = x.map((v, i) => v - h * u[i]!);
  const yp = (await evaluate('fd +', [{ data: xp, shape }], (rec, [t]) => forward(rec, t!))).out;
  const ym = (await evaluate('fd -', [{ data: xm, shape }], (rec, [t]) => forward(rec, t!))).out;
  let fd = 0;
  for (let i = 0; i < g.length; i++) fd += g[i]! * (yp[i]! - ym[i]!);
  const uEff = Float64Array.from(xp, (v, i) => (v - xm[i]!) / (2 * h));
  return { fd: fd / (2 * h), uEff };
}

/**
 * Richardson's extrapolation of central differences at h and 2h, (4 D(h) - D(2h)) / 3: the h^2 error
 * term cancels, so h can be large enough that the f32 rounding of the forward (divided by h) stays small.
 * Returns it minus <vjp, u>: the VJP's error in that direction (plus an O(h^4) remainder and the noise).
 */
async function richardsonError(forward: (rec: Recorder, x: Tensor) => Tensor, x: Float32Array, shape: number[], u: Float32Array, g: Float32Array, vjp: ArrayLike<number>, h: number) {
  const a = await centralDifference(forward, x, shape, u, g, h);
  const b = await centralDifference(forward, x, shape, u, g, 2 * h);
  // Each difference against <vjp, its own exact step> (the steps differ by f32 rounding).
  const ea = a.fd - dot(vjp, a.uEff);
  const eb = b.fd - dot(vjp, b.uEff);
  return { error: (4 * ea - eb) / 3, directional: dot(vjp, a.uEff), plain: ea };
}

/** A standalone VaeAttention with seeded random weights, and its weights on the host for the CPU reference. */
async function randomAttention(channels: number, headDim: number, groups: number, seed: number, rescale = 1) {
  const src = new RandomWeightSource(seed, 'vae attention');
  const attn = WeightLoader.build(engine, src, {}, (w) => new VaeAttention(w.scope('attn.'), channels, { groups, eps: 1e-6, headDim, rescaleOutputFactor: rescale }));
  await src.generated();
  const params = (shape: number[]): VaeAttentionRefParams => ({ shape, heads: attn.heads, groups, eps: 1e-6, rescale, ...host });
  const host = {
    normW: await attn.groupNorm.weight.read(),
    normB: await attn.groupNorm.bias.read(),
    wq: await attn.q.weight.read(),
    bq: await attn.q.bias.read(),
    wk: await attn.k.weight.read(),
    bk: await attn.k.bias.read(),
    wv: await attn.v.weight.read(),
    bv: await attn.v.bias.read(),
    wo: await attn.out.weight.read(),
    bo: await attn.out.bias.read(),
  };
  return { attn, params };
}

describe('VaeAttention VJP with explicit scores (head dim > MAX_HEAD_DIM)', () => {
  it(`one head of 264 > ${MAX_HEAD_DIM} (batch 2, 3x5 tokens, rescale 2): forward and VJP match the f64 reference; 3 and 5 query chunks equal one`, async () => {
    const { attn, params } = await randomAttention(264, 264, 8, 11, 2);
    expect(attn.explicitScores).toBe(true);
    const shape = [2, 264, 3, 5];
    const x = randomData(2 * 264 * 15, 1, -2, 2);
    const g = randomData(x.length, 2);
    const p = params(shape);
    const y = (await evaluate('attn fwd', [{ data: x, shape }], (rec, [t]) => attn.forward(rec, t!))).out;
    const yRef = vaeAttentionForward64(x, p);
    const ref = vaeAttentionVjpRef(x, g, p);
    // f32 sums of 264-term products, a 15-key softmax and a group norm over 33 x 15 values: measured
    // <= 7e-7 of the largest value on both adapters; 1e-5 of it (REF_TOL) leaves >10x room.
    expectClose(y, yRef, { atol: REF_TOL * maxAbs(yRef), rtol: 0 }, 'forward');
    const vjp = (rows?: number) => {
      attn.chunkRows = rows;
      return evaluate('attn vjp', [{ data: x, shape }, { data: g, shape }], (rec, [t, gt]) => vaeAttentionVjp(rec, attn, t!, gt!));
    };
    try {
      const whole = await vjp();
      expect(whole.report.ops['scores']?.dispatches).toBe(1);
      expectClose(whole.out, ref, { atol: REF_TOL * maxAbs(ref), rtol: 0 }, 'VJP vs f64 reference');
      for (const [rows, chunks] of [[5, 3], [4, 5]] as const) {
        // chunkRows 4 does not divide 15 tokens: the rule takes the divisor 3 below it.
        const part = await vjp(rows);
        expect(part.report.ops['scores']?.dispatches).toBe(chunks);
        // Only the summation order of dK and dV over the chunks differs: f32 rounding (measured <= 2e-7 x max).
        expectClose(part.out, whole.out, { atol: ORDER_TOL * maxAbs(whole.out), rtol: 0 }, `VJP in ${chunks} chunks vs one`);
      }
    } finally {
      attn.chunkRows = undefined;
    }
  });

  it("SD-1.5's mid block (one head of 512, 32 groups) on 4x4 latents: the VJP matches the f64 reference", async () => {
    const { attn, params } = await randomAttention(512, 512, 32, 16);
    const shape = [1, 512, 4, 4];
    const x = randomData(512 * 16, 8, -2, 2);
    const g = randomData(x.length, 9);
    const { out } = await evaluate('attn vjp', [{ data: x, shape }, { data: g, shape }], (rec, [t, gt]) => vaeAttentionVjp(rec, attn, t!, gt!));
    const ref = vaeAttentionVjpRef(x, g, params(shape));
    expectClose(out, ref, { atol: REF_TOL * maxAbs(ref), rtol: 0 }, 'VJP vs f64 reference (512)');
  });

  it('query chunks follow the binding limit: SD-1.5 at 512 px in one block, at 1024 px in 8', async () => {
    const attn = { chunkRows: undefined } as VaeAttention;
    const rows = (limits: { maxStorageBufferBindingSize: number; maxBufferSize: number }, n: number, l: number) =>
      VaeAttention.prototype.queryChunkRows.call(attn, { limits } as unknown as Engine, n, l, 'f32');
    const browser = { maxStorageBufferBindingSize: 128 * 2 ** 20, maxBufferSize: 256 * 2 ** 20 };
    expect(rows(browser, 1, 64 * 64)).toBe(4096); // [1, 4096, 4096] f32 = 64 MiB
    expect(rows(browser, 1, 128 * 128)).toBe(2048); // 16384 keys x 4 B = 64 KiB per row
    expect(rows(browser, 3, 128 * 128)).toBe(512); // 682 rows fit; 512 is the largest divisor of 16384 below
    expect(rows({ ...browser, maxBufferSize: 32 * 2 ** 20 }, 1, 64 * 64)).toBe(2048); // the smaller limit counts
    expect(rows(browser, 1, 15)).toBe(15);
  });

  it('extrapolated central differences of the f32 forward agree with <VJP, u> in a random direction (one head of 264)', async () => {
    const { attn } = await randomAttention(264, 264, 8, 12);
    const shape = [1, 264, 4, 3];
    const x = randomData(264 * 12, 3, -2, 2);
    const g = randomData(x.length, 4);
    const u = randomData(x.length, 5);
    const vjp = (await evaluate('attn vjp', [{ data: x, shape }, { data: g, shape }], (rec, [t, gt]) => vaeAttentionVjp(rec, attn, t!, gt!))).out;
    const r = await richardsonError((rec, t) => attn.forward(rec, t), x, shape, u, g, vjp, H);
    // The residual adds <g, u> to both sides: measure against the attention branch alone, so its error is not diluted.
    const branch = r.directional - dot(g, u);
    console.log(`attention: <vjp - g, u> = ${branch}, extrapolated difference error ${r.error} (plain central difference ${r.plain})`);
    expect(Math.abs(r.error)).toBeLessThan(FD_REL * Math.abs(branch));
  });

  it('two heads of 264: forward and VJP match the f64 reference', async () => {
    const { attn, params } = await randomAttention(528, 264, 16, 13);
    expect([attn.heads, attn.explicitScores]).toEqual([2, true]);
    const shape = [1, 528, 2, 3];
    const x = randomData(528 * 6, 6, -2, 2);
    const g = randomData(x.length, 7);
    const p = params(shape);
    const y = (await evaluate('attn fwd', [{ data: x, shape }], (rec, [t]) => attn.forward(rec, t!))).out;
    const yRef = vaeAttentionForward64(x, p);
    expectClose(y, yRef, { atol: REF_TOL * maxAbs(yRef), rtol: 0 }, 'forward (2 heads)');
    attn.chunkRows = 2;
    try {
      const { out, report } = await evaluate('attn vjp', [{ data: x, shape }, { data: g, shape }], (rec, [t, gt]) => vaeAttentionVjp(rec, attn, t!, gt!));
      expect(report.ops['scores']?.dispatches).toBe(2 * 3); // per head, 3 chunks of 2 queries
      const ref = vaeAttentionVjpRef(x, g, p);
      expectClose(out, ref, { atol: REF_TOL * maxAbs(ref), rtol: 0 }, 'VJP vs f64 reference (2 heads)');
    } finally {
      attn.chunkRows = undefined;
    }
  });

  it('forced explicit path at head dims <= MAX_HEAD_DIM equals the flash path (1 head of 40, 4 heads of 8; batch 2, 5x5 tokens)', async () => {
    for (const [c, d, seed] of [[40, 40, 14], [32, 8, 15]] as const) {
      const { attn } = await randomAttention(c, d, 8, seed);
      const shape = [2, c, 5, 5];
      const x = randomData(2 * c * 25, seed, -2, 2);
      const g = randomData(x.length, seed + 100);
      const run = async (explicit: boolean, rows?: number) => {
        attn.forceMatmul = explicit;
        attn.chunkRows = rows;
        try {
          const y = (await evaluate('fwd', [{ data: x, shape }], (rec, [t]) => attn.forward(rec, t!))).out;
          const r = await evaluate('vjp', [{ data: x, shape }, { data: g, shape }], (rec, [t, gt]) => vaeAttentionVjp(rec, attn, t!, gt!));
          return { y, dx: r.out, scores: r.report.ops['scores']?.dispatches ?? 0 };
        } finally {
          attn.forceMatmul = false;
          attn.chunkRows = undefined;
        }
      };
      const flash = await run(false);
      expect(flash.scores).toBe(0);
      for (const rows of [undefined, 5]) {
        const ex = await run(true, rows);
        expect(ex.scores).toBe((attn.heads * 25) / (rows ?? 25));
        // Same math, different f32 summation orders (online vs two-pass softmax, fused vs separate
        // products): measured <= 3.3e-7 x max.
        expectClose(ex.y, flash.y, { atol: ORDER_TOL * maxAbs(flash.y), rtol: 0 }, `forward, ${attn.heads} heads of ${d}`);
        expectClose(ex.dx, flash.dx, { atol: ORDER_TOL * maxAbs(flash.dx), rtol: 0 }, `VJP, ${attn.heads} heads of ${d}, rows ${rows}`);
      }
    }
  });
});

describe('AutoencoderKL decodeVjp / encodeMeanVjp through an explicit-scores mid block', () => {
  // block_out_channels [32, 288]: the mid blocks run at 288 channels, one head of 288 > MAX_HEAD_DIM;
  // latents 3x5 (15 tokens), images 6x10.
  const config = {
    block_out_channels: [32, 288],
    down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D'],
    up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D'],
    layers_per_block: 1,
    latent_channels: 4,
    norm_num_groups: 32,
    sample_size: 32,
  };
  let vae: AutoencoderKL;
  let attns: VaeAttention[];
  beforeAll(async () => {
    const src = new RandomWeightSource(21, 'vae 288');
    vae = AutoencoderKL.load(engine, src, config);
    await src.generated();
    attns = [vae.encoder.midBlock.attention!, vae.decoder.midBlock.attention!];
    expect(attns.map((a) => [a.heads, a.headDim, a.explicitScores])).toEqual([[1, 288, true], [1, 288, true]]);
  });

  /** The VJP at `x` for cotangent g, whole and with the mid block in chunks of 5 query rows, and a central difference. */
  async function check(what: string, x: Float32Array, xShape: number[], g: Float32Array, gShape: number[], vjpOf: (rec: Recorder, x: Tensor, g: Tensor) => Tensor, fwd: (rec: Recorder, x: Tensor) => Tensor, scope: string) {
    const run = async (rows?: number) => {
      for (const a of attns) a.chunkRows = rows;
      try {
        return await evaluate(what, [{ data: x, shape: xShape }, { data: g, shape: gShape }], (rec, [t, gt]) => vjpOf(rec, t!, gt!));
      } finally {
        for (const a of attns) a.chunkRows = undefined;
      }
    };
    const whole = await run();
    const chunked = await run(5);
    const scores = (r: typeof whole) => Object.entries(r.report.ops).filter(([k]) => k.startsWith(scope) && k.endsWith('/scores')).reduce((s, [, o]) => s + o.dispatches, 0);
    // The mid block's forward (stage input recorded) runs whole or chunked as well, then its VJP: 1 + 1 vs 3 + 3.
    expect([scores(whole), scores(chunked)]).toEqual([2, 6]);
    // Only the f32 summation order of dK and dV over the chunks differs, carried through the rest of the
    // model's backward: measured <= 1.1e-6 x max; 1e-5 leaves ~10x.
    expectClose(chunked.out, whole.out, { atol: 1e-5 * maxAbs(whole.out), rtol: 0 }, `${what}: 3 query chunks vs one`);
    const u = randomData(x.length, 31);
    const r = await richardsonError(fwd, x, xShape, u, g, whole.out, H);
    console.log(`${what}: <vjp, u> = ${r.directional}, extrapolated difference error ${r.error} (plain central difference ${r.plain})`);
    expect(Math.abs(r.error)).toBeLessThan(FD_REL * Math.abs(r.directional));
  }

  it('decodeVjp: 3 query chunks equal one, and <vjp, u> matches a central difference of decode', async () => {
    const zShape = [1, 4, 3, 5];
    const gShape = [1, 3, 6, 10];
    await check(
      'decodeVjp',
      randomData(60, 22, -2, 2),
      zShape,
      randomData(180, 23),
      gShape,
      (rec, z, g) => decodeVjp(rec, vae, z, g),
      (rec, z) => vae.decode(rec, z, { tiling: 'off' }),
      'vae_decode_vjp',
    );
  });

  it('encodeMeanVjp: 3 query chunks equal one, and <vjp, u> matches a central difference of the posterior mean', async () => {
    await check(
      'encodeMeanVjp',
      randomData(180, 24),
      [1, 3, 6, 10],
      randomData(60, 25),
      [1, 4, 3, 5],
      (rec, x, g) => encodeMeanVjp(rec, vae, x, g),
      (rec, x) => {
        const post = vae.encode(rec, x, { tiling: 'off' });
        for (const t of [post.moments, post.logvar, post.std]) t.dispose();
        return post.mean;
      },
      'vae_encode_mean_vjp',
    );
  });
});

describe('vae_mini golden VJPs with the explicit-scores path forced (head dim 64)', () => {
  it('decodeVjp and encodeMeanVjp in 4 query chunks: within the golden tolerance; decodeVjp equals the flash path', async () => {
    const files = goldenFiles('vae_mini');
    const golden = await readSafetensors(files, 'golden.safetensors');
    const vae = AutoencoderKL.load(engine, await readSafetensors(files, 'diffusion_pytorch_model.safetensors'), await readJson(files, 'config.json'));
    const attns = [vae.encoder.midBlock.attention!, vae.decoder.midBlock.attention!];
    const input = (name: string) => ({ data: golden.getF32(name), shape: golden.info(name).shape.slice() });
    const cases = [
      ['dec.vjp_z', [input('input.z'), input('input.vjp_cotangent_dec')], (rec: Recorder, [z, g]: Tensor[]) => decodeVjp(rec, vae, z!, g!)],
      ['enc.vjp_image_of_mean', [input('input.image'), input('input.vjp_cotangent_mean')], (rec: Recorder, [x, g]: Tensor[]) => encodeMeanVjp(rec, vae, x!, g!)],
    ] as const;
    for (const [name, inputs, fn] of cases) {
      const ref = golden.getF32(name);
      for (const a of attns) {
        a.forceMatmul = true;
        a.chunkRows = 16;
      }
      let run;
      try {
        run = await evaluate(name, [...inputs], fn);
      } finally {
        for (const a of attns) {
          a.forceMatmul = false;
          a.chunkRows = undefined;
        }
      }
      const scores = Object.entries(run.report.ops).filter(([k]) => k.endsWith('/scores')).reduce((s, [, o]) => s + o.dispatches, 0);
      expect(scores).toBe(2 * 4); // the stage's forward and its VJP, 64 tokens in 4 chunks of 16
      // The golden README's VJP rule: 1e-3 x max|ref| (torch vs our f32 through the whole model; measured ~3e-6).
      expectClose(run.out, ref, { atol: 1e-3 * maxAbs(ref), rtol: 0 }, `${name} explicit, chunked vs golden`);
      if (name === 'dec.vjp_z') {
        // Same model through the flash backward: only f32 summation orders differ (measured ~2.5e-6 x max,
        // amplified by the decoder's convs after the mid block).
        const flash = (await evaluate(name, [...inputs], fn)).out;
        expectClose(run.out, flash, { atol: 2e-5 * maxAbs(flash), rtol: 0 }, `${name} explicit, chunked vs flash`);
      }
    }
  });
});
