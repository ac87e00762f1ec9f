// Loading module parameters by their reference names (diffusers, transformers, SILO, TAESD) from a
// safetensors file or sharded index, with a clear error for every missing tensor, unexpected tensor
// or shape mismatch that names the file and the tensor.

import type { Engine } from '../engine/device.js';
import type { DType } from '../engine/dtype.js';
import { shapeString } from '../engine/dtype.js';
import { SiloError } from '../engine/errors.js';
import type { TensorSource } from '../formats/safetensors.js';
import type { Tensor } from '../engine/tensor.js';

export class WeightError extends SiloError {}

export interface WeightProgress {
  loaded: number;
  total: number;
  name: string;
}

export interface WeightLoaderOptions {
  /** Storage dtype of the uploaded parameters (f16 needs shader-f16). */
  dtype?: DType;
  onProgress?: (p: WeightProgress) => void;
}

export interface LoadedModel<T> {
  model: T;
  parameters: Tensor[];
  /** Frees every parameter of the model. */
  dispose(): void;
}

export class WeightLoader {
  private used = new Set<string>();
  private loadedTensors: Tensor[] = [];
  readonly dtype: DType;

  constructor(
    readonly engine: Engine,
    readonly source: TensorSource,
    private options: WeightLoaderOptions = {},
    private prefix = '',
    private root?: WeightLoader,
  ) {
    this.dtype = options.dtype ?? 'f32';
  }

  private get top(): WeightLoader {
    return this.root ?? this;
  }

  /** A view whose names are relative to `prefix` (e.g. "down_blocks.0."). */
  scope(prefix: string): WeightLoader {
    return new WeightLoader(this.engine, this.source, this.options, this.prefix + prefix, this.top);
  }

  has(name: string): boolean {
    return this.source.has(this.prefix + name);
  }

  /** The stored shape of `name`, or undefined when absent (for layouts that differ between checkpoints). */
  shapeOf(name: string): readonly number[] | undefined {
    return this.has(name) ? this.source.info(this.prefix + name).shape : undefined;
  }

  /** Uploads parameter `name` after checking its shape. */
  get(name: string, shape: readonly number[], dtype: DType = this.dtype): Tensor {
    const full = this.prefix + name;
    (this.source as { declare?: (n: string, s: readonly number[]) => void }).declare?.(full, shape);
    if (!this.source.has(full)) {
      throw new WeightError(`${this.source.source}: missing tensor "${full}" (expected shape ${shapeString(shape)})`);
    }
    const info = this.source.info(full);
    const same = info.shape.length === shape.length && info.shape.every((d, i) => d === shape[i]);
    if (!same) {
      throw new WeightError(`${this.source.source}: tensor "${full}" has shape ${shapeString(info.shape)}, expected ${shapeString(shape)}`);
    }
    const t = this.source.toTensor(this.engine, full, dtype);
    const top = this.top;
    top.used.add(full);
    top.loadedTensors.push(t);
    top.options.onProgress?.({ loaded: top.used.size, total: this.source.names().length, name: full });
    return t;
  }

  /**
   * Parameter `name` as f32 values on the CPU, checked like get() but never uploaded: for small
   * constants a model folds into its dispatches at load time (SILO's softmax mixing weights).
   */
  values(name: string, shape: readonly number[]): Float32Array {
    const full = this.prefix + name;
    const have = this.shapeOf(name);
    if (!have) throw new WeightError(`${this.source.source}: missing tensor "${full}" (expected shape ${shapeString(shape)})`);
    if (have.length !== shape.length || have.some((d, i) => d !== shape[i])) {
      throw new WeightError(`${this.source.source}: tensor "${full}" has shape ${shapeString(have)}, expected ${shapeString(shape)}`);
    }
    this.top.used.add(full);
    return this.source.getF32(full);
  }

  optional(name: string, shape: readonly number[], dtype: DType = this.dtype): Tensor | undefined {
    return this.has(name) ? this.get(name, shape, dtype) : undefined;
  }

  /** Marks tensors that exist in the file but are deliberately unused (e.g. SILO's unused emb_layers). */
  ignore(predicate: (name: string) => boolean): void {
    for (const n of this.source.names()) if (n.startsWith(this.prefix) && predicate(n.slice(this.prefix.length))) this.top.used.add(n);
  }

  /** Throws (and frees what was uploaded) when the file has tensors no module claimed. */
  finish(): void {
    const top = this.top;
    const unexpected = this.source.names().filter((n) => !top.used.has(n));
    if (unexpected.length) {
      top.disposeAll();
      const list = unexpected.slice(0, 8).map((n) => `"${n}"`).join(', ');
      throw new WeightError(
        `${this.source.source}: ${unexpected.length} unexpected tensor(s) not used by the model: ${list}${unexpected.length > 8 ? ', ...' : ''}`,
      );
    }
  }

  /** Frees every parameter uploaded through this loader (used when construction fails). */
  disposeAll(): void {
    for (const t of this.top.loadedTensors) t.dispose();
    this.top.loadedTensors = [];
  }

  /** Builds a model and keeps hold of its parameters so the caller can free them all at once. */
  static load<T>(engine: Engine, source: TensorSource, options: WeightLoaderOptions, make: (w: WeightLoader) => T, strict = true): LoadedModel<T> {
    let params: Tensor[] = [];
    const model = WeightLoader.build(engine, source, options, (w) => {
      const m = make(w);
      params = w.top.loadedTensors;
      return m;
    }, strict);
    return { model, parameters: params, dispose: () => params.forEach((t) => t.dispose()) };
  }

  /** Builds a model; on any error the uploaded parameters are freed before rethrowing. */
  static build<T>(engine: Engine, source: TensorSource, options: WeightLoaderOptions, make: (w: WeightLoader) => T, strict = true): T {
    const w = new WeightLoader(engine, source, options);
    try {
      const model = make(w);
      if (strict) w.finish();
      return model;
    } catch (e) {
      w.disposeAll();
      throw e;
    }
  }
}
