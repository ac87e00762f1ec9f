#!/usr/bin/env node
// The `silo` command line. Subcommands live in one table (name -> summary, usage, run) so new ones
// are one entry each; `main` is exported so tests run it in-process.

import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { SiloError } from '../engine/errors.js';
import { runConvert, type FloatTarget } from './convert.js';
import { PULL_COMMAND } from './pull.js';
import { runCheck } from './check.js';
import { RUNNERS } from '../check/registry.js';
import { UsageError } from './usage-error.js';
import { parseNumberArg } from './numbers.js';
import { parseRestoreArgs, runRestore, RESTORE_OPTIONS, RESTORE_USAGE } from './restore.js';
import { runRestoreBatch } from './restore-batch.js';
import { parseTuneArgs, runTune, TUNE_USAGE } from './tune.js';
import { parseTrainArgs, runTrain, TRAIN_OPTIONS, TRAIN_USAGE } from './train.js';

export interface CliIO {
  out(line: string): void;
  err(line: string): void;
}

export interface Subcommand {
  summary: string;
  usage: string;
  /** Returns the exit code; throws SiloError for failures the user should read (exit code 1). */
  run(args: string[], io: CliIO): Promise<number>;
}

/** Bad arguments: the message and the subcommand's usage are printed, exit code 2. */
export { UsageError };

const consoleIO: CliIO = { out: (l) => console.log(l), err: (l) => console.error(l) };

function options<T extends Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>>(args: string[], spec: T) {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...spec, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true, tokens: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  // parseArgs keeps the last of a repeated flag; '--steps 10 ... --steps 1000' is more likely a mistake.
  const seen = new Set<string>();
  for (const t of parsed.tokens) {
    if (t.kind !== 'option' || spec[t.name]?.multiple) continue;
    if (seen.has(t.name)) throw new UsageError(`--${t.name} given more than once`);
    seen.add(t.name);
  }
  return { values: parsed.values, positionals: parsed.positionals };
}

