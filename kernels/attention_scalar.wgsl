// Bindings and loaders of attention.wgsl for any head dim D: four scalar loads per chunk. Lanes
// past the head's last element (the final chunk when D % 4 != 0) read index-clamped values from
// inside the row: q's are zeroed, so the k values they meet never count, and v's only reach
// accumulator lanes that st_o never stores.

@group(0) @binding(0) var<storage, read> aq: array<ST>;
@group(0) @binding(1) var<storage, read> ak: array<ST>;
@group(0) @binding(2) var<storage, read> av: array<ST>;
@group(0) @binding(3) var<storage, read_write> aout: array<ST>;

fn lanes_in_head(c: u32) -> vec4<bool> {
  return vec4u(c * 4u) + vec4u(0u, 1u, 2u, 3u) < vec4u(D);
}

fn ld_q(e: u32, c: u32) -> vec4f {
  let i = e + c * 4u;
  let z = e + D - 1u;
  let x = vec4f(f32(aq[i]), f32(aq[min(i + 1u, z)]), f32(aq[min(i + 2u, z)]), f32(aq[min(i + 3u, z)]));
  return select(vec4f(0.0), x, lanes_in_head(c));
}

fn ld_k(e: u32, c: u32) -> vec4f {
  let i = e + c * 4u;
  let z = e + D - 1u;
  return vec4f(f32(ak[i]), f32(ak[min(i + 1u, z)]), f32(ak[min(i + 2u, z)]), f32(ak[min(i + 3u, z)]));
}

fn ld_v(e: u32, c: u32) -> vec4f {
  let i = e + c * 4u;
  let z = e + D - 1u;
  return vec4f(f32(av[i]), f32(av[min(i + 1u, z)]), f32(av[min(i + 2u, z)]), f32(av[min(i + 3u, z)]));
}

fn st_o(e: u32, c: u32, x: vec4f) {
  let i = e + c * 4u;
  let ok = lanes_in_head(c);
  aout[i] = ST(x.x);
  if (ok.y) { aout[i + 1u] = ST(x.y); }
  if (ok.z) { aout[i + 2u] = ST(x.z); }
  if (ok.w) { aout[i + 3u] = ST(x.w); }
}
