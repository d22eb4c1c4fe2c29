/**
 * Grades a submission exercise by exercise, each in its own child process,
 * and writes `grade.json` and `grade.html`.
 *
 * The parent holds the references in memory, sends each child only inputs
 * and kernels, judges the outputs that come back, and watches the files a
 * submission might tamper with: the reference files (restored if changed)
 * and the grade files (rewritten at the end). An exercise whose child
 * crashes, overruns its time or memory, or writes to those files scores
 * zero with a message saying so; the other exercises are graded as usual.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { findProjectRoot } from '../paths.js';
import { buildCases, failExercise, judgeCases, loadReferences, probesOf } from './checks.js';
import { ChildLimits, runChild } from './isolate.js';
import { exerciseLines, GradeReport, reportHtml, reportJson } from './report.js';
import { EXERCISES, Exercise, ExerciseResult, ProbeOutput } from './types.js';
import { CHECKABLE_SEEDS } from './variants.js';

/** Options of one grading run. */
export interface GradeOptions {
  /** A learner workspace (with src/blocks.ts and src/resnet50.ts) or one .ts file. */
  submission: string;
  /**
   * Where grade.json and grade.html go. Defaults to the workspace folder for
   * a workspace, and to the current directory for a single file.
   */
  outDir?: string;
  /** Folder of blocks.json and resnet50-summary.json. Defaults to the grader's own. */
  referenceDir?: string;
  /** Hidden cases in the layout of blocks.json (`--reference`). */
  hidden?: string;
  /** The exercises to grade. Defaults to all three. */
  exercises?: Exercise[];
  /**
   * Seed of the fresh inputs. Defaults to a new one each run (recorded in
   * grade.json); in a learner workspace, to one of the seeds it carries.
   */
  seed?: number;
  /** Per-child limits. Defaults: 60 s (180 s for ResNet50), 1024 MiB heap, 3072 MiB RSS. */
  limits?: Partial<ChildLimits>;
  /** The children's backend. Defaults to `RESNET_BACKEND`, else `cpu`. */
  backend?: string;
  /** Where the result lines go. Defaults to `console.log`. */
  print?: (line: string) => void;
  /** The grader's project root. Defaults to the one above the current directory. */
  graderRoot?: string;
}

const DEFAULT_TIMEOUT_MS: Record<Exercise, number> = {
  identityBlock: 60_000,
  convolutionalBlock: 60_000,
  ResNet50: 180_000,
};

/** The grade files a run writes. */
export const GRADE_FILES = ['grade.json', 'grade.html'];

/** The modules to import from a submission path, and the default output folder. */
export function resolveSubmission(submission: string): { modules: string[]; outDir: string } {
  const full = path.resolve(submission);
  if (!existsSync(full)) {
    throw new Error(
      `\`submission\` must be a workspace folder or a .ts file; ${full} does not exist.`,
    );
  }
  if (statSync(full).isFile()) return { modules: [full], outDir: process.cwd() };
  const modules = ['blocks.ts', 'resnet50.ts']
    .map((f) => path.join(full, 'src', f))
    .filter((f) => existsSync(f));
  if (modules.length === 0) {
    throw new Error(
      `\`submission\` must be a workspace folder or a .ts file; ${full} has no src/blocks.ts ` +
        'or src/resnet50.ts.',
    );
  }
  return { modules, outDir: full };
}

/** Every file whose bytes a submission must not change, with those bytes. */
function snapshot(files: string[]): Map<string, Buffer | null> {
  return new Map(files.map((f) => [f, existsSync(f) ? readFileSync(f) : null]));
}

/**
 * The files that differ from the snapshot; each is put back as it was (a
 * file that did not exist is emptied rather than left with the submission's
 * content, and the final report overwrites grade files anyway).
 */
function changedAndRestored(saved: Map<string, Buffer | null>): string[] {
  const changed: string[] = [];
  for (const [file, bytes] of saved) {
    const now = existsSync(file) ? readFileSync(file) : null;
    const same = now === null || bytes === null ? now === bytes : now.equals(bytes);
    if (same) continue;
    changed.push(file);
    try {
      if (bytes !== null) writeFileSync(file, bytes);
      else writeFileSync(file, '');
    } catch {
      // Reported below as changed; the verdicts never read these files again.
    }
  }
  return changed;
}

function listFiles(dir: string): string[] {
  try {
    return readdirSync(dir)
      .map((f) => path.join(dir, f))
      .filter((f) => statSync(f).isFile());
  } catch {
    return [];
  }
}

