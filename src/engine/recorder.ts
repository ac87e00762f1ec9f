// The recorder / graph runner: ops record dispatches into one command encoder (one compute pass, or
// one pass per dispatch when profiling with timestamp queries), uniforms go to a shared arena, and the
// whole program is submitted once. Dispatches are counted per op path (scope/op) so callers can
// assert what ran where; WebGPU errors raised by the program are turned into a KernelError naming
// the kernels.

import type { Engine } from './device.js';
import { writeUniforms, type Kernel, type UniformValues } from './kernel.js';
import { Tensor, type Storage } from './tensor.js';
import { ArgumentError, KernelError, LimitError, SiloError } from './errors.js';
import type { DynamicUniform, StepParams } from './step-value.js';
import type { UniformLayout } from './kernel.js';

/** A tensor, a raw buffer, or a range of one (naming the tensor it belongs to, so a capture can keep it alive). */
export type BufferBinding = Tensor | GPUBuffer | { buffer: GPUBuffer; offset?: number; size: number; tensor?: Tensor };

export interface DispatchArgs {
  bindings: Record<string, BufferBinding>;
  /** Values for the kernel's uniform struct (by member name). */
  uniforms?: UniformValues;
  /** Workgroup counts; each must be <= maxComputeWorkgroupsPerDimension. */
  workgroups: number | readonly [number, number?, number?];
  /** Op name for statistics and error messages (defaults to the kernel label). */
  op?: string;
  /** Uniform members that follow a replay's parameters (step-value.ts); a plain recording ignores them. */
  dynamic?: Record<string, DynamicUniform>;
}

export interface OpStats {
  dispatches: number;
  /** GPU time from timestamp queries (ns), when profiling. */
  gpuNs: number;
}

export interface ProgramReport {
  name: string;
  dispatches: number;
  ops: Record<string, OpStats>;
  /** Wall time from submit until the GPU finished (ms); only when `waitForCompletion` was requested. */
  gpuWallMs?: number;
  /** Sum of timestamp-query intervals (ms), when profiling. */
  profiledMs?: number;
  /** Peak bytes of live pooled buffers while the program was recorded (the memory plan's high-water mark). */
  peakLiveBytes: number;
}

export interface RecorderOptions {
  /** Time every dispatch with timestamp queries (one pass per dispatch). */
  profile?: boolean;
  /** Keep what a replay needs (replay.ts), recording with these parameters. */
  capture?: { params: StepParams };
}

/** A recorded command, as a replay re-encodes it. */
export type CapturedCommand =
  | { kind: 'dispatch'; pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; wg: [number, number, number] }
  | { kind: 'copy'; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; bytes: number };

/** What a capturing recorder hands to its ReplayProgram once the program ran. */
export interface Capture {
  params: StepParams;
  commands: CapturedCommand[];
  /** The uniform arena chunks (the program's now) and their CPU copies. */
  uniforms: { buffer: GPUBuffer; shadow: Uint8Array<ArrayBuffer>; used: number }[];
  /** Uniform structs with members that follow the parameters. */
  dynamicUniforms: { chunk: number; offset: number; layout: UniformLayout; values: UniformValues; dynamic: Record<string, DynamicUniform>; where: string }[];
  /** Upload staging buffers (their copies are commands); those listed in dynamicUploads are rewritten per replay. */
  stagings: GPUBuffer[];
  dynamicUploads: { staging: GPUBuffer; bytes: number; produce: (p: StepParams) => Uint8Array; where: string }[];
  /** Storages of tensors the program reads but did not create (weights, inputs), kept alive by the program. */
  external: Set<Storage>;
  /** Pooled buffers the program used and freed again: its scratch, taken out of the pool. */
  scratch: GPUBuffer[];
  dispatches: number;
}

const UNIFORM_CHUNK = 1 << 20;
/** Dispatches per timestamp query set (2 queries each; WebGPU caps a query set at 4096 queries). */
const PER_QUERY_SET = 2048;
/** Dispatches profiled per program (a whole guided step at SD-1.5 size is ~3,000-4,600); later ones are not timed. */
const MAX_PROFILED = 16 * PER_QUERY_SET;

