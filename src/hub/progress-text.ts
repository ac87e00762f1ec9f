// One line describing a download in progress, for the CLI (and later the web page). Browser-safe.

/** One file's download progress. */
export interface FileProgress {
  file: string;
  bytes: number;
  total: number | null;
  /** Bytes per second over this download so far (resumed bytes not counted). */
  rate: number;
  /** Seconds left at that rate, null when unknown. */
  etaSeconds: number | null;
}
const MB = 1e6;

function fmtSeconds(s: number): string {
  if (s < 60) return `${Math.ceil(s)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** "unet/x.safetensors 41% 12.3/30.0 MB, 5.1 MB/s, ETA 4s" */
export function formatDownloadProgress(p: FileProgress): string {
  const done = (p.bytes / MB).toFixed(1);
  const pct = p.total ? ` ${Math.floor((100 * p.bytes) / p.total)}%` : '';
  const size = p.total ? `${done}/${(p.total / MB).toFixed(1)} MB` : `${done} MB`;
  const eta = p.etaSeconds === null ? '' : `, ETA ${fmtSeconds(p.etaSeconds)}`;
  return `${p.file}${pct} ${size}, ${(p.rate / MB).toFixed(1)} MB/s${eta}`;
}
