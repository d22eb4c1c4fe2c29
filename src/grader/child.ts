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
 * Module resolution for submissions, as a `node:module` hook:
 *
 * - every `@tensorflow/…` import resolves from the grader's own
 *   node_modules. A learner's workspace has its own copy; two copies of
 *   TensorFlow.js in one process do not recognise each other's tensors; a
 *   single file saved outside the project has none at all.
 * - a relative import of the project's own modules (`../src/initializers.js`,
 *   `../../src/blocks.js`: `./` and `../` steps, then `src/…`) that finds no
 *   file beside the submission resolves to the grader's `src/…`, so a file
 *   written in the project and saved elsewhere still loads. A file that does
 *   exist beside the submission always wins (a learner workspace's own src/).
 * - a TypeScript file outside any `"type": "module"` package (a single
 *   file in /tmp) is loaded as an ES module, as it is written, not compiled
 *   to CommonJS, whose `require` these rules would not reach.
 */
const HOOK = `
let parentURL;
export function initialize(data) { parentURL = data.parentURL; }
const PROJECT = /^(?:\\.\\.?\\/)+(src\\/.+)$/;
export async function resolve(specifier, context, next) {
  if (specifier.startsWith('@tensorflow/')) return next(specifier, { ...context, parentURL });
  let result;
  try {
    result = await next(specifier, context);
  } catch (error) {
    const project = PROJECT.exec(specifier);
    if (!project || error?.code !== 'ERR_MODULE_NOT_FOUND') throw error;
    result = await next('./' + project[1], { ...context, parentURL });
  }
  if (
    result.format === 'commonjs' &&
    result.url.startsWith('file:') &&
    /\\.tsx?$/.test(result.url) &&
    !result.url.includes('/node_modules/')
  ) {
    return { ...result, format: 'module' };
  }
  return result;
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
