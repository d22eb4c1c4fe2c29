/**
 * `npm run release:student -- OUT [--force]`: writes a learner workspace.
 *
 * The workspace holds everything `npm run setup`, the notebooks and the
 * learner's own checks need: package files, tsconfig, scripts, src/ with
 * the graded bodies replaced by stubs, native/ (the oneDNN addon's sources,
 * not its build), the public tests, the notebooks with
 * their outputs cleared, and Requirements/ without the datasets (setup
 * copies those in). It leaves out the grader's own tests and fixtures and
 * this script.
 *
 * Nor does it carry a working block: the grader's own (src/grader/variants.ts)
 * stays here, and the workspace gets src/grader/variants-lookup.ts under
 * that name, which serves the outputs this script precomputes with it for
 * the public cases into Requirements/grader/expected.json.gz.
 *
 * A graded region in the solution source reads
 *
 *   // BEGIN SOLUTION
 *   // STUB: <a line of the stub, comment or code>
 *   …solution…
 *   // END SOLUTION
 *
 * and becomes its STUB lines, uncommented, at the same indentation.
 */
import * as tf from '@tensorflow/tfjs';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';

import { loadReferences } from '../src/grader/checks.js';
import { precomputeOutputs, writePrecomputed } from '../src/grader/precompute.js';
import { findProjectRoot } from '../src/paths.js';

/** The learner's package.json scripts that need files the workspace lacks. */
const DROPPED_SCRIPTS = ['release:student'];
/** Tests and fixtures of the grader itself, which would give the solutions away. */
const TEACHER_ONLY = [
  'scripts/release-student.ts',
  'test/grader.test.ts',
  'test/release.test.ts',
  'test/fixtures/broken',
  'test/fixtures/hostile',
  'test/fixtures/learner-blocks.ts',
  'src/grader/precompute.ts',
  'src/grader/variants-lookup.ts',
];
/** Teacher modules whose place in the workspace another file takes. */
const REPLACED: Record<string, string> = {
  'src/grader/variants.ts': 'src/grader/variants-lookup.ts',
};
/**
 * Block arithmetic that must not reach the workspace's grader: BatchNorm's
 * statistics and epsilon, convolutions and ReLUs written with tf ops.
 */
const BLOCK_ARITHMETIC = /\btf\.(moments|batchNorm|conv2d|relu|sqrt)\b|\bEPSILON\b/;

/** A marker problem: names the file and line. */
export class ReleaseError extends Error {
  override name = 'ReleaseError';
}

/**
 * Replaces every BEGIN/END SOLUTION region of a source text with its STUB
 * lines. Text without markers comes back unchanged.
 *
 * @throws ReleaseError for a region left open, an END without a BEGIN, or a
 *   region with no STUB line (the learner would get an empty body).
 */
export function stripSolutions(text: string, file = 'source'): string {
  const out: string[] = [];
  let open: number | undefined;
  let stubs = 0;
  text.split('\n').forEach((line, i) => {
    const where = `${file}:${i + 1}`;
    if (/^\s*\/\/ BEGIN SOLUTION\b/.test(line)) {
      if (open !== undefined) {
        throw new ReleaseError(`${where}: BEGIN SOLUTION inside another region`);
      }
      open = i + 1;
      stubs = 0;
      return;
    }
    if (/^\s*\/\/ END SOLUTION\b/.test(line)) {
      if (open === undefined) throw new ReleaseError(`${where}: END SOLUTION without a BEGIN`);
      if (stubs === 0) throw new ReleaseError(`${file}:${open}: a region with no STUB line`);
      open = undefined;
      return;
    }
    if (open === undefined) {
      out.push(line);
      return;
    }
    const stub = /^(\s*)\/\/ STUB:(?: (.*))?$/.exec(line);
    if (stub) {
      stubs++;
      out.push(`${stub[1]}${stub[2] ?? ''}`.trimEnd());
    }
  });
  if (open !== undefined) throw new ReleaseError(`${file}:${open}: BEGIN SOLUTION never ends`);
  return out.join('\n');
}

/** Clears outputs and execution counts, so the learner's notebook starts clean. */
export function clearNotebook(json: string): string {
  const nb = JSON.parse(json) as { cells?: Array<Record<string, unknown>> };
  for (const cell of nb.cells ?? []) {
    if (cell.cell_type !== 'code') continue;
    cell.outputs = [];
    cell.execution_count = null;
  }
  return `${JSON.stringify(nb, null, 1)}\n`;
}

function copyTree(from: string, to: string, skip: (rel: string) => boolean, root: string): void {
  for (const name of readdirSync(from)) {
    const src = path.join(from, name);
    const rel = path.relative(root, src).split(path.sep).join('/');
    if (skip(rel)) continue;
    const dst = path.join(to, name);
    if (statSync(src).isDirectory()) {
      mkdirSync(dst, { recursive: true });
      copyTree(src, dst, skip, root);
    } else if (rel.startsWith('src/') && rel.endsWith('.ts')) {
      const from = REPLACED[rel] ? path.join(root, REPLACED[rel]) : src;
      writeFileSync(dst, stripSolutions(readFileSync(from, 'utf8'), rel));
    } else if (rel.endsWith('.ipynb')) {
      writeFileSync(dst, clearNotebook(readFileSync(src, 'utf8')));
    } else {
      cpSync(src, dst);
    }
  }
}

