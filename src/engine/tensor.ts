// Tensors: a shape, a storage dtype and a pooled GPU buffer. Views (reshape) share the storage and
// keep it alive by reference count; the buffer returns to the pool when the last view is disposed.

import type { Engine } from './device.js';
import { bytesPerElement, shapeSize, shapeString, type DType } from './dtype.js';
import { ArgumentError, SiloError } from './errors.js';

export class Storage {
  refs = 1;
  constructor(
    readonly buffer: GPUBuffer,
    readonly bytes: number,
    private onRelease: (b: GPUBuffer) => void,
  ) {}
  retain(): void {
    this.refs++;
  }
  release(): void {
    if (--this.refs === 0) this.onRelease(this.buffer);
  }
}

let nextId = 1;

export class Tensor {
  readonly id = nextId++;
  private disposed = false;

  constructor(
    readonly engine: Engine,
    readonly storage: Storage,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly name: string,
  ) {}

  get buffer(): GPUBuffer {
    if (this.disposed) throw new SiloError(`tensor ${this.name} ${shapeString(this.shape)} was used after dispose()`);
    return this.storage.buffer;
  }

  get size(): number {
    return shapeSize(this.shape);
  }

  /** Bytes of actual data (the buffer may be larger: pool buckets, 4-byte rounding). */
  get byteLength(): number {
    return this.size * bytesPerElement(this.dtype);
  }

  get rank(): number {
    return this.shape.length;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** A view with another shape of the same number of elements (no copy). */
  reshape(shape: readonly number[], name = this.name): Tensor {
    let inferred = -1;
    let known = 1;
    shape.forEach((d, i) => {
      if (d === -1) inferred = i;
      else known *= d;
    });
    const full = shape.slice();
    if (inferred >= 0) full[inferred] = this.size / known;
    if (shapeSize(full) !== this.size || full.some((d) => !Number.isInteger(d) || d < 0)) {
      throw new ArgumentError(`reshape of ${this.name}: ${shapeString(this.shape)} cannot become ${shapeString(shape)}`);
    }
    void this.buffer; // throws if disposed
    this.storage.retain();
    const view = new Tensor(this.engine, this.storage, full, this.dtype, name);
    this.engine.track(view);
    return view;
  }

  /** Reads the tensor back as f32 (f16 is widened). Must not be called while a recording is open. */
  read(): Promise<Float32Array> {
    return this.engine.read(this);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.storage.release();
  }
}
