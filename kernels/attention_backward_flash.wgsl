// Reverse-mode multi-head attention, tiled like the forward (attention.wgsl), for head dims D % 4 == 0
// (SD's 40, 80, 160; attention_backward.wgsl keeps one thread per row for the others). q, k, v, dO and
// the gradients are [B, L, H*D] (f32); the (batch, head) comes from workgroup_id.y, so every load of the
// streamed operand is workgroup-uniform (one load and a broadcast on CPU adapters, which run a
// per-thread load as a loop over the SIMD lanes), and the register block of R rows x 4 streamed rows
// gives 4 * R multiply-adds per loaded vec4. Scores are in log2 units (scale * log2(e) folded in).
//
//   attn_bwf_q:  a thread owns R queries. Pass 1 over the keys: the logsumexp L_i (online max / sum).
//                Pass 2: P_ij = exp2(s_ij - L_i), dP_ij = dO_i . v_j, and with delta_i = sum_j P_ij dP_ij,
//                dQ_i = scale * sum_j P_ij (dP_ij - delta_i) k_j
//                     = scale * (sum_j P_ij dP_ij k_j - delta_i sum_j P_ij k_j),
//                so delta needs no pass of its own. Writes L_i and delta_i for attn_bwf_kv.
//   attn_bwf_kv: a thread owns R keys, streaming over the queries that see them (causal: from the
//                workgroup's first key on): dV_j = sum_i P_ij dO_i, dK_j = scale * sum_i P_ij (dP_ij - delta_i) q_i.
//
// Rows past the end repeat the last one and are masked (P = 0) or not stored. The loops over the head's
// vec4 chunks run to the uniform bound u.d4 (a constant trip count makes lavapipe unroll them and
// compile for minutes, see attention.wgsl); the loops over t < R have a small constant count.
// Consts: WG (threads per workgroup), D (head dim, a multiple of 4), R (rows per thread).

struct AttnBwf {
  lq: u32,
  lk: u32,
  hd: u32,           // row stride in elements = heads * D
  heads: u32,
  d4: u32,           // D / 4
  scale_log2: f32,   // softmax scale * log2(e)
  scale: f32,
  causal: u32,
}

const D4: u32 = D / 4u;
const NEG: f32 = -3.0e38;

fn hmax4(x: vec4f) -> f32 { return max(max(x.x, x.y), max(x.z, x.w)); }
fn hsum4(x: vec4f) -> f32 { return (x.x + x.y) + (x.z + x.w); }

@group(0) @binding(0) var<storage, read> fq_q: array<vec4f>;
@group(0) @binding(1) var<storage, read> fq_k: array<vec4f>;
@group(0) @binding(2) var<storage, read> fq_v: array<vec4f>;
@group(0) @binding(3) var<storage, read> fq_do: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> fq_lse: array<f32>;
@group(0) @binding(5) var<storage, read_write> fq_delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> fq_dq: array<vec4f>;
@group(0) @binding(7) var<uniform> uq: AttnBwf;