export const SUBCOMMANDS: Record<string, Subcommand> = {
  check: {
    summary: 'run golden case folders and compare every output tensor with its tolerance',
    usage: [
      'silo check <case-dir>... [--dtype f32|f16] [--kind unet|vae|clip|taesd|silo_cnn|silo_rg|schedulers|degradations|silo_step|dps_step] [--verbose]',
      '  case folders in ../shared/golden format (manifest.json, config, weights, golden.safetensors)',
      '  --dtype    f16: model cases run weights and activations in f16; the guided-step cases (silo_step, dps_step)',
      '             run mixed precision, f16 weights with f32 activations and gradients (needs shader-f16; looser tolerances)',
      '  --kind     which module the folder tests, when it cannot be recognised',
      '  exit status 1 when any tensor is out of tolerance or a case cannot run',
    ].join('\n'),
    async run(args, io) {
      const { values, positionals } = options(args, { dtype: { type: 'string' }, kind: { type: 'string' }, verbose: { type: 'boolean', short: 'v' } });
      if (values.help) {
        io.out(SUBCOMMANDS.check!.usage);
        return 0;
      }
      if (!positionals.length) throw new UsageError('expected at least one case folder');
      if (values.dtype !== undefined && values.dtype !== 'f32' && values.dtype !== 'f16') throw new UsageError(`--dtype ${values.dtype}: expected f32 or f16`);
      // Checked before the GPU starts and before any folder is read (check has no numeric flags).
      if (values.kind !== undefined && !Object.hasOwn(RUNNERS, values.kind)) throw new UsageError(`--kind ${values.kind}: expected one of ${Object.keys(RUNNERS).join(', ')}`);
      return runCheck(positionals, { dtype: values.dtype as 'f32' | 'f16' | undefined, kind: values.kind, verbose: values.verbose }, io);
    },
  },
  restore: {
    summary: 'restore a degraded image with SILO (CNN or readout operator), Latent-DPS or PSLD',
    usage: RESTORE_USAGE,
    async run(args, io) {
      const { values, positionals } = options(args, RESTORE_OPTIONS);
      if (values.help) {
        io.out(SUBCOMMANDS.restore!.usage);
        return 0;
      }
      // One positional: the measurement (as --input).
      if (positionals.length > 1) throw new UsageError(`unexpected argument(s) ${positionals.slice(1).join(' ')}: give one image to restore`);
      if (positionals.length && values.input !== undefined) throw new UsageError(`${positionals[0]} and --input ${values.input}: give the measurement once`);
      let parsed;
      try {
        parsed = parseRestoreArgs(positionals.length ? { ...values, input: positionals[0] } : values);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      return parsed.batch ? runRestoreBatch({ ...parsed, batch: parsed.batch }, io) : runRestore(parsed, io);
    },
  },
  pull: PULL_COMMAND,
  tune: {
    summary: "measure kernel variants of SD-1.5's UNet on this adapter and keep the fastest (read by restore)",
    usage: TUNE_USAGE,
    async run(args, io) {
      const { values, positionals } = options(args, { latent: { type: 'string' }, batch: { type: 'string' }, reps: { type: 'string' }, out: { type: 'string' } });
      if (values.help) {
        io.out(SUBCOMMANDS.tune!.usage);
        return 0;
      }
      if (positionals.length) throw new UsageError(`unexpected argument(s) ${positionals.join(' ')}`);
      return runTune(parseTuneArgs(values), io);
    },
  },
  train: {
    summary: "train SILO's CNN latent operator for an autoencoder and a degradation on your images",
    usage: TRAIN_USAGE,
    async run(args, io) {
      const { values, positionals } = options(args, TRAIN_OPTIONS);
      if (values.help) {
        io.out(SUBCOMMANDS.train!.usage);
        return 0;
      }
      if (positionals.length) throw new UsageError(`unexpected argument(s) ${positionals.join(' ')} (training images go after --data)`);
      return runTrain(parseTrainArgs(values), io);
    },
  },
  convert: {
    summary: 'convert a PyTorch checkpoint (.pt/.pth/.ckpt) to .safetensors without executing it',
    usage: [
      'silo convert <in.pt> <out.safetensors|out-folder> [--key <path>] [--dtype f32|f16|bf16] [--overflow error|saturate|inf] [--allow-nonfinite]\n' +
        '             [--max-tensor-bytes N] [--allow-expanded] [--no-crc]',
      '  --key              where the state dict sits, "/"-separated (e.g. state_dict); found automatically if omitted',
      '  --dtype            cast floating-point tensors (integer and bool tensors are kept)',
      '  --overflow         finite values too large for --dtype (f16: beyond ±65504): error (default) refuses and names',
      '                     each tensor; saturate clamps them to the largest finite value; inf writes ±inf. Both print them',
      '  --allow-nonfinite  convert tensors that already hold NaN or Inf (default: refuse, naming them)',
      '  --max-tensor-bytes bytes the tensors may declare in all (default 4x the file size): a tiny file cannot',
      '                     claim gigabytes; raise it for a genuine checkpoint that stores less than its tensors',
      '  --allow-expanded   write expanded (stride-0) views with their data repeated (default: refuse, naming them)',
      '  --no-crc           skip the zip CRC-32 checks',
      '  a SILO readout checkpoint ({step, config, aggregation_network, optimizer_state_dict}) becomes a folder:',
      '                     <out>/config.json + <out>/weights.safetensors (what restore --method silo-rg --operator reads);',
      '                     the optimizer state is left out; --key aggregation_network writes the bare weights file instead',
      '  the output is written beside <out> and renamed into place only when complete',
    ].join('\n'),
    async run(args, io) {
      const { values, positionals } = options(args, {
        key: { type: 'string' },
        dtype: { type: 'string' },
        overflow: { type: 'string' },
        'allow-nonfinite': { type: 'boolean' },
        'max-tensor-bytes': { type: 'string' },
        'allow-expanded': { type: 'boolean' },
        'no-crc': { type: 'boolean' },
      });
      if (values.help) {
        io.out(SUBCOMMANDS.convert!.usage);
        return 0;
      }
      if (positionals.length !== 2) throw new UsageError(`expected an input and an output path, got ${positionals.length} argument(s)`);
      const dtype = values.dtype?.toUpperCase();
      if (dtype !== undefined && dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new UsageError(`--dtype ${values.dtype}: expected f32, f16 or bf16`);
      const overflow = values.overflow ?? 'error';
      if (overflow !== 'error' && overflow !== 'saturate' && overflow !== 'inf') throw new UsageError(`--overflow ${overflow}: expected error, saturate or inf`);
      const [input, output] = positionals as [string, string];
      return runConvert(input, output, {
        keyPath: values.key,
        dtype: dtype as FloatTarget | undefined,
        overflow,
        allowNonfinite: values['allow-nonfinite'],
        verifyCrc: !values['no-crc'],
        maxTensorBytes: values['max-tensor-bytes'] === undefined ? undefined : parseConvertNumber('max-tensor-bytes', values['max-tensor-bytes']),
        allowExpanded: values['allow-expanded'],
      }, io);
    },
  },
};

/** A byte count for convert; a bad spelling is a usage error (exit 2). */
function parseConvertNumber(flag: string, text: string): number {
  try {
    return parseNumberArg(flag, text, { integer: true, min: 1, what: 'a byte count' });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function help(): string {
  const width = Math.max(...Object.keys(SUBCOMMANDS).map((k) => k.length));
  return ['usage: silo <command> [arguments]', '', 'commands:', ...Object.entries(SUBCOMMANDS).map(([k, c]) => `  ${k.padEnd(width)}  ${c.summary}`), '', "'silo <command> --help' describes one command."].join('\n');
}

/** Runs one command line (without the program name); returns the exit code. */
export async function main(argv: string[], io: CliIO = consoleIO): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    (name === undefined ? io.err : io.out)(help());
    return name === undefined ? 2 : 0;
  }
  const cmd = SUBCOMMANDS[name];
  if (!cmd) {
    io.err(`silo: unknown command "${name}"\n\n${help()}`);
    return 2;
  }
  try {
    return await cmd.run(rest, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`silo ${name}: ${e.message}\nusage: ${cmd.usage}`);
      return 2;
    }
    if (e instanceof SiloError) {
      io.err(`silo ${name}: ${e.message}`);
      return 1;
    }
    io.err(`silo ${name}: unexpected error: ${(e as Error).stack ?? String(e)}`);
    return 1;
  }
}

// Run when executed directly (node dist/silo.mjs, or the npm bin link to it), not when imported.
function invokedDirectly(): boolean {
  try {
    return !!process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}
if (invokedDirectly()) process.exitCode = await main(process.argv.slice(2));
