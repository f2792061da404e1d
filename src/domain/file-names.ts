/**
 * Names of task output files, as the agent uploads them and the server accepts them: plain
 * file names (letters, digits, ".", "_", "-"), never "." or "..", no directories, so that no
 * name can walk out of the directory it is saved to.
 */
export const OUTPUT_NAME_RE = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,255}$/;

export function isOutputName(name: string): boolean {
  return OUTPUT_NAME_RE.test(name);
}
