// Loading module parameters by their reference names (diffusers, transformers, SILO, TAESD) from a
// safetensors file or sharded index, with a clear error for every missing tensor, unexpected tensor
// or shape mismatch that names the file and the tensor. Every uploaded tensor is also checked for
// NaN/Inf: build() records one count per tensor into a single GPU buffer (one program, no waiting) and
// starts one read-back; WeightLoader.verify(engine) awaits the pending checks and throws a WeightError
// naming the file, tensor and count. Loaders call it right after building (so it counts into the load
// time) and restore() calls it again before sampling, so a path that forgot cannot run bad weights.

import type { Engine } from '../engine/device.js';
import type { DType } from '../engine/dtype.js';
import { paramDtype, shapeString } from '../engine/dtype.js';
import { SiloError } from '../engine/errors.js';
import { TRANSPOSE_ONLY_MATRICES, transpose2d, transposedShape, type TensorSource } from '../formats/safetensors.js';
import type { Tensor } from '../engine/tensor.js';
import { Recorder } from '../engine/recorder.js';
import { nonFiniteCountInto } from '../engine/ops/reduce.js';
import { defaultMatmulVariant } from '../engine/ops/matmul.js';

export class WeightError extends SiloError {}

export interface WeightProgress {
  loaded: number;
  total: number;
  name: string;
}

export interface WeightLoaderOptions {
  /** Storage dtype of the uploaded parameters (f16 needs shader-f16). */
  dtype?: DType;
  /**
   * The dtype the model's activations run in (default: `dtype`). f16 parameters with f32 activations
   * is mixed precision: half the weights' memory, and reverse mode (f32 only) still works.
   */
  activations?: DType;
  onProgress?: (p: WeightProgress) => void;
  /**
   * Load tensors holding NaN or Inf anyway (default false: such a tensor is a WeightError). The
   * sampler's own checks then catch the damage and name the first module whose output is non-finite.
   */
  allowNonFinite?: boolean;
  /**
   * How nn.Linear weights are held on the GPU: 'out_in' as stored, or 'in_out', transposed once at load.
   * Default: 'in_out' where matmul's default kernel reads only a row-major B (CPU adapters: the forward
   * then needs no weight transpose, only the fewer input gradients do), 'out_in' where it reads a
   * transposed B in place (matmul_tiled on GPUs).
   */
  linearLayout?: LinearLayout;
}

export type LinearLayout = 'out_in' | 'in_out';

/** The Linear weight layout a loader uses on this engine unless told (WeightLoaderOptions.linearLayout). */
export function defaultLinearLayout(engine: Engine): LinearLayout {
  return defaultMatmulVariant(engine) === 'matmul_tiled' ? 'out_in' : 'in_out';
}

/** Non-finite tensors found in one built model (empty when clean). */
interface WeightCheck {
  file: string;
  bad: { name: string; count: number; size: number }[];
}

// Per engine: the read-backs build() started and nobody awaited yet. They resolve (never reject), so
// an unawaited check cannot become an unhandled rejection.
// A thunk is a check deferred because another program was recording when the model was built.
const pendingChecks = new WeakMap<Engine, (Promise<WeightCheck> | (() => Promise<WeightCheck>))[]>();

export interface LoadedModel<T> {
  model: T;
  parameters: Tensor[];
  /** Frees every parameter of the model. */
  dispose(): void;
}

export class WeightLoader {
  private used = new Set<string>();
  private loadedTensors: Tensor[] = [];
  /** Tensors uploaded by get(), with their full names, for the non-finite check. */
  private uploaded: { name: string; tensor: Tensor }[] = [];
  readonly dtype: DType;
  /** The dtype the model's activations run in (inputs, embeddings, everything but the parameters). */
  readonly activationDtype: DType;
  /** How Linear layers hold their weights (WeightLoaderOptions.linearLayout). */
  readonly linearLayout: LinearLayout;

