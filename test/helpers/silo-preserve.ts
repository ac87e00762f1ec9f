// Random-weight SILO "preserve" LatentDegradationNetwork state dicts and a CPU composition of its forward
// from the layer references (preserve_LatentDegradationNetwork.LatentDegradationNetwork.forward).
import { f32Entry, parseSafetensors, serializeSafetensors } from '../../src/formats/safetensors.js';
import { spatialPositionalEmbedding } from '../../src/models/silo/preserve.js';
import type { PreserveNetworkConfig } from '../../src/models/silo/config.js';
import { randomData } from './engine.js';
import { conv2dRef } from '../ref/conv2d.js';
import { groupNormRef } from '../ref/norm.js';
import { matmulRef } from '../ref/matmul.js';
import { bilinearRef } from '../ref/resample.js';
import { conv2dBackwardRef } from '../ref/conv2d-backward.js';
import { groupNormSpec, rowNormBackwardRef } from '../ref/norm-backward.js';
import { unaryBackwardRef } from '../ref/elementwise-backward.js';

export type Weights = Record<string, { data: Float32Array; shape: number[] }>;

/** A parsed in-memory .safetensors of `w`. */
export function file(w: Weights, name: string) {
  const entries = Object.fromEntries(Object.entries(w).map(([k, v]) => [k, f32Entry(v.data, v.shape)]));
  return parseSafetensors(serializeSafetensors(entries), name);
}

export function preserveWeights(c: PreserveNetworkConfig, seed: number): Weights {
  const w: Weights = {};
  let s = seed;
  const r = (name: string, shape: number[], lo: number, hi: number) => {
    w[name] = { data: randomData(shape.reduce((a, b) => a * b, 1), s++, lo, hi), shape };
  };
  const conv = (name: string, cin: number, cout: number, k: number) => {
    const b = 1 / Math.sqrt(cin * k * k);
    r(`${name}.weight`, [cout, cin, k, k], -b * 1.7, b * 1.7);
    r(`${name}.bias`, [cout], -0.1, 0.1);
  };
  const lin = (name: string, cin: number, cout: number) => {
    r(`${name}.weight`, [cout, cin], -1 / Math.sqrt(cin), 1 / Math.sqrt(cin));
    r(`${name}.bias`, [cout], -0.1, 0.1);
  };
  const block = (p: string, cin: number, cout: number) => {
    conv(`${p}.conv1`, cin, cout, 3);
    r(`${p}.norm1.weight`, [cout], 0.8, 1.2);
    r(`${p}.norm1.bias`, [cout], -0.1, 0.1);
    lin(`${p}.noise_proj`, c.noiseEmbedDim, cout);
    conv(`${p}.conv2`, cout, cout, 3);
    r(`${p}.norm2.weight`, [cout], 0.8, 1.2);
    r(`${p}.norm2.bias`, [cout], -0.1, 0.1);
    if (cin !== cout) conv(`${p}.skip_conv`, cin, cout, 1);
  };
  w['pos_embedding.positional_embedding'] = { data: spatialPositionalEmbedding(c.posEmbedChannels, c.posSize, c.posSize), shape: [c.posEmbedChannels, c.posSize, c.posSize] };
  conv('initial_proj.0', c.inChannels, c.inChannels, 1);
  conv('initial_conv', c.inChannels + c.posEmbedChannels, c.baseChannels, 3);
  conv('final_conv', c.baseChannels, c.outChannels, 3);
  const ch = [c.baseChannels, ...Array.from({ length: c.numBlocks }, (_, i) => Math.min(c.baseChannels * 2 ** i, 128))];
  const n = c.numBlocks;
  for (let i = 0; i < n; i++) block(`blocks.${i}`, ch[i]!, ch[i + 1]!);
  block('bottleneck', ch[n]!, ch[n]!);
  for (let i = 0; i < n; i++) block(`up_blocks.${i}`, i > 0 ? ch[n - i]! + ch[n - i - 1]! : ch[n - i]!, ch[n - i - 1]!);
  r('skip_scale', [1], 0.8, 1.2);
  lin('identity_gate.0', c.noiseEmbedDim, 1);
  return w;
}

