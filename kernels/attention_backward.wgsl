// Reverse-mode multi-head attention on [B, L, H*D] tensors (f32 storage), one thread per row, FlashAttention-2
// style; for head dims the tiled kernels (attention_backward_flash.wgsl) do not take (D % 4 != 0, D > 256):
// the score matrix is never stored; each pass recomputes the scores it needs from q and k.
//   attn_bw_q:  one thread per (batch, head, query i): the row's logsumexp L_i (max, then the sum of
//               exps), delta_i = sum_j P_ij (dO_i . v_j) = dO_i . O_i, and
//               dQ_i = scale * sum_j P_ij (dO_i . v_j - delta_i) k_j. Writes L and delta for the next pass.
//   attn_bw_kv: one thread per (batch, head, key j), over the queries that see it:
//               dK_j = scale * sum_i P_ij (dO_i . v_j - delta_i) q_i,  dV_j = sum_i P_ij dO_i,
//               with P_ij = exp(scale q_i . k_j - L_i).
// Each thread owns its output row, so the D-long accumulators live in the output buffers themselves
// (read-modify-write, no races). Head-dim loops take their bound from the uniforms (lavapipe unrolls
// constant trip counts and compiles slowly). Causal: query i sees keys j <= i (top-left aligned).

struct AttnBw {
  n: u32,        // threads: B * heads * (lq for attn_bw_q, lk for attn_bw_kv)
  row: u32,      // threads per grid row
  lq: u32,
  lk: u32,
  heads: u32,
  hdim: u32,     // head dim D
  scale: f32,
  causal: u32,
}

const LOWEST_BW: f32 = -3.4028234663852886e38;

@group(0) @binding(0) var<storage, read> bq_q: array<ST>;
@group(0) @binding(1) var<storage, read> bq_k: array<ST>;
@group(0) @binding(2) var<storage, read> bq_v: array<ST>;
@group(0) @binding(3) var<storage, read> bq_do: array<ST>;
@group(0) @binding(4) var<storage, read_write> bq_lse: array<f32>;
@group(0) @binding(5) var<storage, read_write> bq_delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> bq_dq: array<ST>;
@group(0) @binding(7) var<uniform> abq: AttnBw;

@compute @workgroup_size(WG)
fn attn_bw_q(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x + gid.y * abq.row;
  if (t >= abq.n) { return; }
  let i = t % abq.lq;
  let bh = t / abq.lq;
  let h = bh % abq.heads;
  let b = bh / abq.heads;
  let hd = abq.heads * abq.hdim;
  let qb = (b * abq.lq + i) * hd + h * abq.hdim;
  let kb0 = b * abq.lk * hd + h * abq.hdim;
  var visible = abq.lk;
  if (abq.causal != 0u) { visible = min(abq.lk, i + 1u); }

  // Logsumexp of the scaled scores, with an online max.
  var m = LOWEST_BW;
  var s = 0.0;
  for (var j = 0u; j < visible; j++) {
    let kb = kb0 + j * hd;
    var dot = 0.0;
    for (var d = 0u; d < abq.hdim; d++) { dot += f32(bq_q[qb + d]) * f32(bq_k[kb + d]); }
    let sc = abq.scale * dot;
    if (sc > m) {
      s = s * exp(m - sc) + 1.0;
      m = sc;
    } else {
      s += exp(sc - m);
    }
  }
  let lse = m + log(s);

  var delta = 0.0;
  for (var j = 0u; j < visible; j++) {
    let kb = kb0 + j * hd;
    var dot = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < abq.hdim; d++) {
      dot += f32(bq_q[qb + d]) * f32(bq_k[kb + d]);
      dp += f32(bq_do[qb + d]) * f32(bq_v[kb + d]);
    }
    delta += exp(abq.scale * dot - lse) * dp;
  }

  for (var d = 0u; d < abq.hdim; d++) { bq_dq[qb + d] = ST(0.0); }
  for (var j = 0u; j < visible; j++) {
    let kb = kb0 + j * hd;
    var dot = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < abq.hdim; d++) {
      dot += f32(bq_q[qb + d]) * f32(bq_k[kb + d]);
      dp += f32(bq_do[qb + d]) * f32(bq_v[kb + d]);
    }
    let ds = abq.scale * exp(abq.scale * dot - lse) * (dp - delta);
    for (var d = 0u; d < abq.hdim; d++) { bq_dq[qb + d] = ST(f32(bq_dq[qb + d]) + ds * f32(bq_k[kb + d])); }
  }
  bq_lse[t] = lse;
  bq_delta[t] = delta;
}

@group(0) @binding(8) var<storage, read> bkv_q: array<ST>;
@group(0) @binding(9) var<storage, read> bkv_k: array<ST>;
@group(0) @binding(10) var<storage, read> bkv_v: array<ST>;
@group(0) @binding(11) var<storage, read> bkv_do: array<ST>;
@group(0) @binding(12) var<storage, read> bkv_lse: array<f32>;
@group(0) @binding(13) var<storage, read> bkv_delta: array<f32>;
@group(0) @binding(14) var<storage, read_write> bkv_dk: array<ST>;
@group(0) @binding(15) var<storage, read_write> bkv_dv: array<ST>;
@group(0) @binding(16) var<uniform> abkv: AttnBw;

@compute @workgroup_size(WG)
fn attn_bw_kv(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x + gid.y * abkv.row;
  if (t >= abkv.n) { return; }
  let j = t % abkv.lk;
  let bh = t / abkv.lk;
  let h = bh % abkv.heads;
  let b = bh / abkv.heads;
  let hd = abkv.heads * abkv.hdim;
  let kb = (b * abkv.lk + j) * hd + h * abkv.hdim;
  let qb0 = b * abkv.lq * hd + h * abkv.hdim;
  let rowb = bh * abkv.lq; // (batch, head)'s first entry in lse / delta
  var first = 0u;
  if (abkv.causal != 0u) { first = j; } // queries i >= j see key j

  for (var d = 0u; d < abkv.hdim; d++) {
    bkv_dk[kb + d] = ST(0.0);
    bkv_dv[kb + d] = ST(0.0);
  }
  for (var i = first; i < abkv.lq; i++) {
    let qb = qb0 + i * hd;
    var dot = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < abkv.hdim; d++) {
      dot += f32(bkv_q[qb + d]) * f32(bkv_k[kb + d]);
      dp += f32(bkv_do[qb + d]) * f32(bkv_v[kb + d]);
    }
    let p = exp(abkv.scale * dot - bkv_lse[rowb + i]);
    let ds = abkv.scale * p * (dp - bkv_delta[rowb + i]);
    for (var d = 0u; d < abkv.hdim; d++) {
      bkv_dk[kb + d] = ST(f32(bkv_dk[kb + d]) + ds * f32(bkv_q[qb + d]));
      bkv_dv[kb + d] = ST(f32(bkv_dv[kb + d]) + p * f32(bkv_do[qb + d]));
    }
  }
}
