// The engine's device layer: adapter and device with the adapter's real limits and optional features,
// adapter report (software/fallback detection), buffer pool, pipeline cache, uploads and read-backs,
// and device-loss handling that names the last program and kernels submitted.

import { getGPU } from './gpu.js';
import { BufferPool } from './pool.js';
import { KernelCache, type Kernel, type KernelSpec } from './kernel.js';
import { Storage, Tensor } from './tensor.js';
import { bytesPerElement, f16ArrayToF32, f32ArrayToF16, shapeSize, shapeString, type DType } from './dtype.js';
import { ArgumentError, DeviceLostError, LimitError, SiloError } from './errors.js';
import type { Recorder } from './recorder.js';
import type { StepParams } from './step-value.js';
import { Tuning, adapterKey, loadTuning, type TuningStore } from './tuning.js';

/** `bytes` zero-padded to a multiple of 4 (buffer writes and copies move whole words). */
function padTo4(bytes: Uint8Array): Uint8Array {
  if (bytes.byteLength % 4 === 0) return bytes;
  const p = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  p.set(bytes);
  return p;
}

export interface EngineOptions {
  powerPreference?: GPUPowerPreference;
  /** Fail unless the device has shader-f16. */
  requireF16?: boolean;
  /** Do not request optional features even if offered (for testing fallbacks). */
  disableFeatures?: Array<'shader-f16' | 'subgroups' | 'timestamp-query'>;
  /** Called with one-line diagnostics (adapter report, device loss). */
  log?: (line: string) => void;
  /** Load measured kernel choices for this adapter from this store (tuning.ts); none: the defaults. */
  tuning?: TuningStore;
  /**
   * Use at most these limits (never more than the device offers): to see how a smaller GPU would
   * fare, and for tests of limit errors.
   */
  limits?: Partial<Record<LimitName, number>>;
  /**
   * Workgroup reductions (norms, softmax over long rows) with subgroup operations instead of a tree in
   * workgroup memory. Default: on for hardware adapters that can (canSubgroupReduce), off for CPU
   * adapters; true where the adapter cannot is refused with a LimitError.
   */
  subgroupReductions?: boolean;
}

export interface AdapterReport {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  /** True for CPU implementations (lavapipe/llvmpipe, SwiftShader, WARP) and fallback adapters. */
  software: boolean;
  features: string[];
}

const LIMIT_NAMES = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];
export type EngineLimits = Record<LimitName, number> & {
  minUniformBufferOffsetAlignment: number;
  minStorageBufferOffsetAlignment: number;
};

const OPTIONAL_FEATURES = ['shader-f16', 'subgroups', 'timestamp-query'] as const;

function describe(info: GPUAdapterInfo | undefined, isFallback: boolean, features: string[]): AdapterReport {
  const vendor = info?.vendor ?? '';
  const architecture = info?.architecture ?? '';
  const description = info?.description ?? '';
  const text = `${vendor} ${architecture} ${description} ${info?.device ?? ''}`.toLowerCase();
  const software = isFallback || /llvmpipe|lavapipe|swiftshader|software|warp|microsoft basic render/.test(text);
  return { vendor, architecture, device: info?.device ?? '', description, isFallbackAdapter: isFallback, software, features };
}

export class Engine {
  readonly queue: GPUQueue;
  readonly pool: BufferPool;
  readonly kernels: KernelCache;
  readonly hasF16: boolean;
  readonly hasSubgroups: boolean;
  readonly hasTimestamps: boolean;
  /** WGSL language features the implementation offers (navigator.gpu.wgslLanguageFeatures). */
  readonly wgslFeatures: ReadonlySet<string>;
  /** Kernel choices measured on this adapter (empty: every op uses its default). */
  readonly tuning: Tuning;
  /** The recorder currently recording, if any (one at a time: error scopes and uploads depend on it). */
  activeRecorder: Recorder | null = null;
  /** Labels of the last submitted program and its kernels, for device-loss messages. */
  lastSubmitted: { program: string; kernels: string[] } | null = null;
  private lostReason: string | null = null;
  private tidyStack: Set<Tensor>[] = [];
  private log: (line: string) => void;
  private subgroupReduce: boolean;

