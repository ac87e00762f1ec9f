// transformers' CLIPTextConfig (a diffusers pipeline's text_encoder/config.json), checked: every value
// this implementation cannot run is rejected with its name, never silently ignored.

import { SiloError } from '../../engine/errors.js';
import type { Activation } from '../../engine/ops/elementwise.js';

export class ClipConfigError extends SiloError {}

export interface ClipTextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  /** The engine activation for transformers' hidden_act. */
  hiddenAct: Activation;
  layerNormEps: number;
  /**
   * transformers pools at argmax(input_ids) when eos_token_id is 2 (the value of configs written
   * before it was fixed, SD-1.x's included: argmax finds the first <|endoftext|>, the largest id), and
   * at the first eos_token_id otherwise.
   */
  eosTokenId: number;
}

/** transformers' ACT2FN names -> the engine's fused activations. */
const ACTIVATIONS: Record<string, Activation> = {
  quick_gelu: 'quick_gelu',
  gelu: 'gelu',
  gelu_new: 'gelu_tanh',
  gelu_pytorch_tanh: 'gelu_tanh',
};

type Json = Record<string, unknown>;

/** Parses a CLIPTextConfig object (or a full CLIPConfig, whose text_config is used); `where` names it in errors. */
export function parseClipTextConfig(raw: unknown, where = 'CLIP text config'): ClipTextConfig {
  const fail = (msg: string): never => {
    throw new ClipConfigError(`${where}: ${msg}`);
  };
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) fail('not a JSON object');
  let cfg = raw as Json;
  if (cfg['model_type'] === 'clip') {
    const text = cfg['text_config'];
    if (!text || typeof text !== 'object') fail('a CLIPConfig without "text_config"');
    cfg = text as Json;
  }
  const posInt = (key: string, dflt?: number): number => {
    const v = cfg[key] ?? dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail(`"${key}" must be a positive integer, got ${JSON.stringify(cfg[key])}`);
    return v as number;
  };
  const act = String(cfg['hidden_act'] ?? 'quick_gelu');
  const hiddenAct = ACTIVATIONS[act] ?? fail(`hidden_act "${act}" is not supported (supported: ${Object.keys(ACTIVATIONS).join(', ')})`);
  const eps = cfg['layer_norm_eps'] ?? 1e-5;
  if (typeof eps !== 'number' || !(eps > 0)) fail(`"layer_norm_eps" must be a positive number, got ${JSON.stringify(eps)}`);
  const eos = cfg['eos_token_id'] ?? 49407; // CLIPTextConfig's default
  if (typeof eos !== 'number' || !Number.isInteger(eos) || eos < 0) fail(`"eos_token_id" must be an integer >= 0, got ${JSON.stringify(eos)}`);
  const config: ClipTextConfig = {
    vocabSize: posInt('vocab_size', 49408),
    hiddenSize: posInt('hidden_size', 512),
    intermediateSize: posInt('intermediate_size', 2048),
    numHiddenLayers: posInt('num_hidden_layers', 12),
    numAttentionHeads: posInt('num_attention_heads', 8),
    maxPositionEmbeddings: posInt('max_position_embeddings', 77),
    hiddenAct,
    layerNormEps: eps as number,
    eosTokenId: eos as number,
  };
  if (config.hiddenSize % config.numAttentionHeads !== 0) {
    fail(`hidden_size ${config.hiddenSize} is not divisible by num_attention_heads ${config.numAttentionHeads}`);
  }
  return config;
}