@compute @workgroup_size(WG)
fn attn_bwf_q(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / uq.heads;
  let h = wid.y % uq.heads;
  let q0 = (wid.x * WG + lid) * R;
  var qv: array<vec4f, R * D4>;    // scaled query t, chunk c at t * D4 + c
  var go: array<vec4f, R * D4>;    // dO of query t
  var acc_a: array<vec4f, R * D4>; // sum_j P dP k_j
  var acc_b: array<vec4f, R * D4>; // sum_j P k_j
  var m: array<f32, R>;
  var l: array<f32, R>;
  var lse: array<f32, R>;
  var delta: array<f32, R>;
  for (var t = 0u; t < R; t++) {
    let e = ((b * uq.lq + min(q0 + t, uq.lq - 1u)) * uq.hd + h * D) / 4u;
    for (var c = 0u; c < uq.d4; c++) {
      qv[t * D4 + c] = fq_q[e + c] * uq.scale_log2;
      go[t * D4 + c] = fq_do[e + c];
      acc_a[t * D4 + c] = vec4f(0.0);
      acc_b[t * D4 + c] = vec4f(0.0);
    }
    m[t] = NEG;
    l[t] = 0.0;
    delta[t] = 0.0;
  }
  // Causal: no query of this workgroup sees a key past its last query (a workgroup-uniform bound).
  var kend = uq.lk;
  if (uq.causal != 0u) { kend = min(uq.lk, (wid.x + 1u) * WG * R); }
  let kvb = (b * uq.lk * uq.hd + h * D) / 4u;
  let rs = uq.hd / 4u;
  let jl = uq.lk - 1u;
  let causal = vec4<bool>(uq.causal != 0u);
  var s: array<vec4f, R>;
  // Pass 1: logsumexp per query.
  for (var j0 = 0u; j0 < kend; j0 += 4u) {
    let e0 = kvb + min(j0, jl) * rs;
    let e1 = kvb + min(j0 + 1u, jl) * rs;
    let e2 = kvb + min(j0 + 2u, jl) * rs;
    let e3 = kvb + min(j0 + 3u, jl) * rs;
    for (var t = 0u; t < R; t++) { s[t] = vec4f(0.0); }
    for (var c = 0u; c < uq.d4; c++) {
      let k0 = fq_k[e0 + c];
      let k1 = fq_k[e1 + c];
      let k2 = fq_k[e2 + c];
      let k3 = fq_k[e3 + c];
      for (var t = 0u; t < R; t++) {
        let x = qv[t * D4 + c];
        s[t] += vec4f(dot(x, k0), dot(x, k1), dot(x, k2), dot(x, k3));
      }
    }
    let jj = vec4u(j0, j0 + 1u, j0 + 2u, j0 + 3u);
    let inb = jj < vec4u(kend);
    for (var t = 0u; t < R; t++) {
      let ok = inb & (!causal | (jj <= vec4u(q0 + t)));
      let sv = select(vec4f(NEG), s[t], ok);
      let mn = max(m[t], hmax4(sv));
      l[t] = l[t] * exp2(m[t] - mn) + hsum4(select(vec4f(0.0), exp2(sv - mn), ok));
      m[t] = mn;
    }
  }
  for (var t = 0u; t < R; t++) { lse[t] = m[t] + log2(l[t]); }
  // Pass 2: P, dP, delta and the two key sums.
  var w: array<vec4f, R>;
  var p: array<vec4f, R>;
  for (var j0 = 0u; j0 < kend; j0 += 4u) {
    let e0 = kvb + min(j0, jl) * rs;
    let e1 = kvb + min(j0 + 1u, jl) * rs;
    let e2 = kvb + min(j0 + 2u, jl) * rs;
    let e3 = kvb + min(j0 + 3u, jl) * rs;
    for (var t = 0u; t < R; t++) {
      s[t] = vec4f(0.0);
      w[t] = vec4f(0.0);
    }
    for (var c = 0u; c < uq.d4; c++) {
      let k0 = fq_k[e0 + c];
      let k1 = fq_k[e1 + c];
      let k2 = fq_k[e2 + c];
      let k3 = fq_k[e3 + c];
      let v0 = fq_v[e0 + c];
      let v1 = fq_v[e1 + c];
      let v2 = fq_v[e2 + c];
      let v3 = fq_v[e3 + c];
      for (var t = 0u; t < R; t++) {
        let x = qv[t * D4 + c];
        let g = go[t * D4 + c];
        s[t] += vec4f(dot(x, k0), dot(x, k1), dot(x, k2), dot(x, k3));
        w[t] += vec4f(dot(g, v0), dot(g, v1), dot(g, v2), dot(g, v3));
      }
    }
    let jj = vec4u(j0, j0 + 1u, j0 + 2u, j0 + 3u);
    let inb = jj < vec4u(kend);
    for (var t = 0u; t < R; t++) {
      let ok = inb & (!causal | (jj <= vec4u(q0 + t)));
      p[t] = select(vec4f(0.0), exp2(s[t] - lse[t]), ok);
      w[t] = p[t] * w[t]; // P dP
      delta[t] += hsum4(w[t]);
    }
    for (var c = 0u; c < uq.d4; c++) {
      let k0 = fq_k[e0 + c];
      let k1 = fq_k[e1 + c];
      let k2 = fq_k[e2 + c];
      let k3 = fq_k[e3 + c];
      for (var t = 0u; t < R; t++) {
        let i = t * D4 + c;
        let a = w[t];
        let pb = p[t];
        acc_a[i] += a.x * k0 + a.y * k1 + a.z * k2 + a.w * k3;
        acc_b[i] += pb.x * k0 + pb.y * k1 + pb.z * k2 + pb.w * k3;
      }
    }
  }
  for (var t = 0u; t < R; t++) {
    if (q0 + t < uq.lq) {
      let row = wid.y * uq.lq + q0 + t; // (batch, head, query)
      fq_lse[row] = lse[t];
      fq_delta[row] = delta[t];
      let e = ((b * uq.lq + q0 + t) * uq.hd + h * D) / 4u;
      for (var c = 0u; c < uq.d4; c++) {
        fq_dq[e + c] = uq.scale * (acc_a[t * D4 + c] - delta[t] * acc_b[t * D4 + c]);
      }
    }
  }
}

@group(0) @binding(8) var<storage, read> fk_q: array<vec4f>;
@group(0) @binding(9) var<storage, read> fk_k: array<vec4f>;
@group(0) @binding(10) var<storage, read> fk_v: array<vec4f>;
@group(0) @binding(11) var<storage, read> fk_do: array<vec4f>;
@group(0) @binding(12) var<storage, read> fk_lse: array<f32>;
@group(0) @binding(13) var<storage, read> fk_delta: array<f32>;
@group(0) @binding(14) var<storage, read_write> fk_dk: array<vec4f>;
@group(0) @binding(15) var<storage, read_write> fk_dv: array<vec4f>;
@group(0) @binding(16) var<uniform> uk: AttnBwf;

