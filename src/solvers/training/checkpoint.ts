// Training checkpoints and operator exports as safetensors (no file I/O here: the caller writes the bytes,
// e.g. writeSafetensorsFile in Node, which is atomic). A checkpoint holds every parameter under its
// state-dict name and layout, so it also loads as the operator itself, plus the optimizer's moments
// (`optimizer.exp_avg.<name>`, `optimizer.exp_avg_sq.<name>`, same layout) and, in the metadata, the
// format, the step count and the optimizer's settings. Values are f32 copied bit for bit, so resuming on
// the same adapter continues exactly as an uninterrupted run. An export holds the parameters only.

import { SiloError } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { f32Entry, transpose2d, type SafetensorsEntry, type TensorSource } from '../../formats/safetensors.js';
import type { Adam, NamedParameter } from './adam.js';

export const CHECKPOINT_FORMAT = 'silo-webgpu-training-checkpoint/1';

/** A checkpoint that cannot be resumed: names the file and what is wrong. */
export class CheckpointError extends SiloError {}

/** The state dict's shape of a parameter (a held-transposed matrix swaps back). */
export function stateShape(p: NamedParameter): number[] {
  const s = p.tensor.shape;
  return p.transposed ? [s[1]!, s[0]!, ...s.slice(2)] : s.slice();
}

/** Values in the held layout -> the state dict's. */
export function toState(p: NamedParameter, v: Float32Array): Float32Array {
  return p.transposed ? transpose2d(v, p.tensor.shape[0]!, p.tensor.shape[1]!) : v;
}

async function entries(params: readonly NamedParameter[], prefix: string, tensors: readonly { read(): Promise<Float32Array> }[]): Promise<Record<string, SafetensorsEntry>> {
  const out: Record<string, SafetensorsEntry> = {};
  for (const [i, p] of params.entries()) out[`${prefix}${p.name}`] = f32Entry(toState(p, await tensors[i]!.read()), stateShape(p));
  return out;
}

/** The parameters alone, as an operator file (`silo restore --operator`) takes them. */
export async function exportParameters(params: readonly NamedParameter[], metadata: Record<string, string> = {}): Promise<{ tensors: Record<string, SafetensorsEntry>; metadata: Record<string, string> }> {
  return { tensors: await entries(params, '', params.map((p) => p.tensor)), metadata };
}

/** Parameters, moments and step, for resuming (`extra` metadata is kept as given: task, data, seed...). */
export async function checkpointTensors(
  params: readonly NamedParameter[],
  opt: Adam,
  extra: Record<string, string> = {},
): Promise<{ tensors: Record<string, SafetensorsEntry>; metadata: Record<string, string> }> {
  const tensors = {
    ...(await entries(params, '', params.map((p) => p.tensor))),
    ...(await entries(params, 'optimizer.exp_avg.', opt.m)),
    ...(await entries(params, 'optimizer.exp_avg_sq.', opt.v)),
  };
  const metadata = { ...extra, format: CHECKPOINT_FORMAT, step: String(opt.step), optimizer: JSON.stringify(opt.settings()) };
  return { tensors, metadata };
}

/**
 * The checkpoint's parameters alone, as a source a model loads strictly from (the optimizer's tensors
 * hidden), so a missing or unexpected parameter is still refused by name.
 */
export function checkpointParameters(file: TensorSource): TensorSource {
  const own = (n: string) => !n.startsWith('optimizer.');
  const check = (n: string) => {
    if (!own(n)) throw new CheckpointError(`${file.source}: "${n}" is optimizer state, not a parameter`);
    return n;
  };
  return {
    source: file.source,
    names: () => file.names().filter(own),
    has: (n) => own(n) && file.has(n),
    info: (n) => file.info(check(n)),
    getRaw: (n) => file.getRaw(check(n)),
    getF32: (n) => file.getF32(check(n)),
    getIntegers: (n) => file.getIntegers(check(n)),
    toTensor: (engine, n, dtype) => file.toTensor(engine, check(n), dtype),
    ...(file.toTensorTransposed ? { toTensorTransposed: (engine, n, dtype) => file.toTensorTransposed!(engine, check(n), dtype) } : {}),
  } satisfies TensorSource;
}

/** The step count and optimizer settings a checkpoint records; refuses a file that is not one. */
export function checkpointInfo(file: TensorSource & { metadata?: Record<string, string> }): { step: number; optimizer: Record<string, unknown> } {
  const meta = file.metadata ?? {};
  if (meta['format'] !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(`${file.source}: not a training checkpoint (metadata format is ${JSON.stringify(meta['format'] ?? null)}, want "${CHECKPOINT_FORMAT}")`);
  }
  const step = Number(meta['step']);
  if (!/^\d+$/.test(meta['step'] ?? '') || !Number.isSafeInteger(step)) throw new CheckpointError(`${file.source}: metadata step ${JSON.stringify(meta['step'])} is not a step count`);
  let optimizer: Record<string, unknown>;
  try {
    optimizer = JSON.parse(meta['optimizer'] ?? '') as Record<string, unknown>;
  } catch {
    throw new CheckpointError(`${file.source}: metadata optimizer is not JSON`);
  }
  return { step, optimizer };
}

/**
 * Restores the optimizer's moments and step from a checkpoint whose parameters were loaded into `params`
 * (build the model from the same file). Every moment must be there with the parameter's shape.
 */
export function resumeOptimizer(file: TensorSource & { metadata?: Record<string, string> }, params: readonly NamedParameter[], opt: Adam): number {
  const { step } = checkpointInfo(file);
  const load = (prefix: string) =>
    params.map((p) => {
      const name = `${prefix}${p.name}`;
      if (!file.has(name)) throw new CheckpointError(`${file.source}: missing tensor "${name}" (the optimizer state of "${p.name}")`);
      const want = stateShape(p);
      const got = file.info(name).shape;
      if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
        throw new CheckpointError(`${file.source}: tensor "${name}" has shape ${shapeString(got)}, the parameter ${shapeString(want)}`);
      }
      const v = file.getF32(name);
      return p.transposed ? transpose2d(v, want[0]!, want[1]!) : v;
    });
  opt.restore(step, load('optimizer.exp_avg.'), load('optimizer.exp_avg_sq.'));
  return step;
}
