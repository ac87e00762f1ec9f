// SILO's readout ("RG") checkpoints are dicts {step, config, aggregation_network, optimizer_state_dict}
// (training/train_helpers.py save_model). SILO's sampler ignores the stored config and hard-codes the
// AggregationNetwork's constructor arguments (docs/silo-release.md section 3), so the arguments are read
// off the tensor shapes here, the way strict loading would force them; the stored config is only
// cross-checked (a contradiction is refused) and kept for provenance. Browser-safe.

import { SiloError } from '../engine/errors.js';
import { PickleDict, PickleGlobal, type PickleValue } from '../formats/pickle.js';
import { TorchTensor, type TorchCheckpoint } from '../formats/torch-checkpoint.js';
import { aggregationConfig } from '../models/silo/config.js';

type Json = Record<string, unknown>;

/** A checkpoint that is not what SILO's release stores under that name, or contradicts itself. */
export class SiloCheckpointError extends SiloError {}

/** The top level of a readout checkpoint: a dict whose aggregation_network is a dict. */
export function isReadoutCheckpoint(value: PickleValue): value is PickleDict {
  return value instanceof PickleDict && value.get('aggregation_network') instanceof PickleDict;
}

/** Pickled data as JSON (dicts with string keys, tuples as lists); tensors and globals as short descriptions. */
export function pickleToJson(v: PickleValue, depth = 0): unknown {
  if (depth > 32) return '<nested too deep>';
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? v : String(v);
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (Array.isArray(v)) return v.map((x) => pickleToJson(x, depth + 1));
  if (v instanceof PickleDict) {
    const o: Json = {};
    for (const [k, x] of v) o[String(k)] = pickleToJson(x, depth + 1);
    return o;
  }
  if (v instanceof TorchTensor) return `<tensor ${v.describe()}>`;
  if (v instanceof PickleGlobal) return `<${v.qualifiedName}>`;
  if (v instanceof Uint8Array) return `<bytes of ${v.byteLength}>`;
  return `<${typeof v}>`;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * AggregationNetwork constructor arguments (the format aggregationConfig reads) from the state dict's
 * tensor shapes; `stored` is the checkpoint's `config` (JSON). Throws SiloCheckpointError naming
 * `source` for a state dict that is not an AggregationNetwork's or a stored config that contradicts it;
 * `notes` tell about stored settings the tensors overrule (the sampler never reads them).
 */
export function readoutArgsFromShapes(shapes: ReadonlyMap<string, readonly number[]>, stored: unknown, source: string): { args: Json; notes: string[] } {
  const fail = (why: string) => new SiloCheckpointError(`${source}: ${why}`);
  const shape = (name: string) => {
    const s = shapes.get(name);
    if (!s) throw fail(`aggregation_network has no tensor "${name}": not a SILO AggregationNetwork state dict`);
    return s;
  };
  let layers = 0;
  while (shapes.has(`bottleneck_layers.${layers}.conv1.weight`)) layers++;
  if (layers === 0) throw fail('aggregation_network has no bottleneck_layers.0.conv1.weight: not a SILO AggregationNetwork state dict');
  const s = shapes.has('sigma_emb_linear.weight') ? 1 : 0;
  const projection = shape('bottleneck_layers.0.conv3.weight')[0]!;
  const featureDims: number[] = [];
  for (let l = 0; l < layers; l++) {
    const conv1 = shape(`bottleneck_layers.${l}.conv1.weight`);
    if (conv1[0] !== Math.floor(projection / 4)) throw fail(`bottleneck_layers.${l}.conv1 has ${conv1[0]} outputs; AggregationNetwork uses projection_dim // 4 = ${Math.floor(projection / 4)}`);
    if (shape(`bottleneck_layers.${l}.conv3.weight`)[0] !== projection) throw fail(`bottleneck_layers.${l}.conv3 has ${shape(`bottleneck_layers.${l}.conv3.weight`)[0]} outputs, layer 0 has ${projection}`);
    featureDims.push(conv1[1]! - s);
  }
  const cfg = (stored ?? {}) as Json;
  const mixing = shape('mixing_weights')[0]!;
  if (mixing % layers !== 0) throw fail(`mixing_weights has ${mixing} entries, not a multiple of the ${layers} bottleneck layers`);
  let saveTimestep: unknown = [0];
  if (mixing / layers > 1) {
    saveTimestep = cfg['save_timestep'];
    if (!Array.isArray(saveTimestep) || saveTimestep.length !== mixing / layers) {
      throw fail(`mixing_weights covers ${mixing / layers} timesteps per layer but the stored config's save_timestep is ${JSON.stringify(saveTimestep)}`);
    }
  }
  const args: Json = {
    _class_name: 'AggregationNetwork',
    projection_dim: projection,
    feature_dims: featureDims,
    save_timestep: saveTimestep,
    num_timesteps: typeof cfg['num_timesteps'] === 'number' ? cfg['num_timesteps'] : 1000,
    use_output_head: shapes.has('output_head.0.weight'),
    output_head_channels: shapes.has('output_head.0.weight') ? shape('output_head.4.weight')[0] : 4,
    // The sampler builds output_head_act=False (no tanh: nothing in the state dict says either way).
    output_head_act: false,
    bottleneck_sequential: false,
    sigma_condition: s === 1,
    cond_inpaint: false,
  };
  if (args['use_output_head']) {
    const extra = shape('output_head.0.weight')[1]! - projection - s;
    if (extra !== 0 && extra !== 1) throw fail(`output_head.0 takes ${shape('output_head.0.weight')[1]} channels; expected projection_dim ${projection} + ${s} (sigma map) [+ 1 mask]`);
    args['cond_inpaint'] = extra === 1;
  }
  if (s) {
    const norm = shape('sigma_emb_norm.weight');
    const lin = shape('sigma_emb_linear.weight');
    if (norm.length !== 3 || norm[0] !== 1 || norm[1] !== norm[2] || lin[0] !== norm[1]! * norm[2]!) {
      throw fail(`sigma_emb_linear ${JSON.stringify(lin)} / sigma_emb_norm ${JSON.stringify(norm)} do not map to a square [1, n, n] sigma map`);
    }
    args['latent_size'] = norm[1];
    args['sigma_emb_dim'] = lin[1];
  }
  // The stored config, where it says the same things, must agree.
  if (cfg['dims'] !== undefined && !same(cfg['dims'], featureDims)) {
    throw fail(`the stored config says dims ${JSON.stringify(cfg['dims'])} but the tensors give feature_dims ${JSON.stringify(featureDims)}; refusing a self-contradictory checkpoint`);
  }
  if (cfg['projection_dim'] !== undefined && cfg['projection_dim'] !== projection) {
    throw fail(`the stored config says projection_dim ${JSON.stringify(cfg['projection_dim'])} but the tensors give ${projection}; refusing a self-contradictory checkpoint`);
  }
  const notes: string[] = [];
  const kw = (cfg['aggregation_kwargs'] ?? {}) as Json;
  for (const key of ['sigma_condition', 'cond_inpaint'] as const) {
    if (typeof kw[key] === 'boolean' && kw[key] !== args[key]) {
      notes.push(`the stored config says aggregation_kwargs.${key} ${kw[key]}, the tensors need ${args[key]}: using ${args[key]} (SILO's sampler ignores the stored config)`);
    }
  }
  // What the engine will do with it: a config it refuses is refused now, not at restore time.
  try {
    aggregationConfig(args);
  } catch (e) {
    throw fail(`derived constructor arguments are not usable: ${(e as Error).message}`);
  }
  return { args, notes };
}

/**
 * The config.json of a converted readout checkpoint (`ckpt` holds a readout dict): the constructor
 * arguments read off the shapes, where it came from, its step and stored config; `dropped` names the
 * top-level keys left out (the optimizer state), `notes` what the tensors overrule.
 */
export function readoutConfig(ckpt: TorchCheckpoint, source: string): { config: Json; dropped: string[]; notes: string[] } {
  const top = ckpt.value as PickleDict;
  const sd = ckpt.stateDict('aggregation_network');
  const shapes = new Map([...sd.tensors].map(([n, t]) => [n, t.shape] as const));
  const stored = pickleToJson(top.get('config') ?? null);
  const { args, notes } = readoutArgsFromShapes(shapes, stored, source);
  const dropped = [...top.keys()].map(String).filter((k) => !['aggregation_network', 'config', 'step'].includes(k));
  const config = {
    ...args,
    _source: 'silo-webgpu: a SILO readout checkpoint converted; constructor arguments read off the tensor shapes, as silo_utils.StableDiffusionPipeline builds the network',
    _silo_checkpoint: { file: source, step: pickleToJson(top.get('step') ?? null), dropped, config: stored },
  };
  return { config, dropped, notes };
}
