/**
 * Chooses the TensorFlow.js compute backend, once per process, and says why.
 *
 * Order of preference: CUDA through `@tensorflow/tfjs-node-gpu`, native CPU
 * through `@tensorflow/tfjs-node`, the project's own oneDNN addon (see
 * `onednn.ts`; built by `npm run build:native`), WebAssembly, then the plain
 * JavaScript CPU backend. The two TensorFlow packages are optional
 * dependencies whose install step downloads libtensorflow; where that download
 * cannot happen they are absent and the choice falls through to the oneDNN
 * addon where it is built, else to WebAssembly, which this project makes able
 * to train (see `wasm-kernels.ts`).
 */
import * as tf from '@tensorflow/tfjs';

import { BackendError } from '../errors.js';

/** The names `RESNET_BACKEND` and `--backend` accept, in order of preference. */
export const BACKEND_NAMES = ['gpu', 'node', 'onednn', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Loads one backend and makes it the active one; throws if it cannot. */
export type BackendLoader = () => Promise<void>;

export interface BackendChoice {
  /** The backend in use. */
  name: BackendName;
  /** TensorFlow.js's own name for it (`tensorflow`, `onednn`, `wasm`, `cpu`). */
  tfName: string;
  /** The backends tried before it, each with the reason it was skipped. */
  skipped: Array<{ name: BackendName; reason: string }>;
  /** The one line printed about the choice. */
  line: string;
}

export interface InitBackendOptions {
  /**
   * A backend to force, or `auto`. Defaults to the `RESNET_BACKEND`
   * environment variable, else `auto`.
   */
  backend?: BackendName | 'auto';
  /** Where the one line about the choice goes. Defaults to `console.log`. */
  log?: (line: string) => void;
  /** Replaces the loaders, for tests of the choice itself. */
  loaders?: Partial<Record<BackendName, BackendLoader>>;
}

const DESCRIPTIONS: Record<BackendName, string> = {
  gpu: 'TensorFlow native with CUDA (@tensorflow/tfjs-node-gpu)',
  node: 'TensorFlow native CPU (@tensorflow/tfjs-node)',
  onednn: 'oneDNN native CPU kernels (the native/ addon on libdnnl, no libtensorflow)',
  wasm: 'WebAssembly (@tensorflow/tfjs-backend-wasm, with training kernels)',
  cpu: 'plain JavaScript CPU (slow: about 36 s an image in training)',
};

function isModuleMissing(error: unknown, packageName: string): boolean {
  const e = error as { code?: string; message?: string };
  return (
    (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') &&
    String(e.message).includes(packageName)
  );
}

async function loadNative(packageName: string): Promise<void> {
  try {
    await import(packageName);
  } catch (error) {
    if (isModuleMissing(error, packageName)) {
      throw new BackendError(
        `${packageName} is not installed (its install step downloads ` +
          'libtensorflow and could not run here; install it where that ' +
          'download works)',
      );
    }
    throw error;
  }
  await setActive('tensorflow');
}

async function setActive(tfName: string): Promise<void> {
  const ok = await tf.setBackend(tfName);
  if (!ok) throw new BackendError(`TensorFlow.js could not start its '${tfName}' backend`);
  await tf.ready();
}

const DEFAULT_LOADERS: Record<BackendName, BackendLoader> = {
  gpu: () => loadNative('@tensorflow/tfjs-node-gpu'),
  node: () => loadNative('@tensorflow/tfjs-node'),
  onednn: async () => {
    const { loadOnednnBackend } = await import('./onednn.js');
    await loadOnednnBackend();
  },
  wasm: async () => {
    await import('@tensorflow/tfjs-backend-wasm');
    const { registerWasmTrainingKernels } = await import('./wasm-kernels.js');
    registerWasmTrainingKernels();
    await setActive('wasm');
  },
  cpu: () => setActive('cpu'),
};

function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split('\n')[0];
}

/** Reads and checks a backend request (`RESNET_BACKEND`, `--backend`). */
export function parseBackendName(value: string | undefined): BackendName | 'auto' {
  if (value === undefined || value === '' || value === 'auto') return 'auto';
  if ((BACKEND_NAMES as readonly string[]).includes(value)) return value as BackendName;
  throw new BackendError(
    `\`RESNET_BACKEND\` (or \`--backend\`) must be one of auto, ${BACKEND_NAMES.join(', ')}; ` +
      `received ${JSON.stringify(value)}.`,
  );
}

let current: { request: string; choice: BackendChoice } | undefined;

/**
 * Loads the best backend that works here (or the one asked for), prints one
 * line naming it and why each earlier one was skipped, and returns the
 * choice. Later calls with the same request return the same choice silently.
 *
 * @throws BackendError when a forced backend cannot load, or the name is wrong.
 */
export async function initBackend(options: InitBackendOptions = {}): Promise<BackendChoice> {
  const request = options.backend ?? parseBackendName(process.env.RESNET_BACKEND);
  if (request !== 'auto') parseBackendName(request);
  if (current && current.request === request && !options.loaders) return current.choice;

  const loaders = { ...DEFAULT_LOADERS, ...options.loaders };
  const log = options.log ?? ((line: string) => console.log(line));
  const candidates = request === 'auto' ? BACKEND_NAMES : [request];
  const skipped: BackendChoice['skipped'] = [];

  for (const name of candidates) {
    try {
      await loaders[name]();
    } catch (error) {
      if (request !== 'auto') {
        throw new BackendError(
          `The backend \`${name}\` (${DESCRIPTIONS[name]}) was asked for ` +
            `(RESNET_BACKEND or --backend) but could not load: ${firstLine(error)}. ` +
            'Unset RESNET_BACKEND to let the project choose one that works.',
        );
      }
      skipped.push({ name, reason: firstLine(error) });
      continue;
    }
    const why =
      request === 'auto'
        ? skipped.length > 0
          ? `; skipped ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`
          : ''
        : '; forced by RESNET_BACKEND or --backend';
    const line = `[backend] ${name}: ${DESCRIPTIONS[name]}${why}`;
    const choice: BackendChoice = { name, tfName: tf.getBackend(), skipped, line };
    current = { request, choice };
    log(line);
    return choice;
  }
  // The CPU loader only fails if TensorFlow.js itself is broken.
  throw new BackendError(
    `No TensorFlow.js backend could load: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`,
  );
}

/** The backend chosen so far in this process, if any. */
export function currentBackend(): BackendChoice | undefined {
  return current?.choice;
}
