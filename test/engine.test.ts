// The engine core: adapter report, kernel cache and reflection, recorder (dispatch counts, ordering of
// uploads, profiling), clear errors (validation, aliasing, limits, device loss), buffer pool reuse.
import { describe, it, expect, beforeAll } from 'vitest';
import { Engine } from '../src/engine/device.js';
import { Recorder, runProgram } from '../src/engine/recorder.js';
import { KernelError, LimitError, ArgumentError, DeviceLostError, SiloError } from '../src/engine/errors.js';
import * as ew from '../src/engine/ops/elementwise.js';
import { bucketSize } from '../src/engine/pool.js';
import { f32ToF16Bits, f16BitsToF32, f32ToBf16Bits, bf16BitsToF32 } from '../src/engine/dtype.js';
import { getEngine } from './helpers/engine.js';

let engine: Engine;
beforeAll(async () => {
  engine = await getEngine();
});

const COPY_WGSL = `
struct P { n: u32, factor: f32 }
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x < p.n) { dst[gid.x] = src[gid.x] * p.factor; }
}`;

describe('adapter and device', () => {
  it('reports the adapter, flags CPU adapters as software, and requests the adapter limits', () => {
    expect(engine.info.software).toBe(true); // these CI machines only have lavapipe / SwiftShader
    expect(engine.summary()).toMatch(/SOFTWARE adapter/);
    expect(engine.limits.maxStorageBufferBindingSize).toBe(engine.adapter.limits.maxStorageBufferBindingSize);
    expect(engine.limits.maxBufferSize).toBe(engine.adapter.limits.maxBufferSize);
    expect(engine.limits.maxComputeInvocationsPerWorkgroup).toBe(engine.adapter.limits.maxComputeInvocationsPerWorkgroup);
    expect(engine.hasF16).toBe(engine.adapter.features.has('shader-f16'));
    expect(engine.hasTimestamps).toBe(engine.adapter.features.has('timestamp-query'));
  });
});

