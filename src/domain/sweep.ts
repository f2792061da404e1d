import { invalid } from './errors.js';

/** One sweep dimension: an integer/decimal range or an explicit list of values. */
export type SweepDimension =
  | { from: number; to: number; step?: number }
  | { values: Array<string | number> };

export type SweepSpec = Record<string, SweepDimension>;
export type SweepPoint = Record<string, string | number>;

const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

function dimensionValues(name: string, d: SweepDimension, limit: number): Array<string | number> {
  const field = `sweep/${name}`;
  if ('values' in d) {
    if (d.values.length === 0) throw invalid(field, 'has no values');
    return d.values;
  }
  const step = d.step ?? 1;
  if (!(step > 0) || !Number.isFinite(step)) throw invalid(`${field}/step`, 'must be a positive number');
  if (d.to < d.from) throw invalid(field, `range ends (${d.to}) before it starts (${d.from})`);
  const count = Math.floor((d.to - d.from) / step + 1e-9) + 1;
  if (count > limit) throw invalid(field, `expands to ${count} values, more than the limit of ${limit}`);
  // Multiply rather than accumulate so 0.1 steps do not drift.
  const decimals = Math.max(decimalsOf(d.from), decimalsOf(step));
  return Array.from({ length: count }, (_, i) => Number((d.from + i * step).toFixed(decimals)));
}

/** Digits after the point, also for numbers JavaScript prints in exponent form (1e-8). */
function decimalsOf(n: number): number {
  const [mantissa = '', exponent = '0'] = String(n).split('e');
  const fraction = mantissa.split('.')[1]?.length ?? 0;
  return Math.min(100, Math.max(0, fraction - Number(exponent)));
}

/** Number of points without expanding them, so an oversized sweep is refused before any work. */
export function sweepSize(spec: SweepSpec, limit: number): number {
  let n = 1;
  for (const [name, d] of Object.entries(spec)) {
    n *= dimensionValues(name, d, limit).length;
    if (n > limit) throw invalid('sweep', `expands to more than ${limit} jobs`);
  }
  return n;
}

/** The cartesian product of all dimensions, first dimension varying slowest. */
export function expandSweep(spec: SweepSpec, limit: number): SweepPoint[] {
  const names = Object.keys(spec);
  if (names.length === 0) throw invalid('sweep', 'needs at least one parameter');
  for (const n of names) if (!PARAM_NAME.test(n)) throw invalid(`sweep/${n}`, 'parameter names are letters, digits and _');
  sweepSize(spec, limit);
  let points: SweepPoint[] = [{}];
  for (const name of names) {
    const values = dimensionValues(name, spec[name]!, limit);
    const next: SweepPoint[] = [];
    for (const p of points) for (const v of values) next.push({ ...p, [name]: v });
    points = next;
  }
  return points;
}

/** Replaces `{name}` in a template with the point's value; `{{` and `}}` are literal braces. */
export function substitute(template: string, point: SweepPoint): string {
  return template.replace(/\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (whole, name: string | undefined) => {
    if (whole === '{{') return '{';
    if (whole === '}}') return '}';
    const v = point[name!];
    return v === undefined ? whole : String(v);
  });
}

/** Parses the CLI's `x=1..100`, `x=0..1:0.1` and `y=a,b,c` forms. */
export function parseSweepArg(text: string): [string, SweepDimension] {
  const eq = text.indexOf('=');
  if (eq <= 0) throw invalid('sweep', `"${text}" is not NAME=FROM..TO[:STEP] or NAME=V1,V2,…`);
  const name = text.slice(0, eq);
  const body = text.slice(eq + 1);
  const range = /^(-?\d+(?:\.\d+)?)\.\.(-?\d+(?:\.\d+)?)(?::(\d+(?:\.\d+)?))?$/.exec(body);
  if (range) {
    const d: SweepDimension = { from: Number(range[1]), to: Number(range[2]) };
    if (range[3] !== undefined) d.step = Number(range[3]);
    return [name, d];
  }
  if (body.includes('..')) throw invalid(`sweep/${name}`, `"${body}" is not FROM..TO[:STEP] with numbers and a positive step`);
  const values = body.split(',').map((v) => (/^-?\d+(?:\.\d+)?$/.test(v) ? Number(v) : v));
  if (values.some((v) => v === '')) throw invalid(`sweep/${name}`, 'has an empty value');
  return [name, { values }];
}
