// SILO's CNN latent operator, `DegradationModel` of silo_utils.py (LayerNorm variant, as sampled):
//   sigma_map = Linear(32 -> 64*64)(LeakyReLU(Linear(1280 -> 32)(sigma_emb))) reshaped B x 1 x 64 x 64
//   x         = cat(z, sigma_map)                                       (when sigma_condition)
//   encoded   = 4 x [conv3x3 -> LayerNorm([C, 64, 64]) -> ReLU]        C+s: 16+s, 32+s, 64+s, 128
//   decoded   = 3 x [convT3x3 (stride 1, pad 1) -> LayerNorm -> ReLU]  128 -> 64 -> 32 -> 16
//   adjusted  = ReLU(LayerNorm(conv1x1(cat(encoded, sigma_map))))       128+s -> 16
//   output    = conv3x3(ReLU(LayerNorm(conv3x3(decoded + adjusted))))   16 -> 16 -> output_dim
// Hidden widths are SILO's times config.width (our extension; 1 is SILO's module).
// The LayerNorms' affine parameters are per element of [C, 64, 64], so only 64x64 latents are accepted.
// The sigma map is NOT normalised here (unlike the readout operator's).

import type { Recorder } from '../../engine/recorder.js';
import type { Tensor } from '../../engine/tensor.js';
import { assertArg } from '../../engine/errors.js';
import { shapeString } from '../../engine/dtype.js';
import { add, relu } from '../../engine/ops/elementwise.js';
import { concatChannels } from '../../engine/ops/layout.js';
import { Conv2d, ConvTranspose2d, LayerNorm, Linear } from '../layers.js';
import type { WeightLoader } from '../weights.js';
import type { DegradationModelConfig } from './config.js';

/** conv -> LayerNorm([C, H, W]) -> ReLU, the repeating unit of every Sequential in DegradationModel. */
class ConvLayerNorm {
  constructor(
    readonly conv: Conv2d | ConvTranspose2d,
    readonly norm: LayerNorm,
    /** The state-dict prefixes of the conv and the norm ("encoder.0", "encoder.1"). */
    readonly names: [string, string],
  ) {}
  forward(rec: Recorder, x: Tensor): Tensor {
    return rec.engine.tidy(() => relu(rec, this.norm.forward(rec, this.conv.forward(rec, x))));
  }
}

export interface DegradationDebug {
  output: Tensor;
  /** The sigma map (B x 1 x 64 x 64), golden `debug.sigma_map`. */
  sigmaMap?: Tensor;
}

export class DegradationModel {
  readonly sigmaPre0?: Linear;
  readonly sigmaPre2?: Linear;
  readonly encoder: ConvLayerNorm[] = [];
  readonly decoder: ConvLayerNorm[] = [];
  readonly adjustEncoding: ConvLayerNorm;
  readonly processing0: ConvLayerNorm;
  readonly processing3: Conv2d;

  constructor(
    w: WeightLoader,
    readonly config: DegradationModelConfig,
  ) {
    const s = config.sigmaCondition ? 1 : 0;
    const hw = config.latentSize;
    const ln = (name: string, c: number) => new LayerNorm(w, name, [c, hw, hw]);
    if (config.sigmaCondition) {
      this.sigmaPre0 = new Linear(w, 'sigma_condition_precondition.0', config.sigmaEmbDim, config.sigmaHidden);
      this.sigmaPre2 = new Linear(w, 'sigma_condition_precondition.2', config.sigmaHidden, hw * hw);
    }
    // nn.Sequential indices: conv i, norm i+1, ReLU i+2 (no parameters).
    const w16 = 16 * config.width;
    const enc = [config.latentDim + s, w16 + s, 2 * w16 + s, 4 * w16 + s, 8 * w16];
    for (let i = 0; i < 4; i++) {
      const conv = new Conv2d(w, `encoder.${3 * i}`, enc[i]!, enc[i + 1]!, 3, { padding: 1 });
      this.encoder.push(new ConvLayerNorm(conv, ln(`encoder.${3 * i + 1}`, enc[i + 1]!), [`encoder.${3 * i}`, `encoder.${3 * i + 1}`]));
    }
    const dec = [8 * w16, 4 * w16, 2 * w16, w16];
    for (let i = 0; i < 3; i++) {
      const conv = new ConvTranspose2d(w, `decoder.${3 * i}`, dec[i]!, dec[i + 1]!, 3, { stride: 1, padding: 1 });
      this.decoder.push(new ConvLayerNorm(conv, ln(`decoder.${3 * i + 1}`, dec[i + 1]!), [`decoder.${3 * i}`, `decoder.${3 * i + 1}`]));
    }
    this.adjustEncoding = new ConvLayerNorm(new Conv2d(w, 'adjust_encoding.0', 8 * w16 + s, w16, 1), ln('adjust_encoding.1', w16), ['adjust_encoding.0', 'adjust_encoding.1']);
    this.processing0 = new ConvLayerNorm(new Conv2d(w, 'processing.0', w16, w16, 3, { padding: 1 }), ln('processing.1', w16), ['processing.0', 'processing.1']);
    this.processing3 = new Conv2d(w, 'processing.3', w16, config.outputDim, 3, { padding: 1 });
  }