const sig = (v: number) => 1 / (1 + Math.exp(-v));

export function concatRef(a: Float32Array, ca: number, b: Float32Array, cb: number, batch: number, hw: number): Float32Array {
  const out = new Float32Array(batch * (ca + cb) * hw);
  for (let i = 0; i < batch; i++) {
    out.set(a.subarray(i * ca * hw, (i + 1) * ca * hw), i * (ca + cb) * hw);
    out.set(b.subarray(i * cb * hw, (i + 1) * cb * hw), (i * (ca + cb) + ca) * hw);
  }
  return out;
}

/** preserve_LatentDegradationNetwork.LatentDegradationNetwork.forward, composed from the CPU references. */
export function preserveRef(c: PreserveNetworkConfig, w: Weights, z: Float32Array, shape: number[], emb: Float32Array): Float32Array {
  const [b, cin, h, wd] = shape as [number, number, number, number];
  const hw = h * wd;
  const g = (k: string) => w[k]!.data;
  const conv = (x: Float32Array, ci: number, name: string, act = 'none') => {
    const ws = w[`${name}.weight`]!.shape;
    return conv2dRef(x, [b, ci, h, wd], g(`${name}.weight`), ws, g(`${name}.bias`), { padding: [(ws[2]! - 1) / 2, (ws[3]! - 1) / 2], act }).out;
  };
  const linear = (name: string) => {
    const ws = w[`${name}.weight`]!.shape;
    return matmulRef(emb, [b, ws[1]!], g(`${name}.weight`), ws, { transB: true, bias: g(`${name}.bias`) }).out;
  };
  const block = (p: string, x: Float32Array, ci: number, co: number) => {
    const groups = Math.min(8, co);
    const residual = ci !== co ? conv(x, ci, `${p}.skip_conv`) : x;
    const hs = groupNormRef(conv(x, ci, `${p}.conv1`), [b, co, h, wd], groups, g(`${p}.norm1.weight`), g(`${p}.norm1.bias`), 1e-5, 'silu');
    const np = linear(`${p}.noise_proj`);
    const h2 = hs.map((v, i) => v + np[Math.floor(i / (co * hw)) * co + (Math.floor(i / hw) % co)]!);
    const h3 = groupNormRef(conv(h2, co, `${p}.conv2`), [b, co, h, wd], groups, g(`${p}.norm2.weight`), g(`${p}.norm2.bias`));
    return h3.map((v, i) => {
      const s = v + residual[i]!;
      return s * sig(s);
    });
  };
  const cp = conv(z, cin, 'initial_proj.0', 'silu');
  const pc = c.posEmbedChannels;
  const pos1 = bilinearRef(g('pos_embedding.positional_embedding'), pc, c.posSize, c.posSize, h, wd);
  const pos = new Float32Array(b * pc * hw);
  for (let i = 0; i < b; i++) pos.set(pos1, i * pc * hw);
  let x = conv(concatRef(z, cin, pos, pc, b, hw), cin + pc, 'initial_conv');
  const ch = [c.baseChannels, ...Array.from({ length: c.numBlocks }, (_, i) => Math.min(c.baseChannels * 2 ** i, 128))];
  const n = c.numBlocks;
  const skips: Float32Array[] = [];
  for (let i = 0; i < n; i++) {
    skips.push(x);
    x = block(`blocks.${i}`, x, ch[i]!, ch[i + 1]!);
  }
  x = block('bottleneck', x, ch[n]!, ch[n]!);
  for (let i = 0; i < n; i++) {
    const ci = i > 0 ? ch[n - i]! + ch[n - i - 1]! : ch[n - i]!;
    const input = i > 0 ? concatRef(x, ch[n - i]!, skips[skips.length - i - 1]!, ch[n - i - 1]!, b, hw) : x;
    x = block(`up_blocks.${i}`, input, ci, ch[n - i - 1]!);
  }
  const out = conv(x, c.baseChannels, 'final_conv');
  const gate = linear('identity_gate.0').map(sig);
  const co = c.outChannels;
  return out.map((v, i) => {
    const bi = Math.floor(i / (co * hw));
    return (1 - gate[bi]!) * v + gate[bi]! * cp[i]! + z[i]! * g('skip_scale')[0]!;
  });
}