describe('workgroup reductions with subgroups', () => {
  it('are off by default on CPU adapters, can be switched on where the adapter can, and change the kernels', async () => {
    expect(engine.canSubgroupReduce).toBe(engine.hasSubgroups && engine.wgslFeatures.has('subgroup_id'));
    expect(engine.subgroupReductions).toBe(false); // CPU adapters: barriers are cheap next to their subgroup emulation
    // Both CI adapters (lavapipe, SwiftShader) offer subgroups and subgroup_id; an adapter without them fails here loudly.
    expect(engine.canSubgroupReduce).toBe(true);
    const e2 = await Engine.create({ subgroupReductions: true });
    try {
      expect(e2.subgroupReductions).toBe(true);
      const x = e2.tensor(new Float32Array(3 * 300).map((_, i) => Math.sin(i)), [3, 300], 'f32', 'x');
      const { softmax } = await import('../src/engine/ops/softmax.js');
      const { result } = await runProgram(e2, 'softmax', (rec) => softmax(rec, x, { layout: 'group' }));
      expect(e2.kernels.keys().filter((k) => k.startsWith('softmax/softmax_group:f32/sg['))).toHaveLength(1);
      const out = await result.read();
      for (let r = 0; r < 3; r++) expect(out.slice(r * 300, (r + 1) * 300).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
      e2.subgroupReductions = false;
      expect(e2.subgroupReductions).toBe(false);
    } finally {
      e2.destroy();
    }
  });

  it('are refused by name where the adapter has no subgroups, and so is a kernel that uses them', async () => {
    await expect(Engine.create({ disableFeatures: ['subgroups'], subgroupReductions: true })).rejects.toThrow(
      /subgroupReductions: this adapter cannot reduce with subgroups \(no subgroups feature\)/,
    );
    const e2 = await Engine.create({ disableFeatures: ['subgroups'] });
    try {
      expect(e2.canSubgroupReduce).toBe(false);
      expect(() => {
        e2.subgroupReductions = true;
      }).toThrow(LimitError);
      expect(e2.subgroupReductions).toBe(false);
      expect(() => e2.kernel({ family: 'test-copy', source: COPY_WGSL, entry: 'main', consts: { WG: 64 }, subgroups: true })).toThrow(
        /test-copy\/main:f32\/sg.*subgroup operations need the subgroups feature/,
      );
    } finally {
      e2.destroy();
    }
  });
});

describe('kernels and reflection', () => {
  it('caches pipelines by specialisation and writes uniforms by member name', async () => {
    const spec = { family: 'test-copy', source: COPY_WGSL, entry: 'main', consts: { WG: 64 } };
    const k1 = engine.kernel(spec);
    expect(engine.kernel({ ...spec })).toBe(k1);
    expect(engine.kernel({ ...spec, consts: { WG: 32 } })).not.toBe(k1);
    expect(k1.workgroupSize).toEqual([64, 1, 1]);
    expect(k1.bindings.map((b) => [b.name, b.kind])).toEqual([
      ['src', 'read-only-storage'],
      ['dst', 'storage'],
      ['p', 'uniform'],
    ]);
    const x = engine.tensor([1, 2, 3, 4, 5], [5]);
    const y = engine.empty([5]);
    await runProgram(engine, 'copy', (rec) =>
      rec.dispatch(k1, { bindings: { src: x, dst: y }, uniforms: { n: 5, factor: 2.5 }, workgroups: 1 }),
    );
    expect(Array.from(await y.read())).toEqual([2.5, 5, 7.5, 10, 12.5]);
  });

  it('names the member when a uniform is missing, unknown or of the wrong type', () => {
    const k = engine.kernel({ family: 'test-copy', source: COPY_WGSL, entry: 'main', consts: { WG: 64 } });
    const x = engine.zeros([4]);
    const y = engine.empty([4]);
    const rec = new Recorder(engine, 'bad-uniforms');
    try {
      expect(() => rec.dispatch(k, { bindings: { src: x, dst: y }, uniforms: { n: 4 }, workgroups: 1 })).toThrow(/P\.factor was not given/);
      expect(() => rec.dispatch(k, { bindings: { src: x, dst: y }, uniforms: { n: 4, factor: 1, extra: 2 }, workgroups: 1 })).toThrow(/no member extra/);
      expect(() => rec.dispatch(k, { bindings: { src: x, dst: y }, uniforms: { n: -1, factor: 1 }, workgroups: 1 })).toThrow(/P\.n must be a u32/);
      expect(() => rec.dispatch(k, { bindings: { src: x }, uniforms: { n: 4, factor: 1 }, workgroups: 1 })).toThrow(/binding "dst" was not given/);
    } finally {
      rec.abort();
    }
    expect(engine.activeRecorder).toBeNull();
  });

  it('rejects WGSL that does not parse, naming the kernel', () => {
    expect(() => engine.kernel({ family: 'broken', source: 'fn main( {', entry: 'main' })).toThrow(/kernel broken\/main.*does not parse/);
  });

  it('turns a WGSL type error into a KernelError naming the kernel at submit', async () => {
    const bad = COPY_WGSL.replace('src[gid.x] * p.factor', 'src[gid.x] * p.n'); // f32 * u32: Tint rejects, the parser does not
    const k = engine.kernel({ family: 'typo-kernel', source: bad, entry: 'main', consts: { WG: 64 } });
    const x = engine.zeros([4]);
    const y = engine.empty([4]);
    const err = await runProgram(engine, 'typo-program', (rec) =>
      rec.dispatch(k, { bindings: { src: x, dst: y }, uniforms: { n: 4, factor: 1 }, workgroups: 1 }),
    ).catch((e) => e);
    expect(err).toBeInstanceOf(KernelError);
    expect(String(err.message)).toMatch(/typo-program/);
    expect(String(err.message)).toMatch(/typo-kernel/);
    // the engine keeps working afterwards
    const ok = engine.tensor([1, 2], [2]);
    const { result } = await runProgram(engine, 'after', (rec) => ew.scale(rec, ok, 3));
    expect(Array.from(await result.read())).toEqual([3, 6]);
  });

  it('refuses a workgroup size over the adapter limit', () => {
    const big = engine.limits.maxComputeInvocationsPerWorkgroup * 2;
    expect(() => engine.kernel({ family: 'test-copy', source: COPY_WGSL, entry: 'main', consts: { WG: big } })).toThrow(LimitError);
  });
});

describe('recorder', () => {
  it('counts dispatches per op path and submits once', async () => {
    const x = engine.tensor([1, -2, 3], [3]);
    const { result, report } = await runProgram(engine, 'counted', (rec) => {
      const a = rec.scope('unet', () => rec.scope('block0', () => ew.silu(rec, x)));
      const b = rec.scope('vae', () => ew.relu(rec, a));
      const c = rec.scope('unet', () => ew.add(rec, a, b));
      expect(rec.countDispatches('unet')).toBe(2);
      expect(rec.countDispatches('vae')).toBe(1);
      expect(rec.countDispatches('solver')).toBe(0);
      return c;
    });
    expect(report.dispatches).toBe(3);
    expect(Object.keys(report.ops).sort()).toEqual(['unet/add', 'unet/block0/silu', 'vae/relu']);
    const s = (v: number) => v / (1 + Math.exp(-v));
    const expected = [1, -2, 3].map((v) => s(v) + Math.max(0, s(v)));
    const got = await result.read();
    expected.forEach((e, i) => expect(got[i]).toBeCloseTo(e, 5));
  });

  it('orders uploads made while recording with the recorded dispatches', async () => {
    const t = engine.tensor([1, 1], [2]);
    const { result } = await runProgram(engine, 'ordered-uploads', (rec) => {
      const first = ew.scale(rec, t, 10);
      engine.write(t, [2, 2]);
      const second = ew.scale(rec, t, 10);
      return [first, second];
    });
    expect(Array.from(await result[0]!.read())).toEqual([10, 10]);
    expect(Array.from(await result[1]!.read())).toEqual([20, 20]);
  });

  it('refuses a read-back or a second program while recording', async () => {
    const t = engine.zeros([2]);
    const rec = new Recorder(engine, 'open');
    try {
      await expect(t.read()).rejects.toThrow(/while program "open" is recording/);
      expect(() => new Recorder(engine, 'second')).toThrow(/"open" is still recording/);
    } finally {
      rec.abort();
    }
  });

  it('rejects an output that aliases an input', async () => {
    const k = engine.kernel({ family: 'test-copy', source: COPY_WGSL, entry: 'main', consts: { WG: 64 } });
    const x = engine.zeros([4]);
    await expect(
      runProgram(engine, 'alias', (rec) => rec.dispatch(k, { bindings: { src: x, dst: x }, uniforms: { n: 4, factor: 1 }, workgroups: 1 })),
    ).rejects.toThrow(ArgumentError);
  });

  it('refuses a binding larger than maxStorageBufferBindingSize with a clear error', async () => {
    const limit = engine.limits.maxStorageBufferBindingSize;
    if (limit > 256 * 2 ** 20) {
      // SwiftShader allows 1 GiB bindings; allocating that much just to fail is not worth it here.
      console.log(`binding-limit check uses a fake limit: adapter allows ${limit} bytes`);
    }
    const n = Math.min(limit, 128 * 2 ** 20) / 4 + 4;
    const big = engine.empty([n]);
    const saved = engine.limits.maxStorageBufferBindingSize;
    (engine.limits as { maxStorageBufferBindingSize: number }).maxStorageBufferBindingSize = Math.min(saved, 128 * 2 ** 20);
    try {
      await expect(runProgram(engine, 'too-big', (rec) => ew.relu(rec, big))).rejects.toThrow(/binding "ux" is \d+ bytes, over the adapter's maxStorageBufferBindingSize/);
    } finally {
      (engine.limits as { maxStorageBufferBindingSize: number }).maxStorageBufferBindingSize = saved;
      big.dispose();
    }
  });

  it('profiles each op with timestamp queries when the device has them', async (ctx) => {
    if (!engine.hasTimestamps) {
      console.log('SKIP profiling: this adapter has no timestamp-query');
      ctx.skip();
    }
    const x = engine.tensor(new Float32Array(4096).fill(1), [4096]);
    const { report } = await runProgram(engine, 'profiled', (rec) => ew.add(rec, ew.silu(rec, x), x), { profile: true });
    expect(report.dispatches).toBe(2);
    expect(report.ops['silu']!.dispatches).toBe(1);
    expect(report.profiledMs).toBeGreaterThan(0);
  });

  it('profiles programs longer than one query set (2048 dispatches each)', async (ctx) => {
    if (!engine.hasTimestamps) {
      console.log('SKIP profiling: this adapter has no timestamp-query');
      ctx.skip();
    }
    const x = engine.tensor(new Float32Array(64).fill(1), [64]);
    const big = engine.tensor(new Float32Array(1 << 20).fill(1), [1 << 20]);
    const { result, report } = await runProgram(
      engine,
      'long profile',
      (rec) => {
        const outs = [];
        for (let i = 0; i < 2 * 2048; i++) outs.push(ew.silu(rec, x));
        outs.push(rec.scope('tail', () => ew.add(rec, big, big)));
        return outs;
      },
      { profile: true },
    );
    expect(report.dispatches).toBe(4097);
    expect(report.ops['silu']!.dispatches).toBe(4096);
    // the last dispatch sits in the third query set and still gets its time
    expect(report.ops['tail/add']!.gpuNs).toBeGreaterThan(0);
    expect(report.ops['silu']!.gpuNs).toBeGreaterThan(0);
    for (const t of result) t.dispose();
    x.dispose();
    big.dispose();
  });
});

describe('tensors and pool', () => {
  it('reuses pooled buffers and tracks live bytes', () => {
    const before = engine.pool.stats.reuses;
    const a = engine.empty([1000]);
    const live = engine.pool.stats.liveBytes;
    a.dispose();
    expect(engine.pool.stats.liveBytes).toBe(live - bucketSize(4000));
    const b = engine.empty([999]);
    expect(engine.pool.stats.reuses).toBe(before + 1);
    b.dispose();
  });

  it('gives uploads (weights, inputs) and exact requests buffers of their own size, not the size class', () => {
    const live = engine.pool.stats.liveBytes;
    const w = engine.tensor(new Float32Array(1100), [1100], 'f32', 'w');
    expect(engine.pool.stats.liveBytes - live).toBe(4400);
    expect(bucketSize(4400)).toBe(5120);
    const e = engine.empty([1100], 'f32', 'e', { exact: true });
    expect(engine.pool.stats.liveBytes - live).toBe(8800);
    const c = engine.empty([1100]);
    expect(engine.pool.stats.liveBytes - live).toBe(8800 + 5120);
    for (const t of [w, e, c]) t.dispose();
    expect(engine.pool.stats.liveBytes).toBe(live);
  });

  it('keeps storage alive through reshape views and rejects use after dispose', async () => {
    const a = engine.tensor([1, 2, 3, 4, 5, 6], [2, 3], 'f32', 'a');
    const v = a.reshape([3, -1]);
    expect(v.shape).toEqual([3, 2]);
    a.dispose();
    expect(Array.from(await v.read())).toEqual([1, 2, 3, 4, 5, 6]);
    expect(() => a.buffer).toThrow(/tensor a \[2, 3\] was used after dispose/);
    expect(() => v.reshape([4])).toThrow(/cannot become \[4\]/);
    v.dispose();
  });

  it('rejects data that does not fill the shape, naming the tensor', () => {
    expect(() => engine.tensor([1, 2, 3], [2, 2], 'f32', 'weights.w')).toThrow(/weights\.w: 3 values do not fill shape \[2, 2\]/);
  });

  it('converts f16 and bf16 exactly', () => {
    const cases: Array<[number, number]> = [
      [0, 0x0000], [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [70000, 0x7c00], [5.960464477539063e-8, 0x0001],
      [0.333251953125, 0x3555], [1 + 2 ** -11, 0x3c00] /* tie -> even */, [1 + 3 * 2 ** -11, 0x3c02],
    ];
    for (const [v, bits] of cases) {
      expect(f32ToF16Bits(v)).toBe(bits);
      if (bits !== 0x7c00 && v === f16BitsToF32(bits)) expect(f16BitsToF32(bits)).toBe(v);
    }
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
    expect(bf16BitsToF32(f32ToBf16Bits(1.5))).toBe(1.5);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie -> even
    expect(bf16BitsToF32(0x4049)).toBeCloseTo(3.140625, 10);
  });

  it('refuses f16 tensors without shader-f16', async (ctx) => {
    if (engine.hasF16) {
      const e2 = await Engine.create({ disableFeatures: ['shader-f16'] });
      expect(() => e2.empty([4], 'f16', 'half')).toThrow(LimitError);
      e2.destroy();
      return;
    }
    expect(() => engine.empty([4], 'f16', 'half')).toThrow(/half: f16 storage needs shader-f16/);
    void ctx;
  });
});

describe('device loss', () => {
  it('turns a lost device into DeviceLostError naming the last program', async () => {
    const e2 = await Engine.create();
    const x = e2.tensor([1, 2], [2]);
    await runProgram(e2, 'last-before-loss', (rec) => ew.relu(rec, x));
    e2.device.destroy();
    await new Promise((r) => setTimeout(r, 50));
    expect(e2.isLost).toBe(true);
    expect(() => e2.empty([2])).toThrow(DeviceLostError);
    expect(() => e2.empty([2])).toThrow(/last-before-loss/);
    await expect(x.read()).rejects.toThrow(SiloError);
  });
});

describe('tidy', () => {
  it('frees intermediates, keeps results, and lets later ops reuse the freed buffers', async () => {
    const x = engine.tensor(new Float32Array(1 << 16).fill(1), [1 << 16]);
    const liveBefore = engine.pool.stats.liveBytes;
    const { result, report } = await runProgram(engine, 'tidy', (rec) =>
      engine.tidy(() => {
        let y = x;
        for (let i = 0; i < 6; i++) {
          const next = engine.tidy(() => ew.scale(rec, ew.relu(rec, y), 1));
          if (y !== x) y.dispose(); // a step's input is dead once the next step is recorded
          y = next;
        }
        return { y };
      }),
    );
    // six steps of two ops each, but only ~3 activations of 256 KiB are ever live at once
    expect(report.dispatches).toBe(12);
    expect(report.peakLiveBytes - liveBefore).toBeLessThanOrEqual(3 * (1 << 18));
    expect(engine.pool.stats.liveBytes - liveBefore).toBe(1 << 18);
    expect((await result.y.read())[5]).toBe(1);
    result.y.dispose();
  });
});

describe('tidy and views', () => {
  it('disposes reshape views made inside tidy, so their storage returns to the pool', () => {
    const live = engine.pool.stats.liveBytes;
    engine.tidy(() => {
      const t = engine.zeros([64]);
      t.reshape([8, 8]);
      return null;
    });
    expect(engine.pool.stats.liveBytes).toBe(live);
  });

  it('frees what a throwing tidy() allocated (nested frames too) and rethrows', () => {
    const live = engine.pool.stats.liveBytes;
    const outer = engine.zeros([16]);
    expect(() =>
      engine.tidy(() => {
        engine.zeros([256]);
        engine.tidy(() => {
          engine.zeros([32]).reshape([4, 8]);
          throw new Error('boom while recording');
        });
      }),
    ).toThrow('boom while recording');
    expect(outer.buffer).toBeDefined(); // a tensor made outside the throwing frames stays alive
    outer.dispose();
    expect(engine.pool.stats.liveBytes).toBe(live);
  });
});
