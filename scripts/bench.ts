/**
 * Benchmarks ResNet50 (64×64×3 inputs, 6 classes) on each TensorFlow.js
 * backend that loads here: inference and training images per second at batch
 * 32 (Adam, categorical cross-entropy), and peak memory.
 *
 *   npm run bench                      # every backend, each in its own process
 *   npm run bench -- --backend wasm    # one backend
 *   npm run bench -- --steps 10        # timed steps after the warm-up ones
 *   npm run bench -- --backend onednn --pytorch   # one backend, and PyTorch beside it
 *
 * The oneDNN backend is measured twice, on 1 thread and on every core. So is
 * PyTorch, as a yardstick, where Debian's python3-torch is installed
 * (scripts/bench-pytorch.py: the same network, batch, optimizer and steps),
 * in every full run and with `--pytorch`: measured in the same sitting, the
 * comparison does not depend on how busy the machine was on another day.
 *
 * Each backend runs in a child process so that one backend's heap, compiled
 * kernels and memory high-water mark do not colour another's figures. The
 * plain JavaScript CPU backend takes about half a minute per training image,
 * so for it only inference on a small batch is measured.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';

import * as tf from '@tensorflow/tfjs';

import { BACKEND_NAMES, BackendName, initBackend, parseBackendName } from '../src/backend/index.js';
import { ResNet50 } from '../src/resnet50.js';

/** Batch size of every timed step (the course trains at 32). */
const BATCH = 32;
/** The CPU backend's inference batch: small enough to finish in seconds. */
const CPU_BATCH = 2;
/** Untimed steps first: kernel setup, XNNPACK operator creation, heap growth. */
const WARMUP_STEPS = 2;
/** Timed steps unless `--steps` says otherwise. */
const DEFAULT_STEPS = 9;
/** A child still running after this long is stopped and reported. */
const CHILD_TIMEOUT_MS = 20 * 60 * 1000;
/** The oneDNN backend's thread counts to measure: one, and every core. */
const ONEDNN_THREADS = [...new Set([1, availableParallelism()])];
/** Marks the one line of a child's output that carries its figures. */
const RESULT_TAG = 'BENCH_RESULT ';

/** Images per second of one measure, from its timed steps. */
interface Rate {
  /** From the median step: the figure quoted, robust to a stray slow step. */
  median: number;
  /** From the total time of all timed steps. */
  mean: number;
  /** From the slowest and the fastest step. */
  slowest: number;
  fastest: number;
}

interface Figures {
  backend: BackendName;
  /** How the backend runs (e.g. the wasm thread count). */
  detail: string;
  inferenceBatch: number;
  inference: Rate;
  /** Undefined when training was not measured, with the reason in `skipped`. */
  training?: Rate;
  trainSkipped?: string;
  /** Timed and warm-up steps of each measure. */
  steps: number;
  warmup: number;
  peakRssMiB: number;
  /** Undefined for PyTorch. */
  peakTensorMiB?: number;
}

interface Options {
  backends: BackendName[];
  steps: number;
  child: boolean;
  pytorch: boolean;
}

function parseArgs(argv: string[]): Options {
  let backend: BackendName | 'auto' = 'auto';
  let steps = DEFAULT_STEPS;
  let child = false;
  let pytorch = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.split('=', 2);
    const value = () => inline ?? argv[++i];
    if (flag === '--backend') {
      backend = parseBackendName(value());
    } else if (flag === '--steps') {
      steps = Number(value());
      if (!Number.isInteger(steps) || steps < 1) {
        throw new Error(
          `\`--steps\` must be a positive integer; received ${JSON.stringify(steps)}.`,
        );
      }
    } else if (flag === '--child') {
      child = true;
    } else if (flag === '--pytorch') {
      pytorch = true;
    } else {
      throw new Error(
        `Unknown argument ${JSON.stringify(arg)}; use --backend NAME, --steps N and --pytorch.`,
      );
    }
  }
  const backends = backend === 'auto' ? [...BACKEND_NAMES] : [backend];
  return { backends, steps, child, pytorch: pytorch || backend === 'auto' };
}