  private constructor(
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly info: AdapterReport,
    readonly limits: EngineLimits,
    options: EngineOptions,
    wgslFeatures: Iterable<string>,
  ) {
    this.queue = device.queue;
    this.log = options.log ?? (() => {});
    this.hasF16 = device.features.has('shader-f16');
    this.hasSubgroups = device.features.has('subgroups');
    this.hasTimestamps = device.features.has('timestamp-query');
    this.pool = new BufferPool(device, limits.maxBufferSize);
    this.wgslFeatures = new Set(wgslFeatures);
    this.kernels = new KernelCache(device, limits, this.hasF16, this.hasSubgroups);
    this.subgroupReduce = this.canSubgroupReduce && !info.software;
    this.tuning = new Tuning(adapterKey(info));
    device.lost.then((lost) => {
      // Engine.destroy() already said why; a real loss (driver reset, GPU removed, destroy() on the device) says so here.
      if (this.lostReason) return;
      const last = this.lastSubmitted;
      this.lostReason =
        `the GPU device was lost (reason: ${lost.reason}${lost.message ? `: ${lost.message}` : ''})` +
        (last ? `; last program submitted: ${last.program} (kernels: ${last.kernels.slice(-8).join(', ')})` : '') +
        '; this Engine cannot run anything any more: create a new Engine';
      this.log(this.lostReason);
    });
    device.addEventListener('uncapturederror', (ev) => {
      // After a loss the implementation's own errors are noise: every later call reports DeviceLostError.
      if (this.lostReason) return;
      this.log(`uncaptured WebGPU error: ${(ev as GPUUncapturedErrorEvent).error.message}`);
    });
  }

