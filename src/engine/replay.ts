// Programs recorded once and replayed. A sampler step records ~2,800 dispatches; recording them costs
// the JavaScript of every op and a bind group each (~50 us a dispatch in Node), more than the step's
// GPU work on a real GPU. captureProgram records the step once with the replay parameters it was given
// (step-value.ts) and keeps the command list, the bind groups and the buffers they bind: the memory
// plan the pool made while recording (buffers freed and reused within the step) becomes the program's
// own scratch, taken out of the pool, and the tensors it reads without creating them (weights, inputs)
// are held until it is disposed. A replay writes the values that follow its parameters (uniform
// members, uploads) into place, copies new inputs in, and re-encodes the same commands.

import type { Engine } from './device.js';
import { writeUniforms } from './kernel.js';
import { Recorder, type Capture, type ProgramReport, type RecorderOptions } from './recorder.js';
import { Tensor } from './tensor.js';
import { ArgumentError, KernelError, SiloError } from './errors.js';
import { shapeString } from './dtype.js';
import type { StepParams } from './step-value.js';

export interface ReplayReport {
  name: string;
  dispatches: number;
  /** JavaScript time to write the values, encode the commands and submit them (ms). */
  encodeMs: number;
  /** Of which submitting (ms): what remains on the critical path when the replay was prepared ahead. */
  submitMs: number;
  /** Wall time from submit until the GPU finished (ms); only when `wait` was requested. */
  gpuWallMs?: number;
}

export interface ReplayOptions {
  /** Copies into the program's input tensors before the replay: [captured input, new content]. */
  inputs?: readonly (readonly [Tensor, Tensor])[];
  /** Copies after the replay (e.g. the new latent into the input for the next step): [from, to]. */
  after?: readonly (readonly [Tensor, Tensor])[];
  /** Wait until the GPU has finished. */
  wait?: boolean;
}

/** Every tensor in a result (a Tensor, or arrays / plain objects of them). */
function tensorsOf(v: unknown, out: Tensor[] = []): Tensor[] {
  if (v instanceof Tensor) out.push(v);
  else if (Array.isArray(v)) v.forEach((x) => tensorsOf(x, out));
  else if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) Object.values(v).forEach((x) => tensorsOf(x, out));
  return out;
}

export class ReplayProgram<T> {
  private disposed = false;

  constructor(
    readonly engine: Engine,
    readonly name: string,
    /** The captured result: the same tensors after every replay, owned by the program. */
    readonly result: T,
    private readonly cap: Capture,
  ) {
    // The result stays the program's even if a caller disposes its tensors: the replays write into them.
    for (const t of tensorsOf(result)) t.storage.retain();
  }

  get dispatches(): number {
    return this.cap.dispatches;
  }

  /** Bytes the program holds beyond its inputs and result: scratch buffers, uniforms and upload stagings. */
  get bytes(): number {
    let n = 0;
    for (const b of this.cap.scratch) n += b.size;
    for (const c of this.cap.uniforms) n += c.buffer.size;
    for (const s of this.cap.stagings) n += s.size;
    return n;
  }

  private copyCheck(a: Tensor, b: Tensor, what: string): void {
    if (a.dtype !== b.dtype || a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
      throw new ArgumentError(`replay of "${this.name}": ${what} ${b.name} is ${b.dtype} ${shapeString(b.shape)}, the program's ${a.name} is ${a.dtype} ${shapeString(a.shape)}`);
    }
  }

  /** Runs the program again with `params` (every dynamic value recomputed from them). */
  async replay(params: StepParams, opts: ReplayOptions = {}): Promise<ReplayReport> {
    return this.prepare(params, opts).submit({ wait: opts.wait });
  }