@compute @workgroup_size(WG)
fn attn_bwf_kv(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / uk.heads;
  let h = wid.y % uk.heads;
  let j0 = (wid.x * WG + lid) * R;
  var kv: array<vec4f, R * D4>;    // scaled key t
  var vv: array<vec4f, R * D4>;
  var dk: array<vec4f, R * D4>;
  var dv: array<vec4f, R * D4>;
  for (var t = 0u; t < R; t++) {
    let e = ((b * uk.lk + min(j0 + t, uk.lk - 1u)) * uk.hd + h * D) / 4u;
    for (var c = 0u; c < uk.d4; c++) {
      kv[t * D4 + c] = fk_k[e + c] * uk.scale_log2;
      vv[t * D4 + c] = fk_v[e + c];
      dk[t * D4 + c] = vec4f(0.0);
      dv[t * D4 + c] = vec4f(0.0);
    }
  }
  // Causal: query i sees key j only when i >= j, so the workgroup starts at its first key.
  var istart = 0u;
  if (uk.causal != 0u) { istart = min(wid.x * WG * R, uk.lq) & ~3u; }
  let qb = (b * uk.lq * uk.hd + h * D) / 4u;
  let rs = uk.hd / 4u;
  let il = uk.lq - 1u;
  let rowb = wid.y * uk.lq; // (batch, head)'s first entry in lse / delta
  let causal = vec4<bool>(uk.causal != 0u);
  var s: array<vec4f, R>;
  var w: array<vec4f, R>;
  var p: array<vec4f, R>;
  for (var i0 = istart; i0 < uk.lq; i0 += 4u) {
    let ii = vec4u(i0, i0 + 1u, i0 + 2u, i0 + 3u);
    let ic = min(ii, vec4u(il));
    let e0 = qb + ic.x * rs;
    let e1 = qb + ic.y * rs;
    let e2 = qb + ic.z * rs;
    let e3 = qb + ic.w * rs;
    let lse = vec4f(fk_lse[rowb + ic.x], fk_lse[rowb + ic.y], fk_lse[rowb + ic.z], fk_lse[rowb + ic.w]);
    let delta = vec4f(fk_delta[rowb + ic.x], fk_delta[rowb + ic.y], fk_delta[rowb + ic.z], fk_delta[rowb + ic.w]);
    for (var t = 0u; t < R; t++) {
      s[t] = vec4f(0.0);
      w[t] = vec4f(0.0);
    }
    for (var c = 0u; c < uk.d4; c++) {
      let q0 = fk_q[e0 + c];
      let q1 = fk_q[e1 + c];
      let q2 = fk_q[e2 + c];
      let q3 = fk_q[e3 + c];
      let g0 = fk_do[e0 + c];
      let g1 = fk_do[e1 + c];
      let g2 = fk_do[e2 + c];
      let g3 = fk_do[e3 + c];
      for (var t = 0u; t < R; t++) {
        let x = kv[t * D4 + c];
        let y = vv[t * D4 + c];
        s[t] += vec4f(dot(x, q0), dot(x, q1), dot(x, q2), dot(x, q3));
        w[t] += vec4f(dot(y, g0), dot(y, g1), dot(y, g2), dot(y, g3));
      }
    }
    let inb = ii < vec4u(uk.lq);
    for (var t = 0u; t < R; t++) {
      let ok = inb & (!causal | (ii >= vec4u(j0 + t)));
      p[t] = select(vec4f(0.0), exp2(s[t] - lse), ok);
      w[t] = p[t] * (w[t] - delta); // P (dP - delta)
    }
    for (var c = 0u; c < uk.d4; c++) {
      let q0 = fk_q[e0 + c];
      let q1 = fk_q[e1 + c];
      let q2 = fk_q[e2 + c];
      let q3 = fk_q[e3 + c];
      let g0 = fk_do[e0 + c];
      let g1 = fk_do[e1 + c];
      let g2 = fk_do[e2 + c];
      let g3 = fk_do[e3 + c];
      for (var t = 0u; t < R; t++) {
        let i = t * D4 + c;
        let a = w[t];
        let pb = p[t];
        dk[i] += a.x * q0 + a.y * q1 + a.z * q2 + a.w * q3;
        dv[i] += pb.x * g0 + pb.y * g1 + pb.z * g2 + pb.w * g3;
      }
    }
  }
  for (var t = 0u; t < R; t++) {
    if (j0 + t < uk.lk) {
      let e = ((b * uk.lk + j0 + t) * uk.hd + h * D) / 4u;
      for (var c = 0u; c < uk.d4; c++) {
        fk_dk[e + c] = uk.scale * dk[t * D4 + c];
        fk_dv[e + c] = dv[t * D4 + c];
      }
    }
  }
}