/**
 * Writes the learner workspace into `out`, which must not exist or be
 * empty unless `force` (then it is replaced).
 *
 * @returns the files written, relative to `out`.
 */
export function releaseStudent(
  out: string,
  options: { root?: string; force?: boolean } = {},
): string[] {
  const root = options.root ?? findProjectRoot();
  const target = path.resolve(out);
  if (existsSync(target) && readdirSync(target).length > 0) {
    if (!options.force) {
      throw new ReleaseError(`${target} is not empty; pass --force to replace it.`);
    }
    rmSync(target, { recursive: true, force: true });
  }
  mkdirSync(target, { recursive: true });

  const skip = (rel: string) =>
    TEACHER_ONLY.some((t) => rel === t || rel.startsWith(`${t}/`)) ||
    path.resolve(root, rel) === target;

  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    scripts?: Record<string, string>;
  };
  for (const name of DROPPED_SCRIPTS) delete pkg.scripts?.[name];
  writeFileSync(path.join(target, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  for (const file of ['package-lock.json', 'tsconfig.json', '.gitignore', 'README.md']) {
    if (existsSync(path.join(root, file))) cpSync(path.join(root, file), path.join(target, file));
  }

  for (const dir of ['src', 'scripts']) {
    mkdirSync(path.join(target, dir), { recursive: true });
    copyTree(path.join(root, dir), path.join(target, dir), skip, root);
  }

  // The oneDNN addon's sources: package.json's build:native and setup's
  // native step build them there. Not the teacher's build output.
  if (existsSync(path.join(root, 'native'))) {
    const built = (rel: string) =>
      skip(rel) || rel === 'native/build' || rel.startsWith('native/build/');
    mkdirSync(path.join(target, 'native'), { recursive: true });
    copyTree(path.join(root, 'native'), path.join(target, 'native'), built, root);
  }

  // Public tests and the fixtures they read; not the grader's.
  if (existsSync(path.join(root, 'test'))) {
    mkdirSync(path.join(target, 'test'), { recursive: true });
    copyTree(path.join(root, 'test'), path.join(target, 'test'), skip, root);
  }

  if (existsSync(path.join(root, 'notebooks'))) {
    mkdirSync(path.join(target, 'notebooks'), { recursive: true });
    const notebooks = (rel: string) =>
      skip(rel) || (rel.startsWith('notebooks/') && !rel.endsWith('.ipynb'));
    copyTree(path.join(root, 'notebooks'), path.join(target, 'notebooks'), notebooks, root);
  }

  // Requirements/ without the datasets: setup copies and checks them.
  const datasets = (rel: string) => skip(rel) || rel.startsWith('Requirements/datasets/');
  mkdirSync(path.join(target, 'Requirements', 'datasets'), { recursive: true });
  copyTree(path.join(root, 'Requirements'), path.join(target, 'Requirements'), datasets, root);
  // The checks' expected outputs for the public cases, from the teacher's block.
  const refs = loadReferences(path.join(root, 'Requirements', 'reference'));
  writePrecomputed(target, precomputeOutputs(refs));

  const written: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = path.join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else written.push(path.relative(target, full).split(path.sep).join('/'));
    }
  };
  walk(target);
  const marked = (f: string) =>
    /\/\/ (BEGIN|END) SOLUTION/.test(readFileSync(path.join(target, f), 'utf8'));
  const leaked = written.filter((f) => f.endsWith('.ts') && marked(f));
  if (leaked.length > 0) throw new ReleaseError(`solution markers left in ${leaked.join(', ')}`);
  const grader = written.filter((f) => f.startsWith('src/grader/') && f.endsWith('.ts'));
  const computes = grader.filter((f) =>
    BLOCK_ARITHMETIC.test(readFileSync(path.join(target, f), 'utf8')),
  );
  if (computes.length > 0) {
    throw new ReleaseError(`block arithmetic left in the grader: ${computes.join(', ')}`);
  }
  return written.sort();
}

function main(argv: string[]): number {
  const args = argv.filter((a) => a !== '--force');
  if (args.length !== 1 || args[0].startsWith('-')) {
    console.error('Usage: npm run release:student -- OUT [--force]');
    return 2;
  }
  // npm runs scripts from the project root; OUT is meant from where the user was.
  const out = path.resolve(process.env.INIT_CWD ?? process.cwd(), args[0]);
  // The precomputation only needs the CPU; PROD keeps tfjs's backend banner quiet.
  tf.env().set('PROD', true);
  try {
    const files = releaseStudent(out, { force: argv.includes('--force') });
    console.log(`[release] ${files.length} files in ${out}; learners run \`npm run setup\` there.`);
    return 0;
  } catch (error) {
    console.error(`[release] ${(error as Error).message}`);
    return 2;
  }
}

// Run only as a script, so that tests can import the functions.
const script = process.argv[1] ? path.resolve(process.argv[1]) : '';
if (script === path.resolve('scripts/release-student.ts')) {
  process.exitCode = main(process.argv.slice(2));
}
