/**
 * The child process that runs one exercise of a submission. It receives the
 * probes over IPC, loads the submission, runs the probes and sends the
 * outputs back; the parent judges them. Nothing here sees an expected value.
 *
 * Started by `isolate.ts` as `node --max-old-space-size=… --import tsx
 * child.ts` in an empty temporary directory.
 */
import { register } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { initBackend, parseBackendName } from '../backend/index.js';
import { errorText, runProbe, Submission } from './probe.js';
import type { Probe, ProbeOutput } from './types.js';

/** What the parent sends. */
export interface ChildJob {
  /** The grader's project root, whose TensorFlow.js the submission must share. */
  graderRoot: string;
  /** Absolute paths of the submission's modules, imported in order. */
  modules: string[];
  probes: Probe[];
  /** The backend to run on (`cpu` unless asked otherwise). */
  backend: string;
}

/** What the child sends back: outputs, or why the submission could not load. */
export type ChildReply =
  | { type: 'outputs'; outputs: ProbeOutput[] }
  | { type: 'load-error'; error: string };

/**
 * Makes every `@tensorflow/…` import resolve from the grader's own
 * node_modules. A learner's workspace has its own copy; two copies of
 * TensorFlow.js in one process do not recognise each other's tensors.
 */
const HOOK = `
let parentURL;
export function initialize(data) { parentURL = data.parentURL; }
export async function resolve(specifier, context, next) {
  if (specifier.startsWith('@tensorflow/')) return next(specifier, { ...context, parentURL });
  return next(specifier, context);
}`;

const FUNCTIONS = ['identityBlock', 'convolutionalBlock', 'ResNet50'] as const;

async function loadSubmission(modules: string[]): Promise<Submission> {
  const found: Record<string, unknown> = {};
  for (const file of modules) {
    const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    // An exported function wins over the same name from an earlier module.
    for (const name of FUNCTIONS) if (typeof mod[name] === 'function') found[name] = mod[name];
  }
  return found as Submission;
}

async function run(job: ChildJob): Promise<ChildReply> {
  register(`data:text/javascript,${encodeURIComponent(HOOK)}`, {
    parentURL: pathToFileURL(path.join(job.graderRoot, 'package.json')),
    data: { parentURL: pathToFileURL(path.join(job.graderRoot, 'package.json')).href },
  });
  await initBackend({ backend: parseBackendName(job.backend), log: () => {} });
  let submission: Submission;
  try {
    submission = await loadSubmission(job.modules);
  } catch (error) {
    return { type: 'load-error', error: errorText(error) };
  }
  return { type: 'outputs', outputs: job.probes.map((p) => runProbe(submission, p)) };
}

function send(reply: ChildReply): void {
  // Exit once the reply is out: a submission may leave timers or handles open.
  process.send!(reply, () => process.exit(0));
}

process.once('message', (job: ChildJob) => {
  run(job).then(send, (error: unknown) => send({ type: 'load-error', error: errorText(error) }));
});
