// Row gather (embedding lookup): out[r, c] = table[ids[r], c] for a table [V, D] and row ids [N].
// Ids are f32 holding integers (exact below 2^24, more than any vocabulary). A table larger than one
// storage binding is bound in row chunks, one dispatch per chunk: a dispatch writes only the rows
// whose id falls in its chunk [base, base + rows), and the first one also zero-fills rows whose id is
// outside [0, total) (NaN included), so a bad id never reads out of bounds.
// One thread per output element on a 2-D grid (gid.x + gid.y * row).

struct Gather {
  n: u32,        // N * D
  row: u32,
  d: u32,
  base: u32,     // first table row in this binding
  rows: u32,     // table rows in this binding
  total: u32,    // V
  zero_invalid: u32,
}

@group(0) @binding(0) var<storage, read> gtable: array<WT>;
@group(0) @binding(1) var<storage, read> gids: array<f32>;
@group(0) @binding(2) var<storage, read_write> gout: array<ST>;
@group(0) @binding(3) var<uniform> gu: Gather;

@compute @workgroup_size(WG)
fn gather_rows(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * gu.row;
  if (i >= gu.n) { return; }
  let r = i / gu.d;
  let c = i - r * gu.d;
  let id = gids[r];
  if (id >= f32(gu.base) && id < f32(gu.base + gu.rows)) {
    gout[i] = ST(gtable[(u32(id) - gu.base) * gu.d + c]);
  } else if (gu.zero_invalid != 0u && !(id >= 0.0 && id < f32(gu.total))) {
    gout[i] = ST(0.0);
  }
}
