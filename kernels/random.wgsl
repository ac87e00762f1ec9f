// Counter-based random numbers: Philox4x32-10, bit-identical to src/engine/random.ts (see there for
// the stream layout). One thread per counter block of 4 elements; element i = word i % 4 of block
// first_block + i / 4, so values never depend on the tensor's shape or the launch geometry.
// WGSL has no 64-bit integers: the 32x32 -> 64 products are built from 16-bit halves.
// Consts: WG (threads per workgroup), BITS (mantissa bits of uniforms: 24 for f32, 11 for f16, so
// every value is exact in ST and stays below 1).

struct RandomParams {
  n: u32,              // elements to write
  row: u32,            // threads per grid row
  first_block: u32,    // counter word 0 of thread 0 (0 for tensor fills)
  stream_id: u32,      // counter word 3
  key: vec2u,          // seed (low, high)
  ctr: vec2u,          // offset (low, high) = counter words 1, 2
  mean: f32,
  std_dev: f32,
}

@group(0) @binding(0) var<storage, read_write> rout: array<ST>;
@group(0) @binding(1) var<uniform> rp: RandomParams;
@group(0) @binding(2) var<storage, read_write> rbits: array<u32>;

const PHILOX_M0: u32 = 0xd2511f53u;
const PHILOX_M1: u32 = 0xcd9e8d57u;
const PHILOX_W: vec2u = vec2u(0x9e3779b9u, 0xbb67ae85u);

// (high, low) words of the 64-bit product a * b.
fn mul_hi_lo(a: u32, b: u32) -> vec2u {
  let a0 = a & 0xffffu;
  let a1 = a >> 16u;
  let b0 = b & 0xffffu;
  let b1 = b >> 16u;
  let p01 = a0 * b1;
  let p10 = a1 * b0;
  let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  let hi = a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
  return vec2u(hi, a * b);
}

fn philox4x32_10(counter: vec4u, seed_key: vec2u) -> vec4u {
  var c = counter;
  var k = seed_key;
  for (var r = 0u; r < 10u; r++) {
    if (r > 0u) { k += PHILOX_W; }
    let p0 = mul_hi_lo(PHILOX_M0, c.x);
    let p1 = mul_hi_lo(PHILOX_M1, c.z);
    c = vec4u(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
  }
  return c;
}

fn block_words(blk: u32) -> vec4u {
  return philox4x32_10(vec4u(blk, rp.ctr.x, rp.ctr.y, rp.stream_id), rp.key);
}

// ln(m * 2^-24) for integer m in [1, 2^24], from +, *, / only so every adapter agrees to a few ulp
// (built-in log may have 2^-21 absolute error near 1, which ruins small radii). m = f * 2^e with
// f in [sqrt(1/2), sqrt(2)); ln f = 2 atanh(s), s = (f - 1) / (f + 1), |s| <= 0.172.
fn log_unit(m: u32) -> f32 {
  var e = i32(firstLeadingBit(m));
  var f = ldexp(f32(m), -e);
  if (f > 1.41421356) {
    f *= 0.5;
    e += 1;
  }
  let s = (f - 1.0) / (f + 1.0);
  let s2 = s * s;
  let ln_f = 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (0.2 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0))))));
  let k = f32(e - 24);
  // ln 2 split so that k * LN2_HI is exact (LN2_HI has 16 significant bits).
  return k * 0.693145751953125 + (ln_f + k * 1.428606820309417e-6);
}

// (cos, sin) of theta = q * pi / 2^23 for integer q in [-2^23, 2^23): exact quadrant reduction on
// the integer, then Taylor polynomials on |x| <= pi/4 (truncation below 2e-9).
fn cos_sin_turn(q: i32) -> vec2f {
  let j = (q + 2097152) >> 22u;
  let x = f32(q - (j << 22u)) * (3.14159265358979 / 8388608.0);
  let x2 = x * x;
  let sn = x * (1.0 + x2 * (-1.0 / 6.0 + x2 * (1.0 / 120.0 + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362880.0)))));
  let cs = 1.0 + x2 * (-0.5 + x2 * (1.0 / 24.0 + x2 * (-1.0 / 720.0 + x2 * (1.0 / 40320.0 + x2 * (-1.0 / 3628800.0)))));
  switch (j & 3) {
    case 1: { return vec2f(-sn, cs); }
    case 2: { return vec2f(-cs, -sn); }
    case 3: { return vec2f(sn, -cs); }
    default: { return vec2f(cs, sn); }
  }
}

// Box-Muller on two words: u1 = ((w0 >> 8) + 1) * 2^-24 in (0, 1], theta = pi * ((w1 >> 8) * 2^-23 - 1).
fn box_muller(w0: u32, w1: u32) -> vec2f {
  let radius = sqrt(-2.0 * log_unit((w0 >> 8u) + 1u));
  return radius * cos_sin_turn(i32(w1 >> 8u) - 8388608);
}

@compute @workgroup_size(WG)
fn uniform_fill(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x + gid.y * rp.row;
  let base = t * 4u;
  if (base >= rp.n) { return; }
  let w = block_words(rp.first_block + t);
  let scale = 1.0 / f32(1u << BITS);
  for (var j = 0u; j < 4u; j++) {
    if (base + j < rp.n) { rout[base + j] = ST(f32(w[j] >> (32u - BITS)) * scale); }
  }
}

@compute @workgroup_size(WG)
fn normal_fill(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x + gid.y * rp.row;
  let base = t * 4u;
  if (base >= rp.n) { return; }
  let w = block_words(rp.first_block + t);
  let z = vec4f(box_muller(w.x, w.y), box_muller(w.z, w.w));
  for (var j = 0u; j < 4u; j++) {
    if (base + j < rp.n) { rout[base + j] = ST(rp.mean + rp.std_dev * z[j]); }
  }
}

// Raw words (for checking against the TypeScript Philox, and for integer randomness).
@compute @workgroup_size(WG)
fn bits_fill(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x + gid.y * rp.row;
  let base = t * 4u;
  if (base >= rp.n) { return; }
  let w = block_words(rp.first_block + t);
  for (var j = 0u; j < 4u; j++) {
    if (base + j < rp.n) { rbits[base + j] = w[j]; }
  }
}