  constructor(
    readonly engine: Engine,
    readonly source: TensorSource,
    private options: WeightLoaderOptions = {},
    private prefix = '',
    private root?: WeightLoader,
  ) {
    this.dtype = options.dtype ?? 'f32';
    this.activationDtype = options.activations ?? this.dtype;
    this.linearLayout = options.linearLayout ?? defaultLinearLayout(engine);
    paramDtype(`${source.source}: parameters`, this.activationDtype, this.dtype);
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

  /** Uploads parameter `name` after checking its shape (`transpose`: a [rows, cols] one as [cols, rows], a 1x1 conv's [rows, cols, 1, 1] as [cols, rows, 1, 1]). */
  get(name: string, shape: readonly number[], dtype: DType = this.dtype, opts: { transpose?: boolean } = {}): Tensor {
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
    const t = opts.transpose ? this.uploadTransposed(full, shape, dtype) : this.source.toTensor(this.engine, full, dtype);
    const top = this.top;
    top.used.add(full);
    top.loadedTensors.push(t);
    top.uploaded.push({ name: full, tensor: t });
    top.options.onProgress?.({ loaded: top.used.size, total: this.source.names().length, name: full });
    return t;
  }

  private uploadTransposed(full: string, shape: readonly number[], dtype: DType): Tensor {
    const held = transposedShape(shape);
    if (!held) throw new WeightError(`${this.source.source}: tensor "${full}" is ${shapeString(shape)}; ${TRANSPOSE_ONLY_MATRICES}`);
    if (this.source.toTensorTransposed) return this.source.toTensorTransposed(this.engine, full, dtype);
    return this.engine.tensor(transpose2d(this.source.getF32(full), shape[0]!, shape[1]!), held, dtype, full);
  }

  /**
   * Parameter `name` as f32 values on the CPU, checked like get() but never uploaded: for small
   * constants a model folds into its dispatches at load time (SILO's softmax mixing weights).
   */
  values(name: string, shape: readonly number[]): Float32Array {
    const full = this.prefix + name;
    const have = this.shapeOf(name);
    // Values folded into dispatches never reach the GPU check: test them here.
    if (!have) throw new WeightError(`${this.source.source}: missing tensor "${full}" (expected shape ${shapeString(shape)})`);
    if (have.length !== shape.length || have.some((d, i) => d !== shape[i])) {
      throw new WeightError(`${this.source.source}: tensor "${full}" has shape ${shapeString(have)}, expected ${shapeString(shape)}`);
    }
    this.top.used.add(full);
    const v = this.source.getF32(full);
    if (!this.options.allowNonFinite) {
      let bad = 0;
      for (const x of v) if (!Number.isFinite(x)) bad++;
      if (bad) throw new WeightError(nonFiniteMessage(this.source.source, [{ name: full, count: bad, size: v.length }]));
    }
    return v;
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

  /**
   * Builds a model; on any error the uploaded parameters are freed before rethrowing. Unless
   * allowNonFinite, records the NaN/Inf count of every uploaded tensor and starts its read-back:
   * await WeightLoader.verify(engine) to get a WeightError for a non-finite tensor.
   */
  static build<T>(engine: Engine, source: TensorSource, options: WeightLoaderOptions, make: (w: WeightLoader) => T, strict = true): T {
    const w = new WeightLoader(engine, source, options);
    try {
      const model = make(w);
      if (strict) w.finish();
      if (!options.allowNonFinite) w.startCheck();
      return model;
    } catch (e) {
      w.disposeAll();
      throw e;
    }
  }

  /**
   * One program: nonFiniteCount of each uploaded tensor into one [n] buffer, then one read-back. While
   * another program is recording (weights generated on the GPU inside it), the check waits for verify().
   */
  private startCheck(): void {
    const list = this.top.uploaded;
    this.top.uploaded = [];
    if (list.length === 0) return;
    const engine = this.engine;
    const pending = pendingChecks.get(engine) ?? [];
    pendingChecks.set(engine, pending);
    // A deferred check skips models freed in the meantime (nothing left to run).
    if (engine.activeRecorder) pending.push(() => this.runCheck(list.filter((u) => !u.tensor.isDisposed)));
    else pending.push(this.runCheck(list));
  }

  private runCheck(list: { name: string; tensor: Tensor }[]): Promise<WeightCheck> {
    const engine = this.engine;
    const file = this.source.source;
    if (list.length === 0) return Promise.resolve({ file, bad: [] });
    // The counts land in a mappable buffer of their own inside the same program, so no pool tensor
    // outlives build(): the pool's live bytes are the model's weights, as callers measure them.
    const counts = engine.empty([list.length], 'f32', 'weight_nonfinite_counts');
    const staging = engine.device.createBuffer({ size: counts.byteLength, usage: 0x1 /* MAP_READ */ | 0x8 /* COPY_DST */, label: `weight_check:${file}` });
    const rec = new Recorder(engine, `weights/check_finite:${file}`);
    try {
      list.forEach((u, i) => nonFiniteCountInto(rec, u.tensor, counts, i));
      rec.copy(counts.buffer, 0, staging, 0, counts.byteLength);
    } catch (e) {
      rec.abort();
      staging.destroy();
      throw e;
    } finally {
      // Recorded reads are ordered before any later reuse of the buffer.
      counts.dispose();
    }
    // submit() hands the commands to the queue before its first await: the program is on its way now.
    return rec
      .submit()
      .then(() => staging.mapAsync(0x1 /* READ */))
      .then(() => new Float32Array(staging.getMappedRange().slice(0)))
      .then(
        (c) => ({ file, bad: list.flatMap((u, i) => (c[i] ? [{ name: u.name, count: c[i]!, size: u.tensor.size }] : [])) }),
        (e: unknown) => ({ file, bad: [{ name: `(the check itself failed: ${(e as Error).message})`, count: NaN, size: 0 }] }),
      )
      .finally(() => staging.destroy());
  }

  /**
   * Awaits the non-finite checks of every model built on `engine` since the last call; throws a
   * WeightError naming the file(s), tensor(s) and counts when a tensor holds NaN or Inf.
   */
  static async verify(engine: Engine): Promise<void> {
    const pending = pendingChecks.get(engine);
    if (!pending?.length) return;
    pendingChecks.delete(engine);
    const results = await Promise.all(pending.map((p) => (typeof p === 'function' ? p() : p)));
    const bad = results.filter((r) => r.bad.length);
    if (bad.length) throw new WeightError(bad.map((r) => nonFiniteMessage(r.file, r.bad)).join('; '));
  }
}

function nonFiniteMessage(file: string, bad: { name: string; count: number; size: number }[]): string {
  const list = bad.slice(0, 8).map((b) => `"${b.name}" has ${b.count} non-finite value(s) (NaN/Inf) of ${b.size}`).join(', ');
  return `${file}: ${bad.length} tensor(s) hold NaN or Inf: ${list}${bad.length > 8 ? ', ...' : ''} (the allowNonFinite option, silo restore --allow-nonfinite-weights, loads them anyway)`;
}