/**
 * Runs `step` `warmup + steps` times and returns the images per second of
 * the timed ones, each step being `images`.
 */
async function time(
  step: () => Promise<void>,
  warmup: number,
  steps: number,
  images: number,
): Promise<Rate> {
  for (let i = 0; i < warmup; i++) await step();
  const seconds: number[] = [];
  for (let i = 0; i < steps; i++) {
    const start = performance.now();
    await step();
    seconds.push((performance.now() - start) / 1000);
  }
  const sorted = [...seconds].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  const total = seconds.reduce((a, b) => a + b, 0);
  return {
    median: images / median,
    mean: (images * steps) / total,
    slowest: images / sorted[sorted.length - 1],
    fastest: images / sorted[0],
  };
}

/** Measures one backend in this process and prints its figures as one tagged line. */
async function measure(name: BackendName, steps: number): Promise<void> {
  try {
    await initBackend({ backend: name, log: () => {} });
  } catch (error) {
    console.log(RESULT_TAG + JSON.stringify({ skipped: (error as Error).message }));
    return;
  }
  let peakTensorBytes = 0;
  const sample = () => {
    peakTensorBytes = Math.max(peakTensorBytes, tf.memory().numBytes);
  };

  const model = ResNet50({ inputShape: [64, 64, 3], classes: 6 });
  model.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy' });
  const batch = name === 'cpu' ? CPU_BATCH : BATCH;
  const x = tf.randomUniform([BATCH, 64, 64, 3], 0, 1, 'float32', 1);
  const labels = tf.randomUniform([BATCH], 0, 6, 'int32', 2) as tf.Tensor1D;
  const y = tf.oneHot(labels, 6).toFloat();
  const xInfer = x.slice(0, batch);

  const infer = async () => {
    const out = model.predict(xInfer) as tf.Tensor;
    await out.data();
    sample();
    out.dispose();
  };
  // One warm-up and one timed step on the CPU backend keeps it to seconds.
  const inferSteps = name === 'cpu' ? 1 : steps;
  const warmup = name === 'cpu' ? 1 : WARMUP_STEPS;
  const inference = await time(infer, warmup, inferSteps, batch);

  const figures: Figures = {
    backend: name,
    detail: await describeBackend(name),
    inferenceBatch: batch,
    inference,
    steps: inferSteps,
    warmup,
    peakRssMiB: 0,
    peakTensorMiB: 0,
  };
  if (name === 'cpu') {
    figures.trainSkipped = 'the plain JavaScript CPU backend needs about half a minute per image';
  } else {
    const train = async () => {
      await model.trainOnBatch(x, y);
      sample();
    };
    figures.training = await time(train, WARMUP_STEPS, steps, BATCH);
  }
  figures.peakRssMiB = process.resourceUsage().maxRSS / 1024;
  figures.peakTensorMiB = peakTensorBytes / 2 ** 20;
  console.log(RESULT_TAG + JSON.stringify(figures));
}

async function describeBackend(name: BackendName): Promise<string> {
  if (name === 'onednn') {
    const { threads } = (await import('../src/backend/onednn.js')).onednnInfo();
    return `onednn, ${threads} thread${threads === 1 ? '' : 's'}`;
  }
  if (name !== 'wasm') return tf.getBackend();
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const threads = wasm.getThreadsCount();
  return `wasm, ${threads} thread${threads === 1 ? '' : 's'}`;
}

/** The Python with Debian's python3-torch, and the yardstick script. */
const PYTHON = '/usr/bin/python3';
const PYTORCH_SCRIPT = new URL('./bench-pytorch.py', import.meta.url).pathname;

