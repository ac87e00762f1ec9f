// `npm run demo`: builds the restoration page (web/) and serves it on 127.0.0.1 (a secure context, so
// WebGPU, OPFS and the Cache API work), printing the address. The tiny test models of ../shared/golden
// are served under /golden/ when that folder exists (the page's "Tiny test models" source), and the
// repository's samples/ under /samples/.
//   npm run demo                         serve on http://127.0.0.1:8080/ (--port N, 0 for any free port)
//   npm run demo -- --out site/          only build the static files into site/ (any web server can serve them)
//   npm run demo -- --golden DIR         serve another folder of tiny models under /golden/
import { createServer } from 'node:http';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundle } from './build.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json',
  '.map': 'application/json', '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.txt': 'text/plain',
};

/** Builds the pages into `outDir`: index.html (main.js, worker.js), train.html (train.js, train-worker.js), style.css (with source maps). */
export async function buildWeb(outDir = join(ROOT, 'dist/web')) {
  mkdirSync(outDir, { recursive: true });
  await bundle('web/main.ts', join(outDir, 'main.js'), 'browser');
  await bundle('web/worker.ts', join(outDir, 'worker.js'), 'browser');
  await bundle('web/train-main.ts', join(outDir, 'train.js'), 'browser');
  await bundle('web/train-worker.ts', join(outDir, 'train-worker.js'), 'browser');
  for (const f of ['index.html', 'train.html', 'style.css']) copyFileSync(join(ROOT, 'web', f), join(outDir, f));
  return outDir;
}

/** A file under `root` for a URL path, or null (no escaping the folder, no directories). */
function fileUnder(root, urlPath) {
  const file = resolve(root, `.${decodeURIComponent(urlPath)}`);
  if (file !== root && !file.startsWith(root + sep)) return null;
  try {
    return statSync(file).isFile() ? file : null;
  } catch {
    return null;
  }
}

/**
 * Serves `site` at /, plus each extra mount ({ '/golden/': dir }), on 127.0.0.1. HEAD is answered;
 * `log` receives each request as "METHOD path status". Returns { url, close }.
 */
export async function serveWeb({ site, mounts = {}, port = 0, log } = {}) {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    let file = null;
    for (const [prefix, dir] of Object.entries(mounts)) {
      if (path.startsWith(prefix)) file = fileUnder(resolve(dir), `/${path.slice(prefix.length)}`);
    }
    if (!file && !Object.keys(mounts).some((p) => path.startsWith(p))) file = fileUnder(resolve(site), path === '/' ? '/index.html' : path);
    const status = file ? 200 : req.method === 'GET' || req.method === 'HEAD' ? 404 : 405;
    log?.(`${req.method} ${path} ${status}`);
    if (!file) return void res.writeHead(status).end();
    const body = readFileSync(file);
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'content-length': body.byteLength, 'cache-control': 'no-cache' });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', ok);
  });
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => new Promise((r) => server.close(() => r())), server };
}

function args(argv) {
  const o = { port: 8080, out: null, golden: join(ROOT, '../shared/golden') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--port') o.port = Number(value());
    else if (a === '--out') o.out = value();
    else if (a === '--golden') o.golden = value();
    else if (a === '--help' || a === '-h') o.help = true;
    else throw new Error(`unknown option ${a} (see npm run demo -- --help)`);
  }
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw new Error(`--port must be 0..65535`);
  return o;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let o;
  try {
    o = args(process.argv.slice(2));
  } catch (e) {
    console.error(`demo: ${e.message}`);
    process.exit(2);
  }
  if (o.help) {
    console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n'));
    process.exit(0);
  }
  if (o.out) {
    const dir = await buildWeb(resolve(o.out));
    console.log(`demo: static page built in ${dir} (serve it over https or from localhost: WebGPU needs a secure context)`);
    process.exit(0);
  }
  const site = await buildWeb();
  const mounts = { '/samples/': join(ROOT, 'samples') };
  if (existsSync(join(o.golden, 'unet_mini/config.json'))) mounts['/golden/'] = o.golden;
  let s;
  try {
    s = await serveWeb({ site, mounts, port: o.port });
  } catch (e) {
    console.error(`demo: cannot listen on 127.0.0.1:${o.port}: ${e.message} (try --port 0 for any free port)`);
    process.exit(1);
  }
  console.log(`silo demo: ${s.url}`);
  console.log(`  training page: ${s.url}train.html (an operator for the TAEF2 of ../shared/golden by default)`);
  console.log(mounts['/golden/'] ? `  tiny test models: ${s.url}golden/ (from ${mounts['/golden/']})` : '  (no tiny test models: ../shared/golden not found; use --golden DIR)');
  console.log('  open it in Chrome or Edge (WebGPU); Ctrl-C stops the server');
}
