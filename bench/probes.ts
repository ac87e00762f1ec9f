// Adapter ceilings measured in the same run as the kernels: FMA throughput (GFLOP/s) and copy
// bandwidth (GB/s, read + write).

import probeSource from '../kernels/probe.wgsl';
import type { Engine } from '../src/engine/device.js';
import { grid1d, workgroupSize } from '../src/engine/ops/grid.js';
import { timeProgram } from './harness.js';

export interface Ceilings {
  fmaGflops: number;
  copyGBs: number;
}

export async function measureCeilings(engine: Engine): Promise<Ceilings> {
  const wg = workgroupSize(engine, 64);
  const fmaK = engine.kernel({ family: 'probe', source: probeSource, entry: 'fma_probe', consts: { WG: wg } });
  const threads = 64 * 1024;
  const iters = 256;
  const out = engine.empty([threads * 4]);
  const g = grid1d(engine, threads, wg);
  const fma = await timeProgram(engine, 'probe:fma', (rec) => {
    rec.dispatch(fmaK, { op: 'fma_probe', bindings: { fma_out: out }, uniforms: { iters, row: g.row }, workgroups: g.workgroups });
  });
  out.dispose();
  const flops = threads * iters * 8 * 4 * 2;

  const copyK = engine.kernel({ family: 'probe', source: probeSource, entry: 'copy_probe', consts: { WG: wg } });
  const n = 16 * 2 ** 20; // 64 MiB each way
  const src = engine.empty([n]);
  const dst = engine.empty([n]);
  const cg = grid1d(engine, n / 4, wg);
  const copy = await timeProgram(engine, 'probe:copy', (rec) => {
    rec.dispatch(copyK, { op: 'copy_probe', bindings: { copy_src: src, copy_dst: dst }, uniforms: { n4: n / 4, row: cg.row }, workgroups: cg.workgroups });
  });
  src.dispose();
  dst.dispose();
  return { fmaGflops: flops / (fma.medianMs * 1e6), copyGBs: (2 * n * 4) / (copy.medianMs * 1e6) };
}