/**
 * Grades a submission and writes grade.json and grade.html.
 *
 * @throws Error for a submission path that is not a workspace or a file, and
 *   DataError for a missing or malformed reference file: problems of the run
 *   itself, never of the submission.
 */
export async function gradeSubmission(options: GradeOptions): Promise<GradeReport> {
  const graderRoot = options.graderRoot ?? findProjectRoot();
  const { modules, outDir: defaultOut } = resolveSubmission(options.submission);
  const outDir = path.resolve(options.outDir ?? defaultOut);
  const referenceDir = options.referenceDir ?? path.join(graderRoot, 'Requirements', 'reference');
  const refs = loadReferences(referenceDir, options.hidden);
  const seed = options.seed ?? randomSeed();
  const print = options.print ?? ((line: string) => console.log(line));
  const backend = options.backend ?? process.env.RESNET_BACKEND ?? 'cpu';

  const protectedFiles = listFiles(referenceDir);
  if (options.hidden) protectedFiles.push(path.resolve(options.hidden));
  const references = snapshot(protectedFiles);
  const gradeFiles = GRADE_FILES.map((f) => path.join(outDir, f));

  const results: ExerciseResult[] = [];
  const notes: string[] = [];
  for (const exercise of options.exercises ?? EXERCISES) {
    const cases = buildCases(exercise, refs, seed);
    const limits: ChildLimits = {
      timeoutMs: DEFAULT_TIMEOUT_MS[exercise],
      maxOldSpaceMb: 1024,
      maxRssMb: 3072,
      ...options.limits,
    };
    const grades = snapshot(gradeFiles);
    const run = await runChild(
      { graderRoot, modules, probes: probesOf(cases), backend },
      limits,
      exercise,
    );
    const touched = [...changedAndRestored(references), ...changedAndRestored(grades)];

    let result: ExerciseResult;
    if (touched.length > 0) {
      const names = touched.map(shortPath).join(', ');
      result = failExercise(
        exercise,
        cases,
        `your ${exercise} wrote to ${names}, which the grader protects; this exercise scores ` +
          'zero. The grader has put the files back. A block should only compute its output.',
      );
    } else if (run.failure !== undefined) {
      result = failExercise(exercise, cases, run.failure);
    } else if (run.reply?.type === 'load-error') {
      result = failExercise(
        exercise,
        cases,
        `your submission could not be loaded: ${run.reply.error}. Check that it type-checks ` +
          '(`npm run typecheck`) and runs on its own.',
      );
    } else {
      const outputs = new Map<string, ProbeOutput>();
      const replied = run.reply?.type === 'outputs' ? run.reply.outputs : [];
      for (const out of Array.isArray(replied) ? replied : []) {
        if (out && typeof out.id === 'string') outputs.set(out.id, out);
      }
      result = judgeCases(exercise, cases, outputs);
    }
    results.push(result);
  }

  addResNetNote(results);
  const report: GradeReport = {
    submission: path.resolve(options.submission),
    gradedAt: new Date().toISOString(),
    seed,
    points: results.reduce((a, r) => a + r.points, 0),
    maximum: results.reduce((a, r) => a + r.maximum, 0),
    exercises: results,
    notes,
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(path.join(outDir, 'grade.json'), reportJson(report));
  writeFileSync(path.join(outDir, 'grade.html'), reportHtml(report));

  for (const r of results) exerciseLines(r).forEach((line) => print(line));
  print(
    `[grade] ${report.points}/${report.maximum} points; grade.json and grade.html are in ` +
      `${shortPath(outDir) || '.'}`,
  );
  return report;
}

/** A new seed each run; in a learner workspace, one of the seeds it carries outputs for. */
function randomSeed(): number {
  const seeds = CHECKABLE_SEEDS;
  if (seeds) return seeds[Math.floor(Math.random() * seeds.length)];
  return Math.floor(Math.random() * 2 ** 31);
}

/** A path relative to the current directory when inside it, else absolute. */
function shortPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

/** ResNet50 is built from the learner's blocks: say so when those fail too. */
function addResNetNote(results: ExerciseResult[]): void {
  const resnet = results.find((r) => r.exercise === 'ResNet50');
  const blocksFail = results.some((r) => r.exercise !== 'ResNet50' && r.points < r.maximum);
  if (resnet && blocksFail && resnet.points < resnet.maximum) {
    resnet.messages.push(
      'Your ResNet50 is built from your blocks, which miss points of their own above: fix ' +
        'those first, then check ResNet50 again.',
    );
  }
}
