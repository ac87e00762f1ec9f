// The training curve as a small standalone SVG (no dependencies, for the CLI's output folder, the page
// and docs): the step losses (faint), their running mean over a window, and the held-out latent L1 of
// the operator with the identity operator's as a dashed reference line. Also the loss history as CSV.

import type { StepReport, ValidationReport } from './trainer.js';

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

export function lossCsv(steps: readonly StepReport[]): string {
  return ['step,loss,lr,sigma', ...steps.map((s) => `${s.step},${s.loss},${s.lr},${s.sigmas[0] ?? ''}`)].join('\n') + '\n';
}

export function curveSvg(steps: readonly StepReport[], validations: readonly ValidationReport[], title = 'training'): string {
  const W = 640;
  const H = 360;
  const [l, r, t, b] = [60, 20, 30, 40];
  const window = Math.max(1, Math.round(steps.length / 50));
  const smooth = steps.map((_, i) => {
    const from = Math.max(0, i - window + 1);
    const part = steps.slice(from, i + 1);
    return part.reduce((a, s) => a + s.loss, 0) / part.length;
  });
  const ys = [...steps.map((s) => s.loss), ...validations.flatMap((v) => [v.latentL1, v.identityL1])].filter(Number.isFinite);
  const maxStep = Math.max(1, ...steps.map((s) => s.step), ...validations.map((v) => v.step));
  const yMax = ys.length ? Math.max(...ys) * 1.05 : 1;
  const x = (step: number) => l + ((W - l - r) * step) / maxStep;
  const y = (v: number) => t + (H - t - b) * (1 - v / yMax);
  const line = (pts: [number, number][], style: string) => (pts.length ? `<polyline fill="none" ${style} points="${pts.map(([a, c]) => `${a.toFixed(1)},${c.toFixed(1)}`).join(' ')}"/>` : '');
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = yMax * f;
    return `<line x1="${l}" x2="${W - r}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/><text x="${l - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" font-size="11">${v.toPrecision(3)}</text>`;
  });
  const last = validations[validations.length - 1];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    ...ticks,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="13">${esc(title)}</text>`,
    `<text x="${W / 2}" y="${H - 8}" text-anchor="middle" font-size="11">optimizer step (max ${maxStep})</text>`,
    line(steps.map((s) => [x(s.step), y(s.loss)]), 'stroke="#9ecae1" stroke-width="1"'),
    line(steps.map((s, i) => [x(s.step), y(smooth[i]!)]), 'stroke="#08519c" stroke-width="2"'),
    line(validations.map((v) => [x(v.step), y(v.identityL1)]), 'stroke="#888" stroke-dasharray="5,4" stroke-width="1.5"'),
    line(validations.map((v) => [x(v.step), y(v.latentL1)]), 'stroke="#d94801" stroke-width="2"'),
    ...validations.map((v) => `<circle cx="${x(v.step).toFixed(1)}" cy="${y(v.latentL1).toFixed(1)}" r="3" fill="#d94801"/>`),
    line(validations.filter((v) => v.roundTripL1 !== undefined).map((v) => [x(v.step), y(v.roundTripL1!)]), 'stroke="#31a354" stroke-dasharray="2,3" stroke-width="1.5"'),
    `<g font-size="11"><text x="${l + 10}" y="${t + 14}" fill="#08519c">training loss (running mean of ${window})</text>`,
    validations.length ? `<text x="${l + 10}" y="${t + 28}" fill="#d94801">held-out latent L1${last ? `: ${last.latentL1.toPrecision(4)}` : ''}</text><text x="${l + 10}" y="${t + 42}" fill="#666">identity operator${last ? `: ${last.identityL1.toPrecision(4)}` : ''}</text>` : '',
    last?.roundTripL1 !== undefined ? `<text x="${l + 10}" y="${t + 56}" fill="#31a354">through the autoencoder, E(A(D(E(x)))): ${last.roundTripL1.toPrecision(4)}</text>` : '',
    '</g></svg>',
  ].join('\n');
}
