// Ceiling probes for benchmarks: FMA throughput and copy bandwidth on the current adapter.

struct Fma {
  iters: u32,
  row: u32,
}
@group(0) @binding(0) var<storage, read_write> fma_out: array<vec4f>;
@group(0) @binding(1) var<uniform> fp: Fma;

// 8 independent vec4 FMA chains per thread: 32 lanes x 2 FLOP per iteration step.
@compute @workgroup_size(WG)
fn fma_probe(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * fp.row;
  let s = f32(i) * 1e-9;
  var a0 = vec4f(s, s + 1e-3, s + 2e-3, s + 3e-3);
  var a1 = a0 + 0.1; var a2 = a0 + 0.2; var a3 = a0 + 0.3;
  var a4 = a0 + 0.4; var a5 = a0 + 0.5; var a6 = a0 + 0.6; var a7 = a0 + 0.7;
  let m = vec4f(0.999999);
  let c = vec4f(1e-7);
  for (var k = 0u; k < fp.iters; k++) {
    a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
  }
  fma_out[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

struct Copy {
  n4: u32,
  row: u32,
}
@group(0) @binding(2) var<storage, read> copy_src: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> copy_dst: array<vec4f>;
@group(0) @binding(4) var<uniform> cp: Copy;

@compute @workgroup_size(WG)
fn copy_probe(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * cp.row;
  if (i < cp.n4) { copy_dst[i] = copy_src[i]; }
}