  static async create(options: EngineOptions = {}): Promise<Engine> {
    const gpu = await getGPU();
    const adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference ?? 'high-performance' });
    if (!adapter) {
      throw new LimitError(
        'no WebGPU adapter: requestAdapter() returned null (in Node, install a Vulkan driver such as Mesa lavapipe >= 24 and set VK_ICD_FILENAMES; in Chromium, pass --enable-unsafe-webgpu)',
      );
    }
    const offered = OPTIONAL_FEATURES.filter(
      (f) => adapter.features.has(f) && !(options.disableFeatures ?? []).includes(f),
    );
    if (options.requireF16 && !offered.includes('shader-f16')) {
      throw new LimitError('this adapter does not offer shader-f16, which was required');
    }
    const requiredLimits: Record<string, number> = {};
    for (const name of LIMIT_NAMES) requiredLimits[name] = adapter.limits[name];
    const device = await adapter.requestDevice({
      label: 'silo-webgpu',
      requiredFeatures: offered as GPUFeatureName[],
      requiredLimits,
    });
    const limits = {} as EngineLimits;
    // A cap below WebGPU's defaults cannot be requested from the device; the engine's own checks (pool, bindings) enforce it.
    for (const name of LIMIT_NAMES) limits[name] = Math.min(device.limits[name], options.limits?.[name] ?? Infinity);
    limits.minUniformBufferOffsetAlignment = device.limits.minUniformBufferOffsetAlignment;
    limits.minStorageBufferOffsetAlignment = device.limits.minStorageBufferOffsetAlignment;
    const info = describe(
      adapter.info,
      // isFallbackAdapter moved from GPUAdapter to GPUAdapterInfo; read whichever exists.
      Boolean((adapter.info as { isFallbackAdapter?: boolean })?.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter),
      [...device.features].map(String).sort(),
    );
    const engine = new Engine(adapter, device, info, limits, options, gpu.wgslLanguageFeatures ?? []);
    if (options.subgroupReductions !== undefined) {
      try {
        engine.subgroupReductions = options.subgroupReductions;
      } catch (e) {
        engine.destroy();
        throw e;
      }
    }
    engine.log(engine.summary());
    if (options.tuning) await loadTuning(engine.tuning, options.tuning, (l) => engine.log(l));
    return engine;
  }

  /**
   * Whether workgroup reductions can use subgroup operations: the `subgroups` feature, and the
   * `subgroup_id` WGSL language feature (each subgroup writes its partial result to its own slot).
   */
  get canSubgroupReduce(): boolean {
    return this.hasSubgroups && this.wgslFeatures.has('subgroup_id');
  }

  /** Whether norms and softmax reduce across a workgroup with subgroup operations (lanes.ts). */
  get subgroupReductions(): boolean {
    return this.subgroupReduce;
  }

  set subgroupReductions(on: boolean) {
    if (on && !this.canSubgroupReduce) {
      throw new LimitError(
        `subgroupReductions: this adapter cannot reduce with subgroups (${this.hasSubgroups ? 'no subgroup_id WGSL language feature' : 'no subgroups feature'})`,
      );
    }
    this.subgroupReduce = on;
  }

  /** One line describing the adapter, for logs and reports. */
  summary(): string {
    const i = this.info;
    const name = [i.vendor, i.architecture, i.description || i.device].filter(Boolean).join(' / ');
    const kind = i.software ? 'SOFTWARE adapter (CPU; expect low throughput)' : 'hardware adapter';
    const mib = (b: number) => `${Math.round(b / 2 ** 20)} MiB`;
    return (
      `WebGPU ${kind}: ${name || 'unknown'}${i.isFallbackAdapter ? ' [fallback]' : ''}; ` +
      `features: ${i.features.filter((f) => (OPTIONAL_FEATURES as readonly string[]).includes(f)).join(', ') || 'none'}; ` +
      `maxStorageBufferBindingSize ${mib(this.limits.maxStorageBufferBindingSize)}, maxBufferSize ${mib(this.limits.maxBufferSize)}, ` +
      `workgroup storage ${this.limits.maxComputeWorkgroupStorageSize} B, invocations ${this.limits.maxComputeInvocationsPerWorkgroup}`
    );
  }

  get isLost(): boolean {
    return this.lostReason !== null;
  }

  checkAlive(): void {
    if (this.lostReason) throw new DeviceLostError(this.lostReason);
  }

  kernel(spec: KernelSpec): Kernel {
    this.checkAlive();
    return this.kernels.get(spec);
  }

  /** An uninitialised tensor from the pool. */
  /** `exact`: a buffer of exactly the tensor's size, not the pool's size class (long-lived tensors: weights). */
  empty(shape: readonly number[], dtype: DType = 'f32', name = 'tensor', opts: { exact?: boolean } = {}): Tensor {
    this.checkAlive();
    if (shape.some((d) => !Number.isInteger(d) || d < 0)) {
      throw new ArgumentError(`${name}: invalid shape ${shapeString(shape)}`);
    }
    if (dtype === 'f16' && !this.hasF16) {
      throw new LimitError(`${name}: f16 storage needs shader-f16, which this device does not have`);
    }
    const bytes = Math.ceil((shapeSize(shape) * bytesPerElement(dtype)) / 4) * 4;
    const buffer = this.pool.acquire(bytes, `tensor ${name} ${shapeString(shape)} ${dtype}`, opts.exact);
    const t = new Tensor(this, new Storage(buffer, bytes, (b) => this.pool.release(b)), shape.slice(), dtype, name);
    this.track(t);
    return t;
  }

  /**
   * Exempts `t` from every enclosing tidy() frame: for constants an object creates lazily while a
   * caller's tidy() is open (operator kernels, masks) and frees itself later.
   */
  keep(t: Tensor): Tensor {
    for (const frame of this.tidyStack) frame.delete(t);
    return t;
  }

  /** Registers a tensor (or view) with the innermost tidy() frame, if any. */
  track(t: Tensor): void {
    this.tidyStack[this.tidyStack.length - 1]?.add(t);
  }

  /**
   * Runs fn and disposes every tensor it allocated that is not part of its result (a Tensor, or arrays /
   * plain objects of them). Inside a recording this frees intermediates as soon as the op that last
   * reads them has been recorded: later dispatches of the same program reuse their buffers.
   */
  tidy<T>(fn: () => T): T {
    const created = new Set<Tensor>();
    this.tidyStack.push(created);
    let result: T;
    try {
      result = fn();
    } catch (e) {
      // A failed recording must not strand what it allocated: free it all, then rethrow.
      this.tidyStack.pop();
      for (const t of created) t.dispose();
      throw e;
    }
    this.tidyStack.pop();
    const kept = new Set<Tensor>();
    const walk = (v: unknown): void => {
      if (v instanceof Tensor) kept.add(v);
      else if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) Object.values(v).forEach(walk);
    };
    walk(result);
    const outer = this.tidyStack[this.tidyStack.length - 1];
    for (const t of created) {
      if (kept.has(t)) outer?.add(t);
      else t.dispose();
    }
    return result;
  }

  /**
   * Runs fn and returns what it returned with the tensors it created (and did not free or keep()), without
   * disposing anything: a failed program frees its own outputs, never a tensor its caller passed in.
   */
  collect<T>(fn: () => T): { result: T; created: Set<Tensor> } {
    const created = new Set<Tensor>();
    this.tidyStack.push(created);
    try {
      const result = fn();
      return { result, created };
    } finally {
      this.tidyStack.pop();
      const outer = this.tidyStack[this.tidyStack.length - 1];
      if (outer) for (const t of created) outer.add(t);
    }
  }

  /** A tensor holding `data` (converted to `dtype`). */
  tensor(data: ArrayLike<number>, shape: readonly number[], dtype: DType = 'f32', name = 'tensor'): Tensor {
    const n = shapeSize(shape);
    if (data.length !== n) {
      throw new ArgumentError(`${name}: ${data.length} values do not fill shape ${shapeString(shape)} (${n} elements)`);
    }
    // Uploads are mostly weights and inputs, which live long: exact-size buffers.
    const t = this.empty(shape, dtype, name, { exact: true });
    this.write(t, data);
    return t;
  }

  zeros(shape: readonly number[], dtype: DType = 'f32', name = 'zeros'): Tensor {
    return this.tensor(new Float32Array(shapeSize(shape)), shape, dtype, name);
  }

  /**
   * Overwrites a tensor's contents. Inside a recording the copy is ordered with the recorded dispatches;
   * `dynamic` gives the contents for a replay's parameters when the recording is captured (replay.ts).
   */
  write(t: Tensor, data: ArrayLike<number>, dynamic?: (p: StepParams) => ArrayLike<number>): void {
    this.checkAlive();
    const bytesOf = (d: ArrayLike<number>): Uint8Array => {
      if (d.length !== t.size) throw new ArgumentError(`write to ${t.name}: ${d.length} values for ${t.size} elements`);
      if (t.dtype === 'f16') {
        const h = f32ArrayToF16(d);
        return padTo4(new Uint8Array(h.buffer, h.byteOffset, h.byteLength));
      }
      const f = d instanceof Float32Array ? d : Float32Array.from(d);
      return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
    };
    const bytes = bytesOf(data);
    if (dynamic && this.activeRecorder) this.activeRecorder.uploadBytes(t.buffer, bytes, 0, (p) => bytesOf(dynamic(p)));
    else this.writeBytes(t.buffer, bytes);
  }

  writeBytes(dst: GPUBuffer, bytes: Uint8Array, dstOffset = 0): void {
    this.checkAlive();
    const padded = padTo4(bytes);
    if (this.activeRecorder) this.activeRecorder.uploadBytes(dst, padded, dstOffset);
    else this.queue.writeBuffer(dst, dstOffset, padded as Uint8Array<ArrayBuffer>);
  }

  /** Reads a tensor back as f32. */
  async read(t: Tensor): Promise<Float32Array> {
    const raw = await this.readBytes(t.buffer, t.byteLength, `tensor ${t.name}`);
    if (t.dtype === 'f16') return f16ArrayToF32(new Uint16Array(raw.buffer, 0, t.size));
    return new Float32Array(raw.buffer, 0, t.size);
  }

  async readBytes(src: GPUBuffer, byteLength: number, what: string): Promise<Uint8Array> {
    this.checkAlive();
    if (this.activeRecorder) {
      throw new SiloError(`read of ${what} while program "${this.activeRecorder.name}" is recording: submit it first`);
    }
    const size = Math.ceil(byteLength / 4) * 4;
    const staging = this.device.createBuffer({ size: Math.max(4, size), usage: 0x1 /* MAP_READ */ | 0x8 /* COPY_DST */, label: `readback:${what}` });
    try {
      const enc = this.device.createCommandEncoder({ label: `readback:${what}` });
      if (size > 0) enc.copyBufferToBuffer(src, 0, staging, 0, size);
      this.device.pushErrorScope('validation');
      this.queue.submit([enc.finish()]);
      const err = await this.device.popErrorScope().catch((e: Error) => e);
      this.checkAlive();
      if (err) throw new SiloError(`read of ${what} failed: ${err.message}`);
      try {
        await staging.mapAsync(1 /* GPUMapMode.READ */);
      } catch (e) {
        this.checkAlive();
        throw new SiloError(`read of ${what} failed: ${(e as Error).message}`);
      }
      const out = new Uint8Array(size);
      out.set(new Uint8Array(staging.getMappedRange(0, size)));
      staging.unmap();
      this.checkAlive();
      return out;
    } finally {
      staging.destroy();
    }
  }

  /** Waits until all submitted work has finished. */
  async sync(): Promise<void> {
    await this.queue.onSubmittedWorkDone();
    this.checkAlive();
  }

  /** Frees the pool and the device. Later use of this Engine throws DeviceLostError saying so. */
  destroy(): void {
    this.lostReason ??= 'this Engine was destroyed (Engine.destroy()): create a new Engine';
    this.pool.trim();
    this.device.destroy();
  }
}
