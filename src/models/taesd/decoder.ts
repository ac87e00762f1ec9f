// TAESD's decoder (taesd.py Decoder): latent [N, L, h, w] -> raw image [N, 3, 8h, 8w] (released 8x
// layout); the final image is clamp(raw, 0, 1) (`decodeImage`). Starts with the soft clamp
// tanh(x/3)*3, conv, ReLU; levels are separated by nearest x2 up-sampling and a conv without bias.

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { clamp, relu } from '../../engine/ops/elementwise.js';
import { upsampleNearest2x } from '../../engine/ops/resample.js';
import type { WeightLoader } from '../weights.js';
import { taesdLayout, type TaesdConfig, type TaesdLayer } from './config.js';
import { TaesdBlock, TaesdConv, softClamp3 } from './blocks.js';

type Step = { layer: TaesdLayer; module?: TaesdConv | TaesdBlock };

export class TaesdDecoder {
  readonly steps: Step[];

  constructor(w: WeightLoader, readonly config: TaesdConfig) {
    this.steps = taesdLayout(config).decoder.map((l) => {
      if (l.kind === 'conv') return { layer: l, module: new TaesdConv(w, String(l.index), l.cin, l.cout, { stride: l.stride, bias: l.bias }) };
      if (l.kind === 'block') {
        const pool = l.pool ? { expansion: config.poolExpansion, groups: config.poolGroups } : undefined;
        return { layer: l, module: new TaesdBlock(w.scope(`${l.index}.`), l.cin, l.cout, pool) };
      }
      return { layer: l };
    });
  }

  /** latent [N, latentChannels, h, w] in the weights' dtype -> raw image (not clamped). */
  forward(rec: Recorder, latent: Tensor): Tensor {
    assertArg(
      latent.rank === 4 && latent.shape[1] === this.config.latentChannels,
      `TAESD decoder: latent must be [N, ${this.config.latentChannels}, h, w], got ${shapeString(latent.shape)}`,
    );
    return rec.scope('taesd_decoder', () =>
      rec.engine.tidy(() => {
        let h = latent;
        for (let i = 0; i < this.steps.length; i++) {
          const { layer, module } = this.steps[i]!;
          // A conv followed by the ReLU entry gets the ReLU fused (decoder layers 1-2).
          const fuseRelu = module instanceof TaesdConv && this.steps[i + 1]?.layer.kind === 'relu';
          h = rec.scope(String(layer.index), () => {
            switch (layer.kind) {
              case 'clamp':
                return softClamp3(rec, h);
              case 'relu':
                return relu(rec, h);
              case 'upsample':
                return upsampleNearest2x(rec, h);
              default:
                return module instanceof TaesdConv ? module.forward(rec, h, fuseRelu ? 'relu' : undefined) : module!.forward(rec, h);
            }
          });
          if (fuseRelu) i++;
        }
        return h;
      }),
    );
  }

  /** The final image in [0, 1]: clamp(forward(latent), 0, 1). */
  decodeImage(rec: Recorder, latent: Tensor): Tensor {
    return rec.engine.tidy(() => clamp(rec, this.forward(rec, latent), 0, 1));
  }

  dispose(): void {
    for (const s of this.steps) s.module?.dispose();
  }
}
