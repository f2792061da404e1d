import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { BIN } from '../cli/run-cli.js';

/** Real `boxgrid server` processes for the tests (the CLI binary, its own event loop and store). */
export interface Started {
  child: ChildProcessWithoutNullStreams;
  url: string;
  stderr: () => string;
  /** Resolves once stderr matches: output arrives in chunks, so never assume a line is there yet. */
  stderrMatching: (re: RegExp) => Promise<string>;
}

export const children = new Set<ChildProcessWithoutNullStreams>();

/** Starts `boxgrid server` on a free port and resolves once it says where it listens. */
export function startServerProcess(dataDir: string, args: string[] = [], env: Record<string, string> = {}): Promise<Started> {
  const child = spawn(process.execPath, [BIN, 'server', '--data', dataDir, '--listen', '127.0.0.1:0', '--log-level', 'warn', ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: dataDir, ...env },
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let err = '';
  const stderrMatching = (re: RegExp): Promise<string> =>
    new Promise((resolve) => {
      const check = (): void => {
        if (re.test(err)) {
          child.stderr.off('data', check);
          resolve(err);
        }
      };
      child.stderr.on('data', check);
      check();
    });
  child.stderr.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    stderrMatching(/listening on (https?:\/\/\S+)/).then((text) => {
      resolve({ child, url: /listening on (https?:\/\/\S+)/.exec(text)![1]!, stderr: () => err, stderrMatching });
    }, reject);
    child.on('exit', (code) => reject(new Error(`server exited with ${code}: ${err}`)));
  });
}

export function exited(child: ChildProcessWithoutNullStreams): Promise<number | null> {
  return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
}

