// `silo pull`: SILO's released operators (from trained_ckpt.zip, converted into silo-webgpu's cache) and
// the Stable Diffusion prior each one samples with (into the Hugging Face cache), so a later
// `silo restore --task <t>` needs nothing else and no network. Node only.

import { parseArgs } from 'node:util';
import { UsageError } from './usage-error.js';
import { isDegradationTask, DEGRADATION_TASKS } from '../solvers/degradations/tasks.js';
import { selectReleasedOperators } from '../hub/silo-operators.js';
import { pullOperators, siloCacheDir } from '../hub/silo-release-node.js';
import { openHubModel } from '../hub/hub-folder-node.js';
import { downloadPrinter } from './progress.js';

interface IO {
  out(line: string): void;
  err(line: string): void;
}

export const PULL_USAGE = [
  'silo pull (--task <t> [--task <t> ...] | --all) [--method silo-rg|silo-cnn] [--dataset ffhq|coco] [--prior|--no-prior] [--offline]',
  "  --task     a task whose released operator to fetch (repeatable): SILO's choice for it, or --method's",
  `             (tasks: ${DEGRADATION_TASKS.join(', ')}; motion_blur and avgpool4 have none)`,
  '  --all      every operator in the release (with --method / --dataset: those of that method / dataset)',
  '  --method   silo-rg (readout operators) or silo-cnn (CNN operators)',
  '  --dataset  ffhq (face operators, the default choice) or coco where the release has both',
  '  --prior    also fetch the Stable Diffusion prior each operator samples with (default); --no-prior skips it',
  '  --offline  the caches only (also HF_HUB_OFFLINE=1): names what is missing',
  '  the release zip (github.com/ronraphaeli/SILO, release Checkpoints; SILO_RELEASE_URL overrides) is fetched once,',
  '  resumably, into $SILO_CACHE (else $XDG_CACHE_HOME/silo-webgpu, else ~/.cache/silo-webgpu), its sha256 recorded',
  '  (and checked against SILO_RELEASE_SHA256 when set); each operator is converted to what `silo restore` reads.',
  '  The prior goes into the Hugging Face cache (HF_HUB_CACHE / HF_HOME), fp16 weights where the repo has them.',
].join('\n');

export interface PullArgs {
  tasks: string[];
  all: boolean;
  method?: 'silo-rg' | 'silo-cnn';
  dataset?: 'ffhq' | 'coco';
  prior: boolean;
  offline?: boolean;
}

export function parsePullArgs(args: string[]): PullArgs | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        task: { type: 'string', multiple: true },
        all: { type: 'boolean' },
        method: { type: 'string' },
        dataset: { type: 'string' },
        prior: { type: 'boolean' },
        'no-prior': { type: 'boolean' },
        offline: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
      tokens: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  if (v.help) return 'help';
  const seen = new Set<string>();
  for (const t of parsed.tokens) {
    if (t.kind !== 'option' || t.name === 'task') continue;
    if (seen.has(t.name)) throw new UsageError(`--${t.name} given more than once`);
    seen.add(t.name);
  }
  if (parsed.positionals.length) throw new UsageError(`unexpected argument(s) ${parsed.positionals.join(' ')}`);
  const tasks = v.task ?? [];
  if (!tasks.length && !v.all) throw new UsageError('say what to fetch: --task <t> (repeatable) or --all');
  if (tasks.length && v.all) throw new UsageError('--task and --all exclude each other');
  for (const t of tasks) if (!isDegradationTask(t)) throw new UsageError(`--task ${t}: expected one of ${DEGRADATION_TASKS.join(', ')}`);
  if (v.method !== undefined && v.method !== 'silo-rg' && v.method !== 'silo-cnn') {
    throw new UsageError(`--method ${v.method}: expected silo-rg or silo-cnn (latent-dps and psld need no operator, only the prior: silo restore fetches it)`);
  }
  if (v.dataset !== undefined && v.dataset !== 'ffhq' && v.dataset !== 'coco') throw new UsageError(`--dataset ${v.dataset}: expected ffhq or coco`);
  if (v.prior && v['no-prior']) throw new UsageError('--prior and --no-prior exclude each other');
  return { tasks, all: !!v.all, method: v.method as PullArgs['method'], dataset: v.dataset as PullArgs['dataset'], prior: !v['no-prior'], offline: v.offline || undefined };
}

/** Fetches and converts what `a` names; prints what was fetched / converted / found and where. */
export async function runPull(a: PullArgs, io: IO, env: Record<string, string | undefined> = process.env): Promise<number> {
  const rows = selectReleasedOperators({ tasks: a.tasks, all: a.all, method: a.method, dataset: a.dataset });
  const onProgress = downloadPrinter(io, false);
  const { operators, provenance, fetchedBytes } = await pullOperators(rows, { offline: a.offline, env, log: (l) => io.out(l), onProgress });
  const { homedir } = await import('node:os');
  io.out(`release ${provenance.url}: sha256 ${provenance.sha256}, ${provenance.bytes} bytes${fetchedBytes ? `, ${fetchedBytes} fetched now` : ', nothing fetched'}`);
  io.out(`cache ${siloCacheDir(env, env['HOME'] || homedir())}`);
  for (const op of operators) {
    const e = op.entry;
    io.out(`${e.task} ${e.method} (${e.kind}, ${e.dataset}): ${op.operatorPath} [prior ${e.prior}, eta ${e.eta}, clamp ${e.clamp}, prompt "${e.prompt}"]`);
  }
  if (a.prior) {
    for (const prior of [...new Set(rows.map((r) => r.prior))]) {
      const hub = await openHubModel(prior, { offline: a.offline, env, log: (l) => io.out(l), onProgress });
      const p = hub.provenance;
      io.out(`prior ${p.repo}@${p.revision}: commit ${p.commit}, ${p.files.length} files in ${hub.snapshotDir}${p.fetchedBytes ? `, ${p.fetchedBytes} bytes fetched` : ', nothing fetched'}`);
    }
  }
  return 0;
}

export const PULL_COMMAND = {
  summary: "fetch SILO's released operators (and their Stable Diffusion prior) into the caches",
  usage: PULL_USAGE,
  async run(args: string[], io: IO): Promise<number> {
    const a = parsePullArgs(args);
    if (a === 'help') {
      io.out(PULL_USAGE);
      return 0;
    }
    return runPull(a, io);
  },
};