  /**
   * Writes the values for `params` and encodes the replay without submitting it, so a caller can encode
   * step k + 1 while the GPU runs step k (the writes are queued behind everything submitted so far).
   * At most one prepared replay may wait: its values would be overwritten by the next one's.
   */
  prepare(params: StepParams, opts: Omit<ReplayOptions, 'wait'> = {}): PreparedReplay {
    if (this.disposed) throw new SiloError(`replay of "${this.name}": the program was disposed`);
    if (this.pending) throw new SiloError(`replay of "${this.name}": a prepared replay has not been submitted or discarded`);
    const engine = this.engine;
    engine.checkAlive();
    if (engine.activeRecorder) throw new SiloError(`replay of "${this.name}": program "${engine.activeRecorder.name}" is still recording`);
    const inputs = opts.inputs ?? [];
    const after = opts.after ?? [];
    inputs.forEach(([dst, src]) => this.copyCheck(dst, src, 'input'));
    after.forEach(([src, dst]) => this.copyCheck(src, dst, 'output'));
    const t0 = performance.now();
    const cap = this.cap;
    // Values that follow the parameters (computed first: a bad parameter throws before anything is written).
    const uploads = cap.dynamicUploads.map((u) => {
      const bytes = u.produce(params);
      if (bytes.byteLength !== u.bytes) throw new SiloError(`replay of "${this.name}": ${u.where} made ${bytes.byteLength} bytes, not ${u.bytes}`);
      return bytes;
    });
    for (const d of cap.dynamicUniforms) {
      const values: Record<string, number | readonly number[]> = { ...d.values };
      for (const [k, f] of Object.entries(d.dynamic)) values[k] = f(params);
      writeUniforms(d.layout, values, new DataView(cap.uniforms[d.chunk]!.shadow.buffer), d.offset, d.where);
    }
    const q = engine.queue;
    for (const d of cap.dynamicUniforms) {
      const c = cap.uniforms[d.chunk]!;
      q.writeBuffer(c.buffer, d.offset, c.shadow, d.offset, d.layout.size);
    }
    cap.dynamicUploads.forEach((u, i) => q.writeBuffer(u.staging, 0, uploads[i]! as Uint8Array<ArrayBuffer>));

    const device = engine.device;
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    const enc = device.createCommandEncoder({ label: `${this.name}:replay` });
    for (const [dst, src] of inputs) enc.copyBufferToBuffer(src.buffer, 0, dst.buffer, 0, Math.ceil(dst.byteLength / 4) * 4);
    let pass: GPUComputePassEncoder | null = null;
    let pipeline: GPUComputePipeline | null = null;
    for (const c of cap.commands) {
      if (c.kind === 'dispatch') {
        if (!pass) {
          pass = enc.beginComputePass({ label: this.name });
          pipeline = null;
        }
        if (c.pipeline !== pipeline) pass.setPipeline((pipeline = c.pipeline));
        pass.setBindGroup(0, c.bindGroup);
        pass.dispatchWorkgroups(c.wg[0], c.wg[1], c.wg[2]);
      } else {
        if (pass) {
          pass.end();
          pass = null;
        }
        enc.copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.bytes);
      }
    }
    pass?.end();
    for (const [src, dst] of after) enc.copyBufferToBuffer(src.buffer, 0, dst.buffer, 0, Math.ceil(src.byteLength / 4) * 4);
    const cmd = enc.finish();
    const scopes = [device.popErrorScope().catch(() => null), device.popErrorScope().catch(() => null)];
    const prepared = new PreparedReplay(this, cmd, scopes, performance.now() - t0, () => {
      if (this.pending === prepared) this.pending = null;
    });
    this.pending = prepared;
    return prepared;
  }

  private pending: PreparedReplay | null = null;

  /** Frees the program: its scratch goes back to the pool, its inputs and result are let go. */
  dispose(): void {
    if (this.disposed) return;
    this.pending?.discard();
    this.disposed = true;
    const cap = this.cap;
    this.engine.pool.restore(cap.scratch);
    for (const s of cap.external) s.release();
    for (const t of tensorsOf(this.result)) {
      t.storage.release();
      t.dispose();
    }
    for (const s of cap.stagings) s.destroy();
    for (const c of cap.uniforms) c.buffer.destroy();
    cap.commands.length = 0;
  }
}

/** A replay encoded with its values written, waiting to be submitted (ReplayProgram.prepare). */
export class PreparedReplay {
  private done = false;

  constructor(
    private readonly program: ReplayProgram<unknown>,
    private readonly cmd: GPUCommandBuffer,
    private readonly encodeScopes: Promise<GPUError | null>[],
    /** JavaScript time spent preparing it (ms). */
    readonly encodeMs: number,
    private readonly settle: () => void,
  ) {}

  /** Submits the replay; resolves once WebGPU validated it (with `wait`, once the GPU finished). */
  async submit(opts: { wait?: boolean } = {}): Promise<ReplayReport> {
    const p = this.program;
    if (this.done) throw new SiloError(`replay of "${p.name}": this prepared replay was already submitted or discarded`);
    this.done = true;
    this.settle();
    const engine = p.engine;
    engine.checkAlive();
    const device = engine.device;
    const t0 = performance.now();
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    engine.queue.submit([this.cmd]);
    const scopes = [device.popErrorScope().catch(() => null), device.popErrorScope().catch(() => null)];
    const submitMs = performance.now() - t0;
    engine.lastSubmitted = { program: `${p.name} (replay)`, kernels: [] };
    const errors = await Promise.all([...this.encodeScopes, ...scopes]);
    engine.checkAlive();
    const err = errors.find((e) => e);
    if (err) throw new KernelError(`replay of "${p.name}" failed: ${err.message}`, []);
    const report: ReplayReport = { name: p.name, dispatches: p.dispatches, encodeMs: this.encodeMs + submitMs, submitMs };
    if (opts.wait) {
      const t1 = performance.now();
      await engine.queue.onSubmittedWorkDone();
      engine.checkAlive();
      report.gpuWallMs = performance.now() - t1;
    }
    return report;
  }

  /** Drops the replay unsubmitted (the values it wrote are rewritten by the next one). */
  discard(): void {
    if (this.done) return;
    this.done = true;
    this.settle();
  }
}

/**
 * Records `fn` once as a replayable program with the replay parameters `params` and runs it (its result
 * is valid now, and again after each replay). Tensors `fn` reads without creating them stay alive while
 * the program lives; to feed new inputs, pass them to replay() as copies into those tensors.
 */
export async function captureProgram<T>(
  engine: Engine,
  name: string,
  params: StepParams,
  fn: (rec: Recorder) => T,
  options: Omit<RecorderOptions, 'capture' | 'profile'> & { wait?: boolean } = {},
): Promise<{ program: ReplayProgram<T>; report: ProgramReport }> {
  const rec = new Recorder(engine, name, { ...options, capture: { params } });
  let run: { result: T; created: Set<Tensor> };
  try {
    // tidy: a recording that throws (a dynamic value that disagrees) frees what it allocated.
    run = engine.collect(() => engine.tidy(() => fn(rec)));
  } catch (e) {
    rec.abort();
    throw e;
  }
  let report: ProgramReport;
  try {
    report = await rec.submit({ wait: options.wait });
  } catch (e) {
    for (const t of tensorsOf(run.result)) if (run.created.has(t)) t.dispose();
    throw e;
  }
  return { program: new ReplayProgram(engine, name, run.result, rec.takeCapture()), report };
}
