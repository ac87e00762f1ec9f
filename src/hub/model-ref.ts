// What `--model` names: a local diffusers folder, a base URL of one, or a Hugging Face repo id
// `org/name[@revision]`. Repo ids are checked with the hub's own rules (huggingface_hub's
// validate_repo_id) so a typo is refused here, before any request. Browser-safe.

import { SiloError } from '../engine/errors.js';

export class HubError extends SiloError {}

/** No answer from the hub at all (refused, DNS, timeout): the cache may still serve. */
export class HubUnreachableError extends HubError {}

export type ModelRef =
  | { kind: 'folder'; path: string }
  | { kind: 'url'; url: string }
  | { kind: 'repo'; repoId: string; revision: string };

// One or two names of word characters, '-' and '.', each starting and ending with a word character
// (the hub's \b...\b), the whole id at most 96 characters.
const REPO_ID = /^(?:\w[\w.-]*\w\/|\w\/)?(?:\w[\w.-]*\w|\w)$/;

/** Throws a HubError naming the id and the rule it breaks. */
export function validateRepoId(id: string): void {
  const bad = (why: string) => new HubError(`"${id}" is not a valid Hugging Face repo id: ${why} (expected "org/name" or "name")`);
  if (id.length === 0) throw bad('it is empty');
  if (id.length > 96) throw bad(`it is ${id.length} characters long, at most 96 are allowed`);
  if ((id.match(/\//g) ?? []).length > 1) throw bad('it has more than one "/"');
  if (id.includes('--') || id.includes('..')) throw bad('"--" and ".." are not allowed');
  if (id.endsWith('.git')) throw bad('it cannot end with ".git"');
  if (!REPO_ID.test(id)) throw bad('only letters, digits, "-", "_" and "." are allowed, and each part must start and end with a letter or digit');
}

/** "./x", "/x", "~/x", "C:\\x": meant as a local path, never a repo id. */
export const looksLikePath = (spec: string): boolean => /^[.~/]/.test(spec) || spec.includes('\\');

/**
 * Parses a model reference. `isDirectory` decides whether a string names an existing local folder
 * (in Node: a stat; in the browser: always false): an existing directory wins over a repo id.
 */
export async function parseModelRef(spec: string, isDirectory: (p: string) => Promise<boolean>): Promise<ModelRef> {
  if (spec.trim() === '') throw new HubError('--model is empty: give a diffusers folder, a URL or a repo id "org/name[@revision]"');
  if (await isDirectory(spec)) return { kind: 'folder', path: spec };
  if (/^https?:\/\//i.test(spec)) return { kind: 'url', url: spec };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) throw new HubError(`--model ${spec}: only http:// and https:// URLs are supported`);
  // Something path-like that does not exist is a missing folder, not a repo id.
  if (looksLikePath(spec)) {
    throw new HubError(`--model ${spec}: no such folder`);
  }
  const at = spec.indexOf('@');
  const repoId = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? 'main' : spec.slice(at + 1);
  if (at >= 0 && revision === '') throw new HubError(`--model ${spec}: empty revision after "@"`);
  validateRepoId(repoId);
  return { kind: 'repo', repoId, revision };
}

/** A full commit hash (what refs/ hold and snapshots/ are named by). */
export const isCommitHash = (s: string): boolean => /^[0-9a-f]{40}$/.test(s);

/** `{endpoint}/{repo}/resolve/{revision}/{path}`: the revision quoted whole ("refs/pr/1" -> "refs%2Fpr%2F1"), the path per segment. */
export function resolveUrl(endpoint: string, repoId: string, revision: string, path: string): string {
  const file = path.split('/').map(encodeURIComponent).join('/');
  return `${endpoint.replace(/\/+$/, '')}/${repoId}/resolve/${encodeURIComponent(revision)}/${file}`;
}

/** The cache folder of a model repo: "models--org--name". */
export const repoFolderName = (repoId: string): string => `models--${repoId.split('/').join('--')}`;

/** An ETag as the cache names blobs: without a weak prefix and without quotes. */
export function normalizeEtag(v: string | null): string | null {
  if (v === null) return null;
  const s = v.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
  return s === '' ? null : s;
}

/** An LFS etag is the file's sha256; a plain file's is its git blob id (40 hex). */
export const isSha256 = (etag: string): boolean => /^[0-9a-f]{64}$/.test(etag);

export interface HubSettings {
  endpoint: string;
  token?: string;
  /** The cache root (Node only). */
  cacheDir?: string;
  /** Where `huggingface-cli login` stored the token (Node only: read when no HF_TOKEN is set). */
  tokenPath?: string;
  offline: boolean;
}

const truthy = (v: string | undefined) => v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.trim().toLowerCase());

/**
 * The settings huggingface_hub reads from the environment: HF_ENDPOINT, HF_TOKEN (else the file
 * `huggingface-cli login` writes: HF_TOKEN_PATH, else $HF_HOME/token), HF_HUB_OFFLINE and the
 * cache root (HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
 * ~/.cache/huggingface/hub; `home` is the user's home folder).
 */
export function hubSettingsFromEnv(env: Record<string, string | undefined>, home?: string): HubSettings {
  const hfHome = env['HF_HOME'] || (env['XDG_CACHE_HOME'] ? `${env['XDG_CACHE_HOME']}/huggingface` : home ? `${home}/.cache/huggingface` : undefined);
  const token = (env['HF_TOKEN'] || env['HUGGING_FACE_HUB_TOKEN'])?.trim(); // the second: older huggingface_hub
  return {
    endpoint: (env['HF_ENDPOINT'] || 'https://huggingface.co').replace(/\/+$/, ''),
    token: token ? token : undefined,
    cacheDir: env['HF_HUB_CACHE'] || (hfHome ? `${hfHome}/hub` : undefined),
    tokenPath: env['HF_TOKEN_PATH'] || (hfHome ? `${hfHome}/token` : undefined),
    offline: truthy(env['HF_HUB_OFFLINE']),
  };
}

/** The user-facing error for a failed hub response. */
export function hubResponseError(
  ctx: { repoId: string; revision: string; endpoint: string; token?: string },
  path: string,
  res: Response,
  /** Where this surface takes a token from (the CLI: HF_TOKEN; the page: 'the Token field'). */
  tokenSetting = 'HF_TOKEN',
): HubError {
  const code = res.headers.get('x-error-code') ?? '';
  const howToken = `${tokenSetting === 'HF_TOKEN' ? 'set HF_TOKEN=hf_...' : `enter a token in ${tokenSetting}`} (a read token from https://huggingface.co/settings/tokens; for a gated repo, accept its terms on the model page first)`;
  // The hub answers an unknown repo, or a private one without a token, alike (401 or 404, RepoNotFound).
  if (code === 'RepoNotFound') {
    return new HubError(`${ctx.repoId}: no such repo on ${ctx.endpoint}, or it is private (HTTP ${res.status}); check the id${ctx.token ? ` and that ${tokenSetting} can read it` : `, and if it is private ${howToken}`}`);
  }
  if (res.status === 401 || res.status === 403) {
    const tok = ctx.token ? `the token in ${tokenSetting} was not accepted for it (does it have read access, and did you accept the terms on the model page?)` : `no token was sent: ${howToken}`;
    return new HubError(`${ctx.repoId}: the repo is gated or private (HTTP ${res.status} for ${path}); ${tok}`);
  }
  if (res.status === 404) {
    if (code === 'RevisionNotFound') return new HubError(`${ctx.repoId}: no revision "${ctx.revision}" (HTTP 404)`);
    return new HubError(`${ctx.repoId}@${ctx.revision}: ${path}: no such file in the repo (HTTP 404)`);
  }
  return new HubError(`${ctx.repoId}@${ctx.revision}: ${path}: HTTP ${res.status} ${res.statusText}`.trim());
}
