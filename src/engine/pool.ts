// Bucketed GPU buffer pool. Sizes round up to 4 steps per octave (<= 25% waste), so buffers freed by
// one op are reused by later ops of similar size; long-lived buffers (weights, uploads) can ask for their
// exact size instead, since a model's ~12 % average rounding would be held for its whole life. Tracks live and peak bytes for memory reports.

import { LimitError, SiloError } from './errors.js';

export interface PoolStats {
  liveBytes: number;
  peakLiveBytes: number;
  allocatedBytes: number;
  peakAllocatedBytes: number;
  allocations: number;
  reuses: number;
}

export function bucketSize(bytes: number): number {
  if (bytes <= 256) return 256;
  const octave = 2 ** Math.floor(Math.log2(bytes));
  const step = octave / 4;
  return Math.ceil(bytes / step) * step;
}

export class BufferPool {
  private free = new Map<number, GPUBuffer[]>();
  /** Buffers handed out while a program is being captured (see beginCapture). */
  private captured: Set<GPUBuffer> | null = null;
  readonly stats: PoolStats = {
    liveBytes: 0,
    peakLiveBytes: 0,
    allocatedBytes: 0,
    peakAllocatedBytes: 0,
    allocations: 0,
    reuses: 0,
  };

  constructor(
    private device: GPUDevice,
    private maxBufferSize: number,
  ) {}

  static readonly usage = 0x80 /* STORAGE */ | 0x4 /* COPY_SRC */ | 0x8; /* COPY_DST */

  acquire(bytes: number, what: string, exact = false): GPUBuffer {
    let size = exact ? Math.ceil(Math.max(4, bytes) / 4) * 4 : bucketSize(Math.max(4, bytes));
    if (size > this.maxBufferSize) {
      if (bytes > this.maxBufferSize) {
        throw new LimitError(
          `${what}: needs a buffer of ${bytes} bytes but the adapter's maxBufferSize is ${this.maxBufferSize}`,
          { limit: 'maxBufferSize', needed: bytes, available: this.maxBufferSize },
        );
      }
      size = Math.ceil(bytes / 4) * 4;
    }
    const list = this.free.get(size);
    let buf = list?.pop();
    if (buf) this.stats.reuses++;
    else {
      buf = this.device.createBuffer({ size, usage: BufferPool.usage, label: `pool:${size}` });
      this.stats.allocations++;
      this.stats.allocatedBytes += size;
      this.stats.peakAllocatedBytes = Math.max(this.stats.peakAllocatedBytes, this.stats.allocatedBytes);
    }
    this.stats.liveBytes += size;
    this.stats.peakLiveBytes = Math.max(this.stats.peakLiveBytes, this.stats.liveBytes);
    this.captured?.add(buf);
    return buf;
  }

  /**
   * Starts noting the buffers handed out: a captured program replays into the same buffers, so those
   * its recording freed again must leave the pool with it (endCapture).
   */
  beginCapture(): void {
    if (this.captured) throw new SiloError('buffer pool: a capture is already open');
    this.captured = new Set();
  }

  /** Whether `buf` was handed out since beginCapture. */
  isCaptured(buf: GPUBuffer): boolean {
    return this.captured?.has(buf) ?? false;
  }

  /** Ends the capture and takes the captured buffers that are free again out of the pool (the program's scratch). */
  endCapture(): GPUBuffer[] {
    const captured = this.captured;
    this.captured = null;
    if (!captured) return [];
    const pinned: GPUBuffer[] = [];
    for (const [size, list] of this.free) {
      const keep = list.filter((b) => !captured.has(b));
      if (keep.length !== list.length) {
        for (const b of list) if (captured.has(b)) pinned.push(b);
        this.free.set(size, keep);
      }
    }
    return pinned;
  }

  /** Gives a disposed program's scratch back (buffers endCapture took out). */
  restore(buffers: readonly GPUBuffer[]): void {
    for (const b of buffers) {
      let list = this.free.get(b.size);
      if (!list) this.free.set(b.size, (list = []));
      list.push(b);
    }
  }

  release(buf: GPUBuffer): void {
    const size = buf.size;
    this.stats.liveBytes -= size;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buf);
  }

  /** Destroys every free buffer (returns their memory to the driver). */
  trim(): void {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.stats.allocatedBytes -= b.size;
        // Freeing must not throw, even for buffers of a device that was lost.
        try {
          b.destroy();
        } catch {
          /* the device is gone and its memory with it */
        }
      }
    }
    this.free.clear();
  }

  resetPeak(): void {
    this.stats.peakLiveBytes = this.stats.liveBytes;
    this.stats.peakAllocatedBytes = this.stats.allocatedBytes;
  }
}
