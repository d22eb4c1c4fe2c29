/**
 * Runs one exercise of a submission in a child process with a time limit
 * and a memory limit, and returns what came back or why nothing did.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import type { ChildJob, ChildReply } from './child.js';

/** The limits of one child. */
export interface ChildLimits {
  /** Wall-clock limit, start-up included, in milliseconds. */
  timeoutMs: number;
  /** V8's old-space limit (`--max-old-space-size`), in MiB. */
  maxOldSpaceMb: number;
  /**
   * Resident memory limit in MiB, watched from outside: tensors live in
   * array buffers, which the old-space limit does not count.
   */
  maxRssMb: number;
}

/** A child's result: the reply, or a sentence for the learner saying why none came. */
export interface ChildRun {
  reply?: ChildReply;
  failure?: string;
  durationMs: number;
  /** The end of the child's stdout and stderr, for the teacher. */
  log: string;
}

const LOG_LIMIT = 4000;
const WATCH_INTERVAL_MS = 100;

/** The module `node --import tsx` loads, found from the grader's own node_modules. */
function tsxLoader(graderRoot: string): string {
  const require = createRequire(path.join(graderRoot, 'package.json'));
  const manifest = require.resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { exports: Record<string, unknown> };
  const exports = pkg.exports['.'];
  return pathToFileURL(path.join(path.dirname(manifest), String(exports))).href;
}

/** Resident memory of a process in MiB (Linux), or undefined where unknown. */
function rssMb(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /VmRSS:\s+(\d+) kB/.exec(status);
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Kills the child and anything it started (it leads its own process group). */
function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // The group is already gone.
  }
}

/**
 * Starts the child in a fresh temporary directory, sends it the job, and
 * waits for its reply, its exit, the time limit or the memory limit.
 */
export function runChild(job: ChildJob, limits: ChildLimits, exercise: string): Promise<ChildRun> {
  const started = Date.now();
  const cwd = mkdtempSync(path.join(os.tmpdir(), 'resnet-grade-'));
  const childFile = path.join(job.graderRoot, 'src', 'grader', 'child.ts');
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = spawn(
    process.execPath,
    [
      `--max-old-space-size=${limits.maxOldSpaceMb}`,
      '--import',
      tsxLoader(job.graderRoot),
      childFile,
    ],
    {
      cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'advanced',
      detached: true,
    },
  );
  let log = '';
  const keep = (chunk: Buffer) => {
    log = (log + chunk.toString('utf8')).slice(-LOG_LIMIT);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);

  return new Promise<ChildRun>((resolve) => {
    let reply: ChildReply | undefined;
    let killedFor: string | undefined;
    const stop = (why: string) => {
      if (killedFor === undefined) killedFor = why;
      killGroup(child);
    };
    const timer = setTimeout(
      () =>
        stop(
          `your ${exercise} did not finish within ${Math.round(limits.timeoutMs / 1000)} s and ` +
            'was stopped: look for a loop that never ends, or work far larger than a block needs.',
        ),
      limits.timeoutMs,
    );
    const watch = setInterval(() => {
      const rss = child.pid === undefined ? undefined : rssMb(child.pid);
      if (rss !== undefined && rss > limits.maxRssMb) {
        stop(
          `your ${exercise} used more than ${limits.maxRssMb} MiB of memory and was stopped: ` +
            'look for tensors made in a loop and never disposed, or a far too large tensor.',
        );
      }
    }, WATCH_INTERVAL_MS);

    child.on('message', (message: ChildReply) => {
      if (reply === undefined) reply = message;
    });
    child.on('error', (error) => stop(`the grader could not start a process: ${error.message}`));
    let exit: [number | null, NodeJS.Signals | null] = [null, null];
    let finished = false;
    child.on('exit', (code, signal) => {
      exit = [code, signal];
      clearTimeout(timer);
      clearInterval(watch);
      killGroup(child); // anything the submission left running
      // 'close' follows once the output pipes are drained; a process that
      // escaped the group could hold them open, so do not wait for ever.
      setTimeout(finish, 2000).unref();
    });
    child.on('close', () => finish());

    function finish(): void {
      if (finished) return;
      finished = true;
      const [code, signal] = exit;
      rmSync(cwd, { recursive: true, force: true });
      const run: ChildRun = { durationMs: Date.now() - started, log };
      if (killedFor !== undefined) {
        run.failure = killedFor;
      } else if (reply !== undefined) {
        run.reply = reply;
      } else if (/heap out of memory|Allocation failed|Array buffer allocation failed/i.test(log)) {
        run.failure =
          `your ${exercise} ran out of memory (over ${limits.maxOldSpaceMb} MiB of JavaScript ` +
          'heap) and was stopped: look for arrays or tensors that grow without end.';
      } else {
        run.failure =
          `your ${exercise} ended the process (exit code ${code ?? 'none'}` +
          `${signal ? `, signal ${signal}` : ''}) before it returned: remove any ` +
          '`process.exit` and look at the last lines it printed.';
      }
      resolve(run);
    }
    child.send(job);
  });
}