/** Channels [start, start + count) of x [batch, C, hw]. */
function sliceRef(x: ArrayLike<number>, ch: number, start: number, count: number, batch: number, hw: number): Float64Array {
  const out = new Float64Array(batch * count * hw);
  for (let i = 0; i < batch; i++) {
    for (let k = 0; k < count * hw; k++) out[(i * count) * hw + k] = x[(i * ch + start) * hw + k]!;
  }
  return out;
}

const addRef = (a: ArrayLike<number>, b: ArrayLike<number>) => Float64Array.from(a as ArrayLike<number>, (v, i) => v + b[i]!);

/**
 * d/dz sum(cot * preserveRef(z)) composed from the CPU backward references (f64 accumulation) over the
 * forward references' saved activations: the chain rule written out once more, layer by layer, with
 * kernels independent of the GPU ones.
 */
export function preserveVjpRef(c: PreserveNetworkConfig, w: Weights, z: Float32Array, shape: number[], emb: Float32Array, cot: Float32Array): Float64Array {
  const [b, cin, h, wd] = shape as [number, number, number, number];
  const hw = h * wd;
  const g = (k: string) => w[k]!.data;
  const pad = (name: string) => {
    const ws = w[`${name}.weight`]!.shape;
    return [(ws[2]! - 1) / 2, (ws[3]! - 1) / 2] as [number, number];
  };
  const conv = (x: ArrayLike<number>, ci: number, name: string) =>
    conv2dRef(x, [b, ci, h, wd], g(`${name}.weight`), w[`${name}.weight`]!.shape, g(`${name}.bias`), { padding: pad(name) }).out;
  const convBack = (x: ArrayLike<number>, ci: number, name: string, gy: ArrayLike<number>) =>
    conv2dBackwardRef(x, [b, ci, h, wd], g(`${name}.weight`), w[`${name}.weight`]!.shape, gy, { padding: pad(name) }).gradX;
  const linear = (name: string) => {
    const ws = w[`${name}.weight`]!.shape;
    return matmulRef(emb, [b, ws[1]!], g(`${name}.weight`), ws, { transB: true, bias: g(`${name}.bias`) }).out;
  };
  // Each block returns its output and its backward (gradient of the output -> gradient of the input).
  const block = (p: string, x: Float32Array, ci: number, co: number): [Float32Array, (gy: ArrayLike<number>) => Float64Array] => {
    const groups = Math.min(8, co);
    const sh = [b, co, h, wd];
    const residual = ci !== co ? conv(x, ci, `${p}.skip_conv`) : x;
    const a1 = conv(x, ci, `${p}.conv1`);
    const hs = groupNormRef(a1, sh, groups, g(`${p}.norm1.weight`), g(`${p}.norm1.bias`), 1e-5, 'silu');
    const np = linear(`${p}.noise_proj`);
    const h2 = hs.map((v, i) => v + np[Math.floor(i / (co * hw)) * co + (Math.floor(i / hw) % co)]!);
    const a2 = conv(h2, co, `${p}.conv2`);
    const sum = groupNormRef(a2, sh, groups, g(`${p}.norm2.weight`), g(`${p}.norm2.bias`)).map((v, i) => v + residual[i]!);
    const back = (gy: ArrayLike<number>) => {
      const gs = unaryBackwardRef(sum, gy, { act: 'silu' });
      const ga2 = rowNormBackwardRef(a2, gs, groupNormSpec(sh, groups), g(`${p}.norm2.weight`), g(`${p}.norm2.bias`)).dx;
      const gh2 = convBack(h2, co, `${p}.conv2`, ga2);
      const ga1 = rowNormBackwardRef(a1, gh2, groupNormSpec(sh, groups, 1e-5, true), g(`${p}.norm1.weight`), g(`${p}.norm1.bias`)).dx;
      return addRef(convBack(x, ci, `${p}.conv1`, ga1), ci !== co ? convBack(x, ci, `${p}.skip_conv`, gs) : gs);
    };
    return [sum.map((s) => s * sig(s)), back];
  };
  const cpPre = conv(z, cin, 'initial_proj.0');
  const pc = c.posEmbedChannels;
  const pos1 = bilinearRef(g('pos_embedding.positional_embedding'), pc, c.posSize, c.posSize, h, wd);
  const pos = new Float32Array(b * pc * hw);
  for (let i = 0; i < b; i++) pos.set(pos1, i * pc * hw);
  const initialIn = concatRef(z, cin, pos, pc, b, hw);
  let x = conv(initialIn, cin + pc, 'initial_conv');
  const ch = [c.baseChannels, ...Array.from({ length: c.numBlocks }, (_, i) => Math.min(c.baseChannels * 2 ** i, 128))];
  const n = c.numBlocks;
  const skips: Float32Array[] = [];
  const down: ((gy: ArrayLike<number>) => Float64Array)[] = [];
  for (let i = 0; i < n; i++) {
    skips.push(x);
    let back;
    [x, back] = block(`blocks.${i}`, x, ch[i]!, ch[i + 1]!);
    down.push(back);
  }
  const [xb, bottleneckBack] = block('bottleneck', x, ch[n]!, ch[n]!);
  x = xb;
  const up: ((gy: ArrayLike<number>) => Float64Array)[] = [];
  for (let i = 0; i < n; i++) {
    const ci = i > 0 ? ch[n - i]! + ch[n - i - 1]! : ch[n - i]!;
    const input = i > 0 ? concatRef(x, ch[n - i]!, skips[skips.length - i - 1]!, ch[n - i - 1]!, b, hw) : x;
    let back;
    [x, back] = block(`up_blocks.${i}`, input, ci, ch[n - i - 1]!);
    up.push(back);
  }
  const gate = linear('identity_gate.0').map(sig);
  const gateOf = (i: number) => gate[Math.floor(i / (c.outChannels * hw))]!;

  let gx: Float64Array = convBack(x, c.baseChannels, 'final_conv', Float64Array.from(cot, (v, i) => v * (1 - gateOf(i))));
  const skipGrads: Float64Array[] = [];
  for (let i = n - 1; i >= 0; i--) {
    const gIn = up[i]!(gx);
    if (i === 0) {
      gx = gIn;
      continue;
    }
    const [main, skip] = [ch[n - i]!, ch[n - i - 1]!];
    skipGrads[n - i - 1] = sliceRef(gIn, main + skip, main, skip, b, hw);
    gx = sliceRef(gIn, main + skip, 0, main, b, hw);
  }
  gx = bottleneckBack(gx);
  for (let i = n - 1; i >= 0; i--) {
    gx = down[i]!(gx);
    if (skipGrads[i]) gx = addRef(gx, skipGrads[i]!);
  }
  const gInitial = sliceRef(conv2dBackwardRef(initialIn, [b, cin + pc, h, wd], g('initial_conv.weight'), w['initial_conv.weight']!.shape, gx, { padding: [1, 1] }).gradX, cin + pc, 0, cin, b, hw);
  const gProj = convBack(z, cin, 'initial_proj.0', unaryBackwardRef(cpPre, Float64Array.from(cot, (v, i) => v * gateOf(i)), { act: 'silu' }));
  const skipScale = g('skip_scale')[0]!;
  return Float64Array.from(gInitial, (v, i) => v + gProj[i]! + cot[i]! * skipScale);
}