interface UniformChunk {
  buffer: GPUBuffer;
  shadow: Uint8Array<ArrayBuffer>;
  used: number;
}
const chunkFreeLists = new WeakMap<Engine, GPUBuffer[]>();

export class Recorder {
  readonly encoder: GPUCommandEncoder;
  private pass: GPUComputePassEncoder | null = null;
  private scopes: string[] = [];
  private chunks: UniformChunk[] = [];
  private stagings: GPUBuffer[] = [];
  private finished = false;
  private dispatchCount = 0;
  readonly ops = new Map<string, OpStats>();
  private kernelsUsed: string[] = [];
  private readonly profiling: boolean;
  private querySets: GPUQuerySet[] = [];
  private queryOps: string[] = [];
  private capture: Capture | null = null;
  private endHooks: (() => void)[] = [];
  /** Storages of captured buffers the program binds (those still alive when it ends are held by it). */
  private boundStorages = new Set<Storage>();
  private captured: Capture | null = null;

  constructor(
    readonly engine: Engine,
    readonly name: string,
    readonly options: RecorderOptions = {},
  ) {
    engine.checkAlive();
    if (engine.activeRecorder) {
      throw new SiloError(`cannot start program "${name}": program "${engine.activeRecorder.name}" is still recording`);
    }
    if (options.capture && options.profile) throw new ArgumentError(`program "${name}": a captured program cannot also be profiled`);
    if (options.capture) engine.pool.beginCapture();
    engine.activeRecorder = this;
    engine.pool.resetPeak();
    if (options.capture) {
      this.capture = {
        params: { ...options.capture.params }, commands: [], uniforms: [], dynamicUniforms: [], stagings: [], dynamicUploads: [],
        external: new Set(), scratch: [], dispatches: 0,
      };
    }
    engine.device.pushErrorScope('out-of-memory');
    engine.device.pushErrorScope('validation');
    this.encoder = engine.device.createCommandEncoder({ label: name });
    this.profiling = !!options.profile && engine.hasTimestamps;
  }

  get dispatches(): number {
    return this.dispatchCount;
  }

  /** Runs `fn` with `name` pushed on the op path (e.g. "unet/down0/resnet1"). */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  get path(): string {
    return this.scopes.join('/');
  }

  /** Dispatch count of ops whose path starts with `prefix` (all when omitted). */
  countDispatches(prefix = ''): number {
    let n = 0;
    for (const [k, v] of this.ops) if (k.startsWith(prefix)) n += v.dispatches;
    return n;
  }

