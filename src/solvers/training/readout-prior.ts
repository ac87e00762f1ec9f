// The frozen prior the readout operator is trained on: the UNet, and the text encoder's output for the
// empty prompt (computed once here, kept on the host; the text encoder is not needed after this).

import type { Engine } from '../../engine/device.js';
import { runProgram } from '../../engine/recorder.js';
import type { ClipTextModel } from '../../models/clip/text-encoder.js';
import type { ClipTokenizer } from '../../models/clip/tokenizer.js';
import type { UNet2DConditionModel } from '../../models/unet/unet.js';
import type { ReadoutPrior } from './operators.js';

export async function readoutPrior(engine: Engine, unet: UNet2DConditionModel, tokenizer: ClipTokenizer, textEncoder: ClipTextModel): Promise<ReadoutPrior> {
  const ids = tokenizer.call('').inputIds;
  const { result } = await runProgram(engine, 'train: empty prompt', (rec) => textEncoder.forward(rec, ids, [1, ids.length]));
  result.pooledOutput.dispose();
  const h = result.lastHiddenState;
  try {
    return { unet, context: { data: await h.read(), shape: [1, h.shape[1]!, h.shape[2]!] } };
  } finally {
    h.dispose();
  }
}
