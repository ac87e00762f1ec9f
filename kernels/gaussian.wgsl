// Diagonal Gaussian posterior of a VAE encoder (diffusers' DiagonalGaussianDistribution), NCHW.
// diag_gaussian: moments [N, 2L, ...] -> mean = moments[:, :L], logvar = clamp(moments[:, L:], lo, hi),
//                std = exp(0.5 * logvar), each [N, L, ...].
// gaussian_sample: out = mean + std * noise (element-wise, same shapes).
// One thread per output element on a 2-D grid (gid.x + gid.y * row).

struct Moments {
  n: u32,        // N * L * inner
  row: u32,
  inner: u32,    // product of the spatial dims
  latent: u32,   // L
  lo: f32,
  hi: f32,
}

@group(0) @binding(0) var<storage, read> gm: array<ST>;
@group(0) @binding(1) var<storage, read_write> gmean: array<ST>;
@group(0) @binding(2) var<storage, read_write> glogvar: array<ST>;
@group(0) @binding(3) var<storage, read_write> gstd: array<ST>;
@group(0) @binding(4) var<uniform> gu: Moments;

@compute @workgroup_size(WG)
fn diag_gaussian(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * gu.row;
  if (i >= gu.n) { return; }
  let r = i % (gu.latent * gu.inner);
  let b = i / (gu.latent * gu.inner);
  let src = b * 2u * gu.latent * gu.inner + r;
  let lv = clamp(f32(gm[src + gu.latent * gu.inner]), gu.lo, gu.hi);
  gmean[i] = gm[src];
  glogvar[i] = ST(lv);
  gstd[i] = ST(exp(0.5 * lv));
}

struct Sample {
  n: u32,
  row: u32,
}

@group(0) @binding(5) var<storage, read> smean: array<ST>;
@group(0) @binding(6) var<storage, read> sstd: array<ST>;
@group(0) @binding(7) var<storage, read> snoise: array<ST>;
@group(0) @binding(8) var<storage, read_write> sout: array<ST>;
@group(0) @binding(9) var<uniform> su: Sample;

@compute @workgroup_size(WG)
fn gaussian_sample(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * su.row;
  if (i >= su.n) { return; }
  sout[i] = ST(fma(f32(sstd[i]), f32(snoise[i]), f32(smean[i])));
}
