/**
 * The library must load inside the notebook kernel too: tslab compiles src/
 * with its own TypeScript 5.0 and runs it through CommonJS, where ESM-only
 * packages, `import.meta` and top-level await in modules all fail.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'resnet-tslab-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('a notebook cell imports src/index under the resnet-ts kernel and builds ResNet50', () => {
  const kernels = spawnSync('jupyter', ['kernelspec', 'list', '--json'], { encoding: 'utf8' });
  assert.equal(kernels.status, 0, `jupyter is needed: run \`bash scripts/setup.sh\` (${kernels.stderr})`);
  const spec = JSON.parse(kernels.stdout).kernelspecs['resnet-ts'];
  assert.ok(spec, 'the resnet-ts kernel is not registered: run `bash scripts/setup.sh kernel`');
  // The kernel must start this checkout, not some other clone.
  const argv: string[] = spec.spec.argv;
  assert.equal(path.dirname(path.dirname(argv[1])), process.cwd(),
    `the resnet-ts kernel starts another checkout (argv ${JSON.stringify(argv)}): ` +
      'run `bash scripts/setup.sh kernel` in this one');

  const source = [
    "import { initBackend, ResNet50, parameterCounts, identityBlock } from './src/index.js';",
    "import * as tf from '@tensorflow/tfjs';",
    'await initBackend();',
    'const y = identityBlock(tf.ones([1, 4, 4, 3]), 3, [2, 2, 3], { training: false });',
    "console.log('SHAPE ' + JSON.stringify(y.shape));",
    "console.log('PARAMS ' + parameterCounts(ResNet50()).total);",
  ];
  const notebook = {
    cells: [{ cell_type: 'code', id: 'one', metadata: {}, execution_count: null, outputs: [], source: source.join('\n') }],
    metadata: { kernelspec: { name: 'resnet-ts', display_name: 'TypeScript (resnet-ts)', language: 'typescript' } },
    nbformat: 4,
    nbformat_minor: 5,
  };
  // The notebook lives outside the project on purpose: the kernel must still
  // compile ./src from the project root.
  const input = path.join(tmp, 'one-cell.ipynb');
  writeFileSync(input, JSON.stringify(notebook));
  const run = spawnSync(
    'jupyter',
    ['nbconvert', '--to', 'notebook', '--execute', input, '--output', 'executed.ipynb',
      '--ExecutePreprocessor.timeout=300'],
    { encoding: 'utf8' },
  );
  assert.equal(run.status, 0, run.stderr.slice(-3000));
  const executed = JSON.parse(readFileSync(path.join(tmp, 'executed.ipynb'), 'utf8'));
  const text = executed.cells[0].outputs.map((o: { text?: string[] | string }) =>
    Array.isArray(o.text) ? o.text.join('') : (o.text ?? '')).join('');
  assert.match(text, /^\[backend\] /m);
  assert.match(text, /SHAPE \[1,4,4,3\]/);
  assert.match(text, /PARAMS 23600006/);
});
