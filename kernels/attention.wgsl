// Multi-head scaled-dot-product attention in the layout linear layers produce: q [B, Lq, H*D],
// k and v [B, Lk, H*D], out [B, Lq, H*D] (head h owns columns h*D .. h*D+D-1 of every row).
//
// attention: the tiled ("flash") kernel. Each thread owns QB consecutive queries of one
// (batch, head) and keeps their scaled queries and running outputs (QB x D values) in private
// arrays; it streams over the keys in blocks of 4 with an online softmax (running max m and sum l
// per query, rescaled by exp2(m_old - m_new)), so the Lq x Lk scores never reach memory. The
// QB queries x 4 keys register block gives 4*QB multiply-adds per loaded vec4 of k or v: on CPU
// adapters a per-thread load is a scalar loop over the SIMD lanes, so arithmetic per load is what
// counts. No barriers and no workgroup memory. The loops over t < QB have a small constant trip
// count and are unrolled by the compilers; the loops over the head's vec4 chunks run to a uniform
// bound (at.d4) on purpose: with a constant trip count lavapipe unrolls them too and then compiles
// for over a minute. Scores are in log2 units (scale * log2(e) is folded into q) so the
// exponentials are exp2.
//
// The buffer bindings aq/ak/av/aout and their loaders ld_q/ld_k/ld_v/st_o come from an include:
// attention_vec4.wgsl (D a multiple of 4: one vec4 load per 4 elements) or attention_scalar.wgsl
// (any D). Rows are addressed by the element offset e of the head's first element.
//
// attention_scores / attention_softmax / attention_pv: the naive baseline that materialises the
// f32 scores [B*H, Lq, Lk]; for benchmarks and as an independent check.
//
// Consts: WG (threads per workgroup), D (head dim), QB (queries per thread).
//
// Note: the score block s is zeroed explicitly at the top of each key block. Declared inside the
// loop without an initializer, it was NOT re-zeroed per iteration (seen with dawn.node from
// webgpu 0.6.2 on both lavapipe and SwiftShader), which silently corrupted the scores.

struct Attn {
  lq: u32,
  lk: u32,
  hd: u32,           // row stride in elements = heads * D
  heads: u32,
  d4: u32,           // ceil(D / 4), the vec4 chunks per head row
  scale_log2: f32,   // softmax scale * log2(e)
  causal: u32,       // 1: key j is visible to query i only when j <= i (top-left aligned)
}

@group(0) @binding(4) var<uniform> at: Attn;

const D4: u32 = (D + 3u) / 4u;

fn hmax4(x: vec4f) -> f32 { return max(max(x.x, x.y), max(x.z, x.w)); }
fn hsum4(x: vec4f) -> f32 { return (x.x + x.y) + (x.z + x.w); }

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / at.heads;
  let h = wid.y % at.heads;
  let q0 = (wid.x * WG + lid) * QB;   // this thread's first query
  var qv: array<vec4f, QB * D4>;      // query t, chunk c at t * D4 + c
  var acc: array<vec4f, QB * D4>;
  var m: array<f32, QB>;              // running max per query (log2 units)
  var l: array<f32, QB>;              // running sum per query
  for (var t = 0u; t < QB; t++) {
    // Queries past the end repeat the last one; their results are not stored.
    let e = (b * at.lq + min(q0 + t, at.lq - 1u)) * at.hd + h * D;
    for (var c = 0u; c < at.d4; c++) {
      qv[t * D4 + c] = ld_q(e, c) * at.scale_log2;
      acc[t * D4 + c] = vec4f(0.0);
    }
    m[t] = -3.0e38;
    l[t] = 0.0;
  }
  // Causal: no query of this workgroup sees a key past its last query, a workgroup-uniform bound.
  var kend = at.lk;
  if (at.causal != 0u) { kend = min(at.lk, (wid.x + 1u) * WG * QB); }
  let kvb = b * at.lk * at.hd + h * D;
  let jl = at.lk - 1u;
  let causal = vec4<bool>(at.causal != 0u);
  let neg = vec4f(-3.0e38);
  var s: array<vec4f, QB>;   // s[t][k]: score of query q0 + t with key j0 + k
  var p: array<vec4f, QB>;
  var corr: array<f32, QB>;
  for (var j0 = 0u; j0 < kend; j0 += 4u) {
    // Keys past the end repeat the last one and are masked out below.
    let e0 = kvb + min(j0, jl) * at.hd;
    let e1 = kvb + min(j0 + 1u, jl) * at.hd;
    let e2 = kvb + min(j0 + 2u, jl) * at.hd;
    let e3 = kvb + min(j0 + 3u, jl) * at.hd;
    for (var t = 0u; t < QB; t++) { s[t] = vec4f(0.0); }
    for (var c = 0u; c < at.d4; c++) {
      let k0 = ld_k(e0, c);
      let k1 = ld_k(e1, c);
      let k2 = ld_k(e2, c);
      let k3 = ld_k(e3, c);
      for (var t = 0u; t < QB; t++) {
        let x = qv[t * D4 + c];
        s[t] += vec4f(dot(x, k0), dot(x, k1), dot(x, k2), dot(x, k3));
      }
    }
    let jj = vec4u(j0, j0 + 1u, j0 + 2u, j0 + 3u);
    let inb = jj < vec4u(kend);
    for (var t = 0u; t < QB; t++) {
      let ok = inb & (!causal | (jj <= vec4u(q0 + t)));
      let mn = max(m[t], hmax4(select(neg, s[t], ok)));
      // A query with no visible key in this block keeps m, so corr = 1 and p = 0: no change.
      corr[t] = exp2(m[t] - mn);
      m[t] = mn;
      p[t] = select(vec4f(0.0), exp2(s[t] - mn), ok);
      l[t] = l[t] * corr[t] + hsum4(p[t]);
    }
    for (var c = 0u; c < at.d4; c++) {
      let v0 = ld_v(e0, c);
      let v1 = ld_v(e1, c);
      let v2 = ld_v(e2, c);
      let v3 = ld_v(e3, c);
      for (var t = 0u; t < QB; t++) {
        let w = p[t];
        let i = t * D4 + c;
        acc[i] = acc[i] * corr[t] + w.x * v0 + w.y * v1 + w.z * v2 + w.w * v3;
      }
    }
  }
  for (var t = 0u; t < QB; t++) {
    if (q0 + t < at.lq) {
      let e = (b * at.lq + q0 + t) * at.hd + h * D;
      let inv = 1.0 / l[t];
      for (var c = 0u; c < at.d4; c++) { st_o(e, c, acc[t * D4 + c] * inv); }
    }
  }
}

