// Seeded random weights generated on the GPU, for full-size architectures without multi-GB files
// (benchmarks). A RandomWeightSource answers every name a module asks for with the shape it asks for:
// matrices/kernels ~ N(0, 1/fan_in), 1-D norm weights ~ 1 + 0.1 N(0,1), other 1-D ~ 0.05 N(0,1) -
// the same scheme as the golden fixtures, so activations stay O(1) through deep stacks.

import type { Engine } from '../engine/device.js';
import type { DType } from '../engine/dtype.js';
import { shapeSize, shapeString } from '../engine/dtype.js';
import { SiloError } from '../engine/errors.js';
import { Recorder } from '../engine/recorder.js';
import { TRANSPOSE_ONLY_MATRICES, transposedShape, type RawArray, type TensorInfo, type TensorSource } from '../formats/safetensors.js';
import type { Tensor } from '../engine/tensor.js';
import { randomNormal } from '../engine/ops/random.js';
import { transposeLast2 } from '../engine/ops/matmul.js';

/** A 32-bit seed per tensor name (FNV-1a of the name, keyed by `seed`): values independent of load order. */
export function nameSeed(name: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export class RandomWeightSource implements TensorSource {
  readonly source: string;
  private shapes = new Map<string, number[]>();
  private rec: Recorder | null = null;

  constructor(
    private seed = 0,
    label = 'random weights',
  ) {
    this.source = `${label} (seed ${seed})`;
  }

  /** Called by WeightLoader before it checks a name: the module's expected shape becomes the tensor's. */
  declare(name: string, shape: readonly number[]): void {
    this.shapes.set(name, shape.slice());
  }

  names(): string[] {
    return [...this.shapes.keys()];
  }
  /** Only declared names exist, so optional parameters a module probes for are absent (its default structure). */
  has(name: string): boolean {
    return this.shapes.has(name);
  }
  info(name: string): TensorInfo {
    const shape = this.shapes.get(name);
    if (!shape) throw new SiloError(`${this.source}: tensor "${name}" was not declared`);
    return { dtype: 'F32', shape, byteOffset: 0, byteLength: shapeSize(shape) * 4 };
  }
  getRaw(name: string): RawArray {
    throw new SiloError(`${this.source}: "${name}" lives on the GPU only`);
  }
  getF32(name: string): Float32Array {
    throw new SiloError(`${this.source}: "${name}" lives on the GPU only`);
  }
  getIntegers(name: string): number[] {
    throw new SiloError(`${this.source}: "${name}" is not an integer tensor`);
  }

  /** Records the generation of `name` into one program (submit it with `generated()`). */
  toTensor(engine: Engine, name: string, dtype: DType = 'f32'): Tensor {
    const shape = this.info(name).shape;
    this.rec ??= new Recorder(engine, `${this.source}: generate`);
    const last = name.slice(name.lastIndexOf('.') + 1);
    const isNorm = /norm|ln_|layer_norm/.test(name);
    let mean = 0;
    let std: number;
    if (shape.length === 1) {
      mean = isNorm && last === 'weight' ? 1 : 0;
      std = isNorm && last === 'weight' ? 0.1 : 0.05;
    } else {
      std = 1 / Math.sqrt(shapeSize(shape) / shape[0]!);
    }
    return randomNormal(this.rec, shape, nameSeed(name, this.seed), { mean, std, dtype, name, exact: true });
  }

  /** The same values as toTensor's, transposed (in the same pending program), so both layouts hold the same model. */
  toTensorTransposed(engine: Engine, name: string, dtype: DType = 'f32'): Tensor {
    const shape = this.info(name).shape;
    const held = transposedShape(shape);
    if (!held) throw new SiloError(`${this.source}: "${name}" is ${shapeString(shape)}; ${TRANSPOSE_ONLY_MATRICES}`);
    const t = this.toTensor(engine, name, dtype);
    const m = t.reshape([shape[0]!, shape[1]!]);
    t.dispose();
    const tt = transposeLast2(this.rec!, m, name, { exact: true });
    m.dispose();
    if (held.length === 2) return tt;
    const v = tt.reshape(held);
    tt.dispose();
    return v;
  }

  /** Submits the recorded generation program (call once after building the model). */
  async generated(): Promise<void> {
    const rec = this.rec;
    this.rec = null;
    if (rec) await rec.submit({ wait: true });
  }
}
