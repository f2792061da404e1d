import { invalid } from './errors.js';

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 7 * 86400 };

/** "90", "90s", "30m", "12h", "1d", "2w" → seconds. */
export function parseDurationSeconds(text: string, field: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$/.exec(text);
  if (!m) throw invalid(field, `"${text}" is not a duration (examples: 90s, 30m, 12h, 1d, 2w)`);
  const seconds = Math.round(Number(m[1]) * UNIT_SECONDS[m[2] || 's']!);
  if (seconds <= 0) throw invalid(field, `"${text}" is not a positive duration`);
  return seconds;
}