// ---- naive baseline ----

struct Naive {
  n: u32,            // threads launched
  row: u32,          // threads per grid row
  lq: u32,
  lk: u32,
  heads: u32,
  hdim: u32,         // D
  scale: f32,
  causal: u32,
}

@group(0) @binding(5) var<storage, read> nq: array<ST>;
@group(0) @binding(6) var<storage, read> nk: array<ST>;
@group(0) @binding(7) var<storage, read_write> nscores: array<f32>;
@group(0) @binding(8) var<uniform> ns: Naive;

// scores[bh, i, j] = scale * q[b, i, h] . k[b, j, h]; one thread per score.
@compute @workgroup_size(WG)
fn attention_scores(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x + gid.y * ns.row;
  if (t >= ns.n) { return; }
  let j = t % ns.lk;
  let i = (t / ns.lk) % ns.lq;
  let bh = t / (ns.lk * ns.lq);
  let b = bh / ns.heads;
  let h = bh % ns.heads;
  let stride = ns.heads * ns.hdim;
  let qb = (b * ns.lq + i) * stride + h * ns.hdim;
  let kb = (b * ns.lk + j) * stride + h * ns.hdim;
  var s = 0.0;
  for (var d = 0u; d < ns.hdim; d++) { s += f32(nq[qb + d]) * f32(nk[kb + d]); }
  nscores[t] = select(s * ns.scale, -3.0e38, ns.causal != 0u && j > i);
}

struct Rows {
  n: u32,            // rows
  row: u32,
  len: u32,          // row length
}

@group(0) @binding(9) var<storage, read_write> srows: array<f32>;
@group(0) @binding(10) var<uniform> sr: Rows;

// In-place softmax of each row; one thread per row.
@compute @workgroup_size(WG)
fn attention_softmax(@builtin(global_invocation_id) gid: vec3u) {
  let r = gid.x + gid.y * sr.row;
  if (r >= sr.n) { return; }
  let base = r * sr.len;
  var mx = -3.4e38;
  for (var j = 0u; j < sr.len; j++) { mx = max(mx, srows[base + j]); }
  var sum = 0.0;
  for (var j = 0u; j < sr.len; j++) {
    let e = exp(srows[base + j] - mx);
    srows[base + j] = e;
    sum += e;
  }
  let inv = 1.0 / sum;
  for (var j = 0u; j < sr.len; j++) { srows[base + j] *= inv; }
}

@group(0) @binding(11) var<storage, read> pprobs: array<f32>;
@group(0) @binding(12) var<storage, read> pv: array<ST>;
@group(0) @binding(13) var<storage, read_write> pout: array<ST>;
@group(0) @binding(14) var<uniform> pp: Naive;

// out[b, i, h*D + d] = sum_j P[bh, i, j] * v[b, j, h*D + d]; one thread per output element.
@compute @workgroup_size(WG)
fn attention_pv(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x + gid.y * pp.row;
  if (t >= pp.n) { return; }
  let stride = pp.heads * pp.hdim;
  let col = t % stride;
  let i = (t / stride) % pp.lq;
  let b = t / (stride * pp.lq);
  let h = col / pp.hdim;
  let pb = ((b * pp.heads + h) * pp.lq + i) * pp.lk;
  let vb = b * pp.lk * stride + col;
  var acc = 0.0;
  for (var j = 0u; j < pp.lk; j++) { acc += pprobs[pb + j] * f32(pv[vb + j * stride]); }
  pout[t] = ST(acc);
}
