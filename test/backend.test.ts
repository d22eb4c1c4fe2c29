import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';

import { BackendError } from '../src/errors.js';
import { initBackend, parseBackendName } from '../src/backend/index.js';
import { isOnednnAddonBuilt } from '../src/backend/onednn.js';

/** Whether the oneDNN addon is built here, which decides the automatic choice. */
const onednnBuilt = isOnednnAddonBuilt();

/** Runs a fresh process that initialises the backend, so each case starts clean. */
function chooseInChild(env: Record<string, string | undefined>) {
  const code =
    "import('./src/backend/index.ts').then(async (m) => { try { const c = await m.initBackend();" +
    " console.log('CHOSEN ' + c.name + ' ' + c.tfName); } catch (e) { console.log('FAILED ' +" +
    ' e.name + ": " + e.message); process.exitCode = 3; } })';
  const result = spawnSync(process.execPath, ['--import', 'tsx', '-e', code], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  return { status: result.status, out: result.stdout + result.stderr };
}

describe('backend choice', () => {
  test('without the TensorFlow packages, auto takes onednn if built, else wasm, in one line',
    () => {
    const { status, out } = chooseInChild({ RESNET_BACKEND: undefined });
    assert.equal(status, 0, out);
    const lines = out.split('\n').filter((l) => l.startsWith('[backend]'));
    assert.equal(lines.length, 1, out);
    assert.match(lines[0], /skipped gpu: @tensorflow\/tfjs-node-gpu is not installed/);
    assert.match(lines[0], /node: @tensorflow\/tfjs-node is not installed/);
    if (onednnBuilt) {
      assert.match(lines[0], /^\[backend\] onednn: oneDNN native CPU kernels/);
      assert.match(out, /CHOSEN onednn onednn/);
    } else {
      assert.match(lines[0], /^\[backend\] wasm: WebAssembly/);
      assert.match(lines[0], /onednn: the oneDNN addon is not built .*npm run build:native/);
      assert.match(out, /CHOSEN wasm wasm/);
    }
  });

  test('RESNET_BACKEND=onednn forces it, or says how to build it', () => {
    const { status, out } = chooseInChild({ RESNET_BACKEND: 'onednn' });
    if (onednnBuilt) {
      assert.equal(status, 0, out);
      assert.match(out, /\[backend\] onednn: .*forced by RESNET_BACKEND/);
      assert.match(out, /CHOSEN onednn onednn/);
    } else {
      assert.equal(status, 3, out);
      assert.match(out, /FAILED BackendError: The backend `onednn` .* not built/);
      assert.match(out, /bash scripts\/setup\.sh native/);
    }
  });

  test('RESNET_BACKEND=gpu fails clearly when tfjs-node-gpu cannot load', () => {
    const { status, out } = chooseInChild({ RESNET_BACKEND: 'gpu' });
    assert.equal(status, 3, out);
    assert.match(out, /FAILED BackendError: The backend `gpu` .* could not load: .*not installed/);
    assert.match(out, /Unset RESNET_BACKEND/);
  });

  test('RESNET_BACKEND=cpu forces the CPU backend', () => {
    const { status, out } = chooseInChild({ RESNET_BACKEND: 'cpu' });
    assert.equal(status, 0, out);
    assert.match(out, /\[backend\] cpu: .*forced by RESNET_BACKEND/);
    assert.match(out, /CHOSEN cpu cpu/);
  });

  test('a misspelt RESNET_BACKEND names the allowed values', () => {
    const { status, out } = chooseInChild({ RESNET_BACKEND: 'cuda' });
    assert.equal(status, 3, out);
    assert.match(out, /must be one of auto, gpu, node, onednn, wasm, cpu; received "cuda"/);
    assert.throws(() => parseBackendName('tpu'), BackendError);
  });

  test('a loader that throws is skipped with its reason; the next one is used', async () => {
    const lines: string[] = [];
    const tried: string[] = [];
    const choice = await initBackend({
      backend: 'auto',
      log: (l) => lines.push(l),
      loaders: {
        gpu: async () => {
          tried.push('gpu');
          throw new Error('libcudart.so.11.0: cannot open shared object file');
        },
        node: async () => {
          tried.push('node');
          throw new Error('The specified module could not be found.\nsecond line');
        },
        onednn: async () => {
          tried.push('onednn');
          throw new Error('the oneDNN addon is not built');
        },
        wasm: async () => {
          tried.push('wasm');
          await tf.setBackend('cpu');
        },
      },
    });
    assert.deepEqual(tried, ['gpu', 'node', 'onednn', 'wasm']);
    assert.equal(choice.name, 'wasm');
    assert.equal(lines.length, 1);
    assert.match(
      lines[0],
      new RegExp(
        'skipped gpu: libcudart\\.so\\.11\\.0.*; node: The specified module could not be ' +
          'found\\.; onednn: the oneDNN addon is not built$',
      ),
    );
  });
});
