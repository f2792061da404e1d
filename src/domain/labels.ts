import { invalid } from './errors.js';

/** Label keys of jobs, batches and hosts alike (and so of selectors, which match one against the other). */
const LABEL_KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;

/** Throws `invalid` naming `<field>/<key>` for the first key that is not a label key. */
export function checkLabelKeys(labels: Record<string, string>, field: string): void {
  for (const k in labels) if (!LABEL_KEY_RE.test(k)) throw invalid(`${field}/${k}`, 'label keys are letters, digits, ".", "_", "/" and "-" (at most 63)');
}
