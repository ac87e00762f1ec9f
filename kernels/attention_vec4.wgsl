// Bindings and loaders of attention.wgsl when the head dim D is a multiple of 4: every head row
// starts on a vec4 boundary, so chunk c of the row at element e is one vec4 load.

@group(0) @binding(0) var<storage, read> aq: array<ST4>;
@group(0) @binding(1) var<storage, read> ak: array<ST4>;
@group(0) @binding(2) var<storage, read> av: array<ST4>;
@group(0) @binding(3) var<storage, read_write> aout: array<ST4>;

fn ld_q(e: u32, c: u32) -> vec4f { return vec4f(aq[e / 4u + c]); }
fn ld_k(e: u32, c: u32) -> vec4f { return vec4f(ak[e / 4u + c]); }
fn ld_v(e: u32, c: u32) -> vec4f { return vec4f(av[e / 4u + c]); }
fn st_o(e: u32, c: u32, x: vec4f) { aout[e / 4u + c] = ST4(x); }
