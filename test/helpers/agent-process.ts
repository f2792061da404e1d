import { spawn, type ChildProcess } from 'node:child_process';
import { BIN } from '../cli/run-cli.js';

/** The real `boxgrid agent` as its own process, so that it can be killed for real. */
export class AgentProcess {
  private child: ChildProcess | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);
  output = '';

  constructor(private readonly args: string[]) {}

  start(extra: string[] = []): void {
    const child = spawn(process.execPath, [BIN, 'agent', ...this.args, ...extra], {
      env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (d) => (this.output += d));
    child.stderr!.on('data', (d) => (this.output += d));
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    this.child = child;
  }

  async kill(signal: NodeJS.Signals): Promise<number | null> {
    this.child?.kill(signal);
    return this.exited;
  }
}
