// Sinusoidal timestep embedding (diffusers' get_timestep_embedding): out [N, dim] with
// out[n, k] = sin(t_n * f_k * scale) and out[n, half + k] = cos(...) for k < half = dim / 2 (the two
// halves swapped when flip), and a zero last column when dim is odd. The frequencies f_k come from
// the host, computed with f32 roundings as PyTorch does; the products are f32 as in diffusers.
//
// WGSL's sin/cos are only specified to 2^-11 absolute inside [-pi, pi] and the arguments reach
// ~1000 rad, so both are computed here: Cody-Waite reduction by pi/2 with a two-constant split
// (PIO2_HI has 12 significant bits, so n * PIO2_HI is exact for |n| < 4096, |x| < ~6400 rad),
// then Taylor polynomials on [-pi/4, pi/4] (truncation < 2e-9) and the quadrant's sign/swap.
// One thread per output element on a 2-D grid (gid.x + gid.y * row).

struct Emb {
  n: u32,        // N * dim
  row: u32,
  dim: u32,
  half: u32,
  flip: u32,     // 1: cos half first
  scale: f32,
  freqs: array<vec4f, 512>,   // f_k at freqs[k / 4][k % 4], k < half <= 2048
}

@group(0) @binding(0) var<storage, read> et: array<f32>;
@group(0) @binding(1) var<storage, read_write> eout: array<ST>;
@group(0) @binding(2) var<uniform> eu: Emb;

const PIO2_HI: f32 = 1.5703125;                 // pi/2 rounded down to 12 significant bits
const PIO2_LO: f32 = 4.8382679489661923e-4;     // pi/2 - PIO2_HI
const TWO_OVER_PI: f32 = 0.63661977236758134;

// (sin x, cos x) for |x| below ~6400 with absolute error ~1e-7.
fn sin_cos(x: f32) -> vec2f {
  let k = round(x * TWO_OVER_PI);
  let r = (x - k * PIO2_HI) - k * PIO2_LO;
  let r2 = r * r;
  let sr = r + r * r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0))));
  let cr = 1.0 - 0.5 * r2 + r2 * r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0 + r2 * (-1.0 / 3628800.0))));
  switch (i32(k) & 3) {
    case 1: { return vec2f(cr, -sr); }
    case 2: { return vec2f(-sr, -cr); }
    case 3: { return vec2f(-cr, sr); }
    default: { return vec2f(sr, cr); }
  }
}

@compute @workgroup_size(WG)
fn timestep_embedding(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * eu.row;
  if (i >= eu.n) { return; }
  let col = i % eu.dim;
  let r = i / eu.dim;
  if (col >= 2u * eu.half) {
    eout[i] = ST(0.0);
    return;
  }
  let first = col < eu.half;
  let k = select(col - eu.half, col, first);
  let arg = (et[r] * eu.freqs[k / 4u][k % 4u]) * eu.scale;
  let sc = sin_cos(arg);
  // sin in the first half unless flipped.
  eout[i] = ST(select(sc.y, sc.x, first != (eu.flip != 0u)));
}