  /** Every trainable tensor with its state-dict name, in the state dict's order (torch's model.parameters()). */
  parameters(): { name: string; tensor: Tensor; transposed?: boolean }[] {
    const out: { name: string; tensor: Tensor; transposed?: boolean }[] = [];
    const both = (name: string, l: { weight: Tensor; bias?: Tensor; transposed?: boolean }) => {
      out.push({ name: `${name}.weight`, tensor: l.weight, ...(l.transposed ? { transposed: true } : {}) });
      if (l.bias) out.push({ name: `${name}.bias`, tensor: l.bias });
    };
    if (this.sigmaPre0) both('sigma_condition_precondition.0', this.sigmaPre0);
    if (this.sigmaPre2) both('sigma_condition_precondition.2', this.sigmaPre2);
    for (const u of [...this.encoder, ...this.decoder, this.adjustEncoding]) {
      both(u.names[0], u.conv);
      both(u.names[1], u.norm);
    }
    both(this.processing0.names[0], this.processing0.conv);
    both(this.processing0.names[1], this.processing0.norm);
    both('processing.3', this.processing3);
    return out;
  }

  /** sigma_condition_precondition(sigma_emb) reshaped to B x 1 x 64 x 64. */
  sigmaMap(rec: Recorder, sigmaEmb: Tensor): Tensor {
    const { sigmaEmbDim, latentSize } = this.config;
    assertArg(this.sigmaPre0 && this.sigmaPre2, 'DegradationModel: built without sigma_condition, it takes no sigma embedding');
    assertArg(
      sigmaEmb.rank === 2 && sigmaEmb.shape[1] === sigmaEmbDim,
      `DegradationModel: sigma_emb must be [B, ${sigmaEmbDim}] (the UNet time embedding at sigmaTimestep(sigma)), got ${shapeString(sigmaEmb.shape)}`,
    );
    return rec.scope('sigma_condition_precondition', () =>
      rec.engine.tidy(() => {
        const h = this.sigmaPre0!.forward(rec, sigmaEmb, 'leaky_relu'); // nn.LeakyReLU default slope 0.01
        const m = this.sigmaPre2!.forward(rec, h);
        return m.reshape([sigmaEmb.shape[0]!, 1, latentSize, latentSize]);
      }),
    );
  }

  /** w_hat = H(z, e_sigma): z [B, latent_dim, 64, 64], sigmaEmb [B, 1280] (omit without sigma_condition). */
  forward(rec: Recorder, z: Tensor, sigmaEmb?: Tensor): Tensor {
    return this.run(rec, z, sigmaEmb, false).output;
  }

  /** forward plus the intermediate the golden case checks. */
  forwardWithDebug(rec: Recorder, z: Tensor, sigmaEmb?: Tensor): DegradationDebug {
    return this.run(rec, z, sigmaEmb, true);
  }

  private run(rec: Recorder, z: Tensor, sigmaEmb: Tensor | undefined, debug: boolean): DegradationDebug {
    const { latentDim, latentSize, sigmaCondition } = this.config;
    assertArg(
      z.rank === 4 && z.shape[1] === latentDim && z.shape[2] === latentSize && z.shape[3] === latentSize,
      `DegradationModel: z must be [B, ${latentDim}, ${latentSize}, ${latentSize}] (LayerNorm([C, ${latentSize}, ${latentSize}]) fixes the size), got ${shapeString(z.shape)}`,
    );
    if (sigmaCondition) {
      assertArg(sigmaEmb, 'DegradationModel: this operator is sigma-conditioned and needs sigma_emb');
      assertArg(sigmaEmb.shape[0] === z.shape[0], `DegradationModel: batch of sigma_emb ${shapeString(sigmaEmb.shape)} differs from z ${shapeString(z.shape)}`);
    } else {
      assertArg(!sigmaEmb, 'DegradationModel: built without sigma_condition, it takes no sigma embedding');
    }
    return rec.scope('silo_cnn', () =>
      rec.engine.tidy(() => {
        const sigmaMap = sigmaEmb ? this.sigmaMap(rec, sigmaEmb) : undefined;
        let encoded = sigmaMap ? concatChannels(rec, [z, sigmaMap]) : z;
        rec.scope('encoder', () => {
          for (const layer of this.encoder) encoded = layer.forward(rec, encoded);
        });
        let decoded = encoded;
        rec.scope('decoder', () => {
          for (const layer of this.decoder) decoded = layer.forward(rec, decoded);
        });
        const skipIn = sigmaMap ? concatChannels(rec, [encoded, sigmaMap]) : encoded;
        const adjusted = rec.scope('adjust_encoding', () => this.adjustEncoding.forward(rec, skipIn));
        const output = rec.scope('processing', () =>
          this.processing3.forward(rec, this.processing0.forward(rec, add(rec, decoded, adjusted))),
        );
        return debug ? { output, sigmaMap } : { output };
      }),
    );
  }
}