  private ensurePass(): GPUComputePassEncoder {
    if (!this.pass) this.pass = this.encoder.beginComputePass({ label: this.name });
    return this.pass;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  private uniformSlot(bytes: number): { chunk: UniformChunk; offset: number } {
    const align = this.engine.limits.minUniformBufferOffsetAlignment;
    let chunk = this.chunks[this.chunks.length - 1];
    let offset = chunk ? Math.ceil(chunk.used / align) * align : 0;
    if (!chunk || offset + bytes > UNIFORM_CHUNK) {
      const free = chunkFreeLists.get(this.engine) ?? [];
      chunkFreeLists.set(this.engine, free);
      const buffer =
        free.pop() ??
        this.engine.device.createBuffer({ size: UNIFORM_CHUNK, usage: 0x40 /* UNIFORM */ | 0x8 /* COPY_DST */, label: 'uniform-arena' });
      chunk = { buffer, shadow: new Uint8Array(UNIFORM_CHUNK), used: 0 };
      this.chunks.push(chunk);
      offset = 0;
    }
    chunk.used = offset + bytes;
    return { chunk, offset };
  }

  dispatch(kernel: Kernel, args: DispatchArgs): void {
    if (this.finished) throw new SiloError(`program "${this.name}" was already submitted`);
    const op = args.op ?? kernel.label;
    const where = `${this.path ? this.path + '/' : ''}${op} (kernel ${kernel.label})`;
    const limits = this.engine.limits;
    const wg = typeof args.workgroups === 'number' ? [args.workgroups, 1, 1] : [args.workgroups[0], args.workgroups[1] ?? 1, args.workgroups[2] ?? 1];
    for (const n of wg) {
      if (!Number.isInteger(n) || n < 0) throw new ArgumentError(`${where}: invalid workgroup count ${wg.join('x')}`);
      if (n > limits.maxComputeWorkgroupsPerDimension) {
        throw new LimitError(`${where}: ${n} workgroups in one dimension exceeds the adapter's ${limits.maxComputeWorkgroupsPerDimension}`);
      }
    }
    const entries: GPUBindGroupEntry[] = [];
    const writable = new Set<GPUBuffer>();
    const readonly = new Map<GPUBuffer, string>();
    for (const b of kernel.bindings) {
      if (b.kind === 'uniform') {
        const layout = b.uniform!;
        const { chunk, offset } = this.uniformSlot(layout.size);
        writeUniforms(layout, args.uniforms ?? {}, new DataView(chunk.shadow.buffer), offset, where);
        if (args.dynamic && this.capture) this.captureDynamicUniform(chunk, offset, layout, args.uniforms ?? {}, args.dynamic, where);
        entries.push({ binding: b.binding, resource: { buffer: chunk.buffer, offset, size: layout.size } });
        continue;
      }
      const v = args.bindings[b.name];
      if (!v) throw new ArgumentError(`${where}: binding "${b.name}" was not given`);
      let buffer: GPUBuffer;
      let offset = 0;
      let size: number;
      let owner: Tensor | undefined;
      if (v instanceof Tensor) {
        buffer = v.buffer;
        size = Math.max(4, Math.ceil(v.byteLength / 4) * 4);
        owner = v;
      } else if ('buffer' in v && !('mapState' in v)) {
        buffer = v.buffer;
        offset = v.offset ?? 0;
        size = v.size;
        owner = v.tensor;
      } else {
        buffer = v as GPUBuffer;
        size = buffer.size;
      }
      if (this.capture) this.keepForReplay(buffer, owner, `${where}: binding "${b.name}"`);
      if (size > limits.maxStorageBufferBindingSize) {
        throw new LimitError(
          `${where}: binding "${b.name}" is ${size} bytes, over the adapter's maxStorageBufferBindingSize ${limits.maxStorageBufferBindingSize}`,
          { limit: 'maxStorageBufferBindingSize', needed: size, available: limits.maxStorageBufferBindingSize },
        );
      }
      if (b.kind === 'storage') {
        if (writable.has(buffer) || readonly.has(buffer)) {
          throw new ArgumentError(`${where}: output "${b.name}" aliases another binding of the same dispatch`);
        }
        writable.add(buffer);
      } else {
        if (writable.has(buffer)) throw new ArgumentError(`${where}: input "${b.name}" aliases an output binding`);
        readonly.set(buffer, b.name);
      }
      entries.push({ binding: b.binding, resource: { buffer, offset, size } });
    }
    for (const k of Object.keys(args.bindings)) {
      if (!kernel.bindings.some((b) => b.name === k)) throw new ArgumentError(`${where}: kernel has no binding "${k}"`);
    }
    if (args.dynamic && !kernel.bindings.some((b) => b.kind === 'uniform')) {
      throw new ArgumentError(`${where}: dynamic uniforms given to a kernel without uniforms`);
    }
    const bindGroup = this.engine.device.createBindGroup({ layout: kernel.layout, entries, label: where });
    let pass: GPUComputePassEncoder;
    const key = this.path ? `${this.path}/${op}` : op;
    if (this.profiling && this.queryOps.length < MAX_PROFILED) {
      this.endPass();
      const i = this.queryOps.length % PER_QUERY_SET;
      if (i === 0) {
        const label = `${this.name}:timestamps${this.querySets.length}`;
        this.querySets.push(this.engine.device.createQuerySet({ type: 'timestamp', count: 2 * PER_QUERY_SET, label }));
      }
      this.queryOps.push(key);
      pass = this.encoder.beginComputePass({
        label: where,
        timestampWrites: { querySet: this.querySets[this.querySets.length - 1]!, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
      });
      this.pass = pass;
    } else {
      pass = this.ensurePass();
    }
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, bindGroup);
    if (wg[0]! > 0 && wg[1]! > 0 && wg[2]! > 0) {
      pass.dispatchWorkgroups(wg[0]!, wg[1]!, wg[2]!);
      this.capture?.commands.push({ kind: 'dispatch', pipeline: kernel.pipeline, bindGroup, wg: wg as [number, number, number] });
    }
    if (this.profiling) this.endPass();
    this.dispatchCount++;
    this.kernelsUsed.push(kernel.label);
    const s = this.ops.get(key);
    if (s) s.dispatches++;
    else this.ops.set(key, { dispatches: 1, gpuNs: 0 });
  }

  /** Buffer-to-buffer copy ordered with the recorded dispatches. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.endPass();
    if (this.capture) {
      if (!this.stagings.includes(src)) this.keepForReplay(src, undefined, `${this.name}: copy source`);
      this.keepForReplay(dst, undefined, `${this.name}: copy destination`);
      this.capture.commands.push({ kind: 'copy', src, srcOffset, dst, dstOffset, bytes });
    }
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /**
   * Upload ordered with the recorded dispatches (queue.writeBuffer would run before the whole program).
   * `dynamic` gives the bytes for a replay's parameters (a captured program rewrites them per replay).
   */
  uploadBytes(dst: GPUBuffer, bytes: Uint8Array, dstOffset: number, dynamic?: (p: StepParams) => Uint8Array): void {
    const staging = this.engine.device.createBuffer({
      size: Math.max(4, bytes.byteLength),
      usage: 0x4 /* COPY_SRC */ | (this.capture ? 0x8 /* COPY_DST: rewritten per replay */ : 0),
      mappedAtCreation: true,
      label: `${this.name}:upload`,
    });
    new Uint8Array(staging.getMappedRange()).set(bytes);
    staging.unmap();
    this.stagings.push(staging);
    if (dynamic && this.capture) {
      const where = `${this.path || this.name}: dynamic upload`;
      const again = dynamic(this.capture.params);
      if (again.byteLength !== bytes.byteLength || again.some((x, i) => x !== bytes[i])) {
        throw new SiloError(`${where}: its bytes at the capture's parameters differ from the ones recorded`);
      }
      this.capture.dynamicUploads.push({ staging, bytes: bytes.byteLength, produce: dynamic, where });
    }
    this.copy(staging, 0, dst, dstOffset, bytes.byteLength);
  }

  /**
   * A captured program binds the same buffers on every replay: a buffer it did not allocate must belong
   * to a tensor whose storage it can hold (retained until the program is disposed).
   */
  private keepForReplay(buffer: GPUBuffer, owner: Tensor | undefined, what: string): void {
    const cap = this.capture!;
    if (this.engine.pool.isCaptured(buffer)) {
      // The program's own buffer: scratch if it is freed by the end, else held then (release()).
      if (owner) this.boundStorages.add(owner.storage);
      return;
    }
    if (!owner) throw new SiloError(`${what}: a captured program cannot keep this buffer alive (it belongs to no tensor the program can hold)`);
    if (!cap.external.has(owner.storage)) {
      owner.storage.retain();
      cap.external.add(owner.storage);
    }
  }

  private captureDynamicUniform(chunk: UniformChunk, offset: number, layout: UniformLayout, values: UniformValues, dynamic: Record<string, DynamicUniform>, where: string): void {
    const cap = this.capture!;
    const again: Record<string, number | readonly number[]> = { ...values };
    for (const [k, f] of Object.entries(dynamic)) {
      if (!(k in values)) throw new SiloError(`${where}: dynamic uniform ${k} has no recorded value`);
      again[k] = f(cap.params);
    }
    const check = new Uint8Array(layout.size);
    writeUniforms(layout, again, new DataView(check.buffer), 0, where);
    const recorded = chunk.shadow.subarray(offset, offset + layout.size);
    if (check.some((x, i) => x !== recorded[i])) {
      throw new SiloError(`${where}: dynamic uniforms ${Object.keys(dynamic).join(', ')} at the capture's parameters differ from the values recorded`);
    }
    cap.dynamicUniforms.push({ chunk: this.chunks.indexOf(chunk), offset, layout, values: { ...values }, dynamic, where });
  }

  /** The capture of a submitted capturing recording (once). */
  takeCapture(): Capture {
    const c = this.captured;
    if (!c) throw new SiloError(`program "${this.name}": no capture to take (not capturing, not submitted, or already taken)`);
    this.captured = null;
    return c;
  }

  /** Runs `fn` when the recording ends (submitted or abandoned), before its scratch is settled. */
  onEnd(fn: () => void): void {
    this.endHooks.push(fn);
  }

  private release(): void {
    this.endPass();
    const hooks = this.endHooks.splice(0);
    for (const fn of hooks) fn();
    if (this.engine.activeRecorder === this) this.engine.activeRecorder = null;
    const free = chunkFreeLists.get(this.engine) ?? [];
    chunkFreeLists.set(this.engine, free);
    // A capture keeps its chunks (a replay binds them again) and takes its scratch out of the pool now,
    // before the submit's awaits let other code allocate.
    if (this.capture) {
      this.capture.uniforms = this.chunks;
      this.capture.scratch = this.engine.pool.endCapture();
      // Buffers it allocated that outlive the recording (results, constants a model made lazily): held.
      for (const st of this.boundStorages) {
        if (st.refs > 0 && !this.capture.external.has(st)) {
          st.retain();
          this.capture.external.add(st);
        }
      }
      this.boundStorages.clear();
    } else for (const c of this.chunks) free.push(c.buffer);
    this.chunks = [];
  }

  /** Ends a capture: on success its GPU objects pass to `captured`, on failure they are freed. */
  private closeCapture(ok: boolean): void {
    const cap = this.capture;
    if (!cap) return;
    this.capture = null;
    if (ok) {
      cap.dispatches = this.dispatchCount;
      this.captured = cap;
      return;
    }
    this.engine.pool.restore(cap.scratch);
    for (const s of cap.external) s.release();
    const free = chunkFreeLists.get(this.engine) ?? [];
    for (const c of cap.uniforms) free.push(c.buffer);
  }

  /** Abandons the recording (after an exception while recording). */
  abort(): void {
    if (this.finished) return;
    this.finished = true;
    this.release();
    this.closeCapture(false);
    void this.engine.device.popErrorScope();
    void this.engine.device.popErrorScope();
    for (const s of this.stagings) s.destroy();
    for (const q of this.querySets) q.destroy();
  }

  /**
   * Submits the program once. Resolves after WebGPU has validated it; with `wait` (or profiling) also
   * after the GPU has finished.
   */
  async submit(opts: { wait?: boolean } = {}): Promise<ProgramReport> {
    if (this.finished) throw new SiloError(`program "${this.name}" was already submitted`);
    this.finished = true;
    this.endPass();
    let resolveBuf: GPUBuffer | null = null;
    let readBuf: GPUBuffer | null = null;
    const nq = this.queryOps.length;
    if (nq > 0) {
      resolveBuf = this.engine.device.createBuffer({ size: nq * 16, usage: 0x200 /* QUERY_RESOLVE */ | 0x4 });
      readBuf = this.engine.device.createBuffer({ size: nq * 16, usage: 0x1 | 0x8 });
      // Each set resolves to its own 32 KiB slice (a multiple of the 256-byte resolve alignment).
      this.querySets.forEach((set, k) => {
        const used = Math.min(PER_QUERY_SET, nq - k * PER_QUERY_SET);
        this.encoder.resolveQuerySet(set, 0, 2 * used, resolveBuf!, k * PER_QUERY_SET * 16);
      });
      this.encoder.copyBufferToBuffer(resolveBuf, 0, readBuf, 0, nq * 16);
    }
    for (const c of this.chunks) this.engine.queue.writeBuffer(c.buffer, 0, c.shadow, 0, Math.ceil(c.used / 4) * 4);
    const cmd = this.encoder.finish({ label: this.name });
    const t0 = performance.now();
    this.engine.queue.submit([cmd]);
    this.engine.lastSubmitted = { program: this.name, kernels: [...new Set(this.kernelsUsed)] };
    if (this.capture) this.capture.stagings = this.stagings;
    this.release();
    // A lost device may reject these or report nothing: either way the loss is the error to report.
    const validation = await this.engine.device.popErrorScope().catch(() => null);
    const oom = await this.engine.device.popErrorScope().catch(() => null);
    const err = validation ?? oom;
    const report: ProgramReport = {
      name: this.name,
      dispatches: this.dispatchCount,
      ops: Object.fromEntries(this.ops),
      peakLiveBytes: this.engine.pool.stats.peakLiveBytes,
    };
    try {
      this.engine.checkAlive();
      if (err) {
        const kernels = [...new Set(this.kernelsUsed)];
        const named = kernels.filter((k) => err.message.includes(k));
        throw new KernelError(
          `program "${this.name}" failed (${validation ? 'validation' : 'out of memory'}): ${err.message}` +
            (named.length ? '' : `; kernels in this program: ${kernels.join(', ')}`),
          named.length ? named : kernels,
        );
      }
      if (opts.wait || readBuf) {
        await this.engine.queue.onSubmittedWorkDone();
        this.engine.checkAlive();
        report.gpuWallMs = performance.now() - t0;
      }
      if (readBuf) {
        await readBuf.mapAsync(1);
        const ts = new BigUint64Array(readBuf.getMappedRange().slice(0));
        readBuf.unmap();
        let total = 0;
        for (let i = 0; i < nq; i++) {
          const dt = Number(ts[2 * i + 1]! - ts[2 * i]!);
          if (dt > 0 && dt < 1e12) {
            this.ops.get(this.queryOps[i]!)!.gpuNs += dt;
            total += dt;
          }
        }
        report.ops = Object.fromEntries(this.ops);
        report.profiledMs = total / 1e6;
      }
      this.closeCapture(true);
    } finally {
      // A failed capture gives everything back; a successful one keeps its stagings for the replays.
      this.closeCapture(false);
      if (!this.captured) for (const s of this.stagings) s.destroy();
      for (const q of this.querySets) q.destroy();
      resolveBuf?.destroy();
      readBuf?.destroy();
    }
    return report;
  }
}

/** Records `fn` as one program, submits it, and returns fn's result with the program report. */
export async function runProgram<T>(
  engine: Engine,
  name: string,
  fn: (rec: Recorder) => T,
  options: RecorderOptions & { wait?: boolean } = {},
): Promise<{ result: T; report: ProgramReport }> {
  const rec = new Recorder(engine, name, options);
  let run: { result: T; created: Set<Tensor> };
  try {
    run = engine.collect(() => fn(rec));
  } catch (e) {
    rec.abort();
    throw e;
  }
  try {
    const report = await rec.submit({ wait: options.wait });
    return { result: run.result, report };
  } catch (e) {
    // The program failed (a kernel error, a lost device): the caller never sees its outputs, so free them
    // (only tensors this program created: never one the caller passed in and returned through it).
    disposeCreated(run.result, run.created);
    throw e;
  }
}

/** Disposes the tensors of a program's result (a Tensor, or arrays / plain objects of them) that it created. */
function disposeCreated(v: unknown, created: Set<Tensor>): void {
  if (v instanceof Tensor) {
    if (created.has(v)) v.dispose();
  } else if (Array.isArray(v)) v.forEach((x) => disposeCreated(x, created));
  else if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) Object.values(v).forEach((x) => disposeCreated(x, created));
}
