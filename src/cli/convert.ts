// `silo convert`'s output lines. The conversion itself lives below the CLI (src/formats/torch-convert-node.ts,
// src/hub/silo-convert-node.ts) so `silo pull` uses the same code. Node only.

import { convertNotes, type ConvertOptions } from '../formats/torch-convert-node.js';
import { convertSiloCheckpoint } from '../hub/silo-convert-node.js';

export { convertCheckpoint, convertNotes, ConvertError, type ConvertOptions, type ConvertReport, type FloatTarget, type OverflowPolicy, type ValueNote } from '../formats/torch-convert-node.js';

/** Converts `input` (a readout dict becomes a folder, anything else one .safetensors file) and says what was written. */
export async function runConvert(input: string, output: string, options: ConvertOptions, io: { out(l: string): void; err(l: string): void }): Promise<number> {
  const c = await convertSiloCheckpoint(input, output, options);
  const r = c.report;
  const dtypes = Object.entries(r.dtypes).map(([d, n]) => `${n} ${d}`).join(', ');
  if (c.layout === 'readout') {
    const cfg = c.config!;
    io.out(`${c.output}/: SILO readout operator folder (config.json + weights.safetensors)`);
    io.out(`${r.output}: ${r.tensors} tensors (${dtypes}), ${r.dataBytes} bytes of data, from key aggregation_network`);
    io.out(
      `${c.output}/config.json: feature_dims [${(cfg['feature_dims'] as number[]).join(', ')}], projection_dim ${cfg['projection_dim']}, ` +
        `sigma_condition ${cfg['sigma_condition']}, cond_inpaint ${cfg['cond_inpaint']} (read off the tensor shapes; the stored step and config are kept under _silo_checkpoint)`,
    );
    if (c.dropped.length) io.out(`left out ${c.dropped.join(', ')} (training state, not needed to restore)`);
  } else {
    io.out(`${r.output}: ${r.tensors} tensors (${dtypes}), ${r.dataBytes} bytes of data${r.keyPath.length ? `, from key ${r.keyPath.join('/')}` : ''}`);
  }
  for (const line of convertNotes(r, options.overflow ?? 'error')) io.err(line);
  for (const line of c.notes) io.err(`note: ${line}`);
  if (c.layout === 'state-dict' && r.skipped.length) io.out(`left out ${r.skipped.length} non-tensor entries: ${r.skipped.slice(0, 10).join(', ')}${r.skipped.length > 10 ? ', ...' : ''}`);
  return 0;
}
