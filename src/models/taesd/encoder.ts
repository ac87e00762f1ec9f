// TAESD's encoder (taesd.py Encoder): image [N, 3, H, W] in [0, 1] -> latent [N, L, H/8, W/8] (for the
// released 8x layout), built from the config's nn.Sequential layout with its positional names.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import type { WeightLoader } from '../weights.js';
import { taesdLayout, type TaesdConfig } from './config.js';
import { TaesdBlock, TaesdConv } from './blocks.js';

export class TaesdEncoder {
  readonly layers: Array<TaesdConv | TaesdBlock>;

  constructor(w: WeightLoader, readonly config: TaesdConfig) {
    this.layers = taesdLayout(config).encoder.map((l) => {
      if (l.kind === 'conv') return new TaesdConv(w, String(l.index), l.cin, l.cout, { stride: l.stride, bias: l.bias });
      if (l.kind === 'block') {
        return new TaesdBlock(w.scope(`${l.index}.`), l.cin, l.cout, l.pool ? { expansion: config.poolExpansion, groups: config.poolGroups } : undefined);
      }
      throw new Error(`TAESD encoder: unexpected layer kind ${l.kind}`);
    });
  }

  /** image [N, imageChannels, H, W] in [0, 1], in the weights' dtype. */
  forward(rec: Recorder, image: Tensor): Tensor {
    assertArg(
      image.rank === 4 && image.shape[1] === this.config.imageChannels,
      `TAESD encoder: image must be [N, ${this.config.imageChannels}, H, W], got ${shapeString(image.shape)}`,
    );
    return rec.scope('taesd_encoder', () =>
      rec.engine.tidy(() => {
        let h = image;
        this.layers.forEach((layer, i) => {
          h = rec.scope(String(i), () => layer.forward(rec, h));
        });
        return h;
      }),
    );
  }

  dispose(): void {
    for (const l of this.layers) l.dispose();
  }
}
