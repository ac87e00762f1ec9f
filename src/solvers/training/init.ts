// A new operator's starting weights, as PyTorch's default initialisation draws them (the distributions,
// from our own seeded generator, not torch's numbers): every conv, transposed conv and Linear weight
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform_ with a = sqrt(5)), its bias the same bound, with
// fan_in = size(1) * prod(kernel) of the state dict's weight (torch's rule, transposed convs included);
// norm affines (a weight and a bias of one shape) 1 and 0; the readout operator's mixing logits 1
// (dhf's torch.ones: equal weights).

import type { Engine } from '../../engine/device.js';
import { assertArg } from '../../engine/errors.js';
import { transpose2d } from '../../formats/safetensors.js';
import { WeightLoader, type LoadedModel } from '../../models/weights.js';
import { nameSeed, RandomWeightSource } from '../../models/random-weights.js';
import { DegradationModel } from '../../models/silo/cnn.js';
import { AggregationNetwork } from '../../models/silo/readout.js';
import type { AggregationNetworkConfig, DegradationModelConfig } from '../../models/silo/config.js';
import type { NamedParameter } from './adam.js';
import { AugmentRng } from './augment.js';
import { stateShape } from './checkpoint.js';

/** Each parameter's initial values in the state dict's layout, by name (independent of listing order). */
export function torchDefaultInit(params: readonly NamedParameter[], seed: number): Map<string, Float32Array> {
  assertArg(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff, `init: seed ${seed} must be an integer in [0, 2^32)`);
  const shapes = new Map(params.map((p) => [p.name, stateShape(p)]));
  const out = new Map<string, Float32Array>();
  for (const p of params) {
    const shape = shapes.get(p.name)!;
    const size = shape.reduce((a, b) => a * b, 1);
    const dot = p.name.lastIndexOf('.');
    const [layer, kind] = [p.name.slice(0, dot), p.name.slice(dot + 1)];
    const weight = shapes.get(`${layer}.weight`);
    const bias = shapes.get(`${layer}.bias`);
    const isNorm = !!weight && !!bias && weight.length === bias.length && weight.every((d, i) => d === bias[i]);
    if (isNorm) {
      out.set(p.name, new Float32Array(size).fill(kind === 'weight' ? 1 : 0));
      continue;
    }
    assertArg(weight && weight.length >= 2, `init: "${p.name}" is neither a norm affine nor part of a conv / Linear layer with a weight`);
    const fanIn = weight.slice(1).reduce((a, b) => a * b, 1);
    const bound = 1 / Math.sqrt(fanIn);
    const rng = new AugmentRng(nameSeed(p.name, seed));
    const v = new Float32Array(size);
    for (let i = 0; i < size; i++) v[i] = rng.uniform(-bound, bound);
    out.set(p.name, v);
  }
  return out;
}

/** Writes state-layout values into the parameters (a held-transposed matrix is transposed back). */
export function writeParameters(engine: Engine, params: readonly NamedParameter[], values: Map<string, Float32Array>): void {
  for (const p of params) {
    const v = values.get(p.name);
    assertArg(v && v.length === p.tensor.size, `init: no values of the right size for "${p.name}"`);
    const s = stateShape(p);
    engine.write(p.tensor, p.transposed ? transpose2d(v, s[0]!, s[1]!) : v);
  }
}

/**
 * A new model built by `make` on seeded placeholder weights, then given PyTorch's default initial values
 * (`constants`: parameters set to one value instead, e.g. the mixing logits), f32.
 */
async function newModel<M extends { parameters(): NamedParameter[] }>(engine: Engine, seed: number, what: string, make: (w: WeightLoader) => M, constants: Record<string, number> = {}): Promise<LoadedModel<M>> {
  const src = new RandomWeightSource(seed, what);
  const loaded = WeightLoader.load(engine, src, { dtype: 'f32' }, make);
  try {
    await src.generated();
    const params = loaded.model.parameters();
    const values = torchDefaultInit(params.filter((p) => !(p.name in constants)), seed);
    for (const p of params) if (p.name in constants) values.set(p.name, new Float32Array(p.tensor.size).fill(constants[p.name]!));
    writeParameters(engine, params, values);
    return loaded;
  } catch (e) {
    loaded.dispose();
    throw e;
  }
}

/** A new DegradationModel (SILO's CNN operator) with PyTorch's default initial weights, f32. */
export function newDegradationModel(engine: Engine, config: DegradationModelConfig, seed: number): Promise<LoadedModel<DegradationModel>> {
  return newModel(engine, seed, 'new operator', (w) => new DegradationModel(w, config));
}

/** A new readout operator (AggregationNetwork, trainable) with PyTorch's default initial weights, f32. */
export async function newAggregationNetwork(engine: Engine, config: AggregationNetworkConfig, seed: number): Promise<LoadedModel<AggregationNetwork>> {
  const loaded = await newModel(engine, seed, 'new readout operator', (w) => new AggregationNetwork(w, config, { trainable: true }), { mixing_weights: 1 });
  try {
    await loaded.model.syncMixing();
    return loaded;
  } catch (e) {
    loaded.dispose();
    throw e;
  }
}