/** Collects the tagged line of a child process, or why there is none. */
function taggedLine(
  child: ReturnType<typeof spawn>,
): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk) => (stdout += chunk));
    child.stderr?.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ skipped: `could not start it: ${error.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.split('\n').find((l) => l.startsWith(RESULT_TAG));
      if (line) {
        resolve(JSON.parse(line.slice(RESULT_TAG.length)));
      } else {
        const why =
          signal === 'SIGKILL' ? `stopped after ${CHILD_TIMEOUT_MS / 60000} min` : `exit ${code}`;
        const last = stderr.trim().split('\n').slice(-1)[0] ?? '';
        resolve({ skipped: `the benchmark process failed (${why}): ${last}` });
      }
    });
  });
}

/** PyTorch's figures on `threads` threads, from scripts/bench-pytorch.py. */
function runPytorch(threads: number, steps: number): Promise<Record<string, unknown>> {
  if (!existsSync(PYTHON)) {
    return Promise.resolve({ skipped: `${PYTHON} is missing (apt-get install python3-torch)` });
  }
  const args = [PYTORCH_SCRIPT, '--threads', String(threads), '--steps', String(steps)];
  return taggedLine(spawn(PYTHON, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
}

/**
 * Runs this script for one backend in a child process (with `env` added to
 * its environment) and returns its tagged line.
 */
function runChild(
  name: BackendName,
  steps: number,
  env: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const script = process.argv[1];
  const args = ['--import', 'tsx', script, '--child', '--backend', name, '--steps', String(steps)];
  return taggedLine(
    spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    }),
  );
}

function report(name: BackendName | 'pytorch', result: Record<string, unknown>): void {
  if ('skipped' in result) {
    // The loader's message repeats the backend's description; keep the cause.
    const message = String(result.skipped).split('\n')[0];
    const cause = message.split('could not load: ')[1]?.replace(/\. Unset RESNET_BACKEND.*$/, '');
    console.log(`[bench] ${name}: skipped: ${cause ?? message}`);
    return;
  }
  const f = result as unknown as Figures;
  const rate = (r: Rate) =>
    `${r.median.toFixed(2)} img/s (mean ${r.mean.toFixed(2)}, steps ${r.slowest.toFixed(1)} to ` +
    `${r.fastest.toFixed(1)})`;
  const training =
    f.training === undefined
      ? `training not measured (${f.trainSkipped})`
      : `training ${rate(f.training)} (batch ${BATCH})`;
  console.log(
    `[bench] ${name} (${f.detail}): inference ${rate(f.inference)} ` +
      `(batch ${f.inferenceBatch}), ${training}; peak RSS ${f.peakRssMiB.toFixed(0)} MiB` +
      // PyTorch has no count of tensor memory to report.
      (f.peakTensorMiB === undefined ? '' : `, peak tensors ${f.peakTensorMiB.toFixed(0)} MiB`) +
      `; median of ${f.steps} timed steps after ${f.warmup} warm-up`,
  );
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  if (options.child) {
    await measure(options.backends[0], options.steps);
    return;
  }
  console.log(
    `[bench] ResNet50, 64x64x3 inputs, 6 classes, batch ${BATCH}; ` +
      `${options.steps} timed steps per measure; one process per backend`,
  );
  for (const name of options.backends) {
    if (name !== 'onednn') {
      report(name, await runChild(name, options.steps));
      continue;
    }
    for (const threads of ONEDNN_THREADS) {
      const env = { RESNET_ONEDNN_THREADS: String(threads) };
      report(name, await runChild(name, options.steps, env));
    }
  }
  if (options.pytorch) {
    for (const threads of ONEDNN_THREADS) report('pytorch', await runPytorch(threads, options.steps));
  }
}

main().then(
  // The wasm backend's worker threads (if any) would keep the process alive.
  () => process.exit(0),
  (error) => {
    console.error(`[bench] ${(error as Error).message}`);
    process.exit(1);
  },
);
