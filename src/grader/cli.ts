/**
 * `npm run grade -- PATH [options]`: grades a learner workspace or a single
 * .ts file exporting identityBlock, convolutionalBlock and ResNet50.
 *
 * Exit status: 0 once a report is written, whatever the score; 2 when the
 * run itself cannot go ahead (a wrong argument, a missing reference file).
 */
import * as tf from '@tensorflow/tfjs';
import path from 'node:path';

import { gradeSubmission, GradeOptions } from './grade.js';
import { EXERCISES, Exercise } from './types.js';

const USAGE = `Usage: npm run grade -- PATH [options]

PATH is a learner workspace (graded from its src/blocks.ts and src/resnet50.ts)
or one .ts file that exports identityBlock, convolutionalBlock and ResNet50.
Relative paths are read from the folder you ran npm in.

Options:
  --out DIR            where grade.json and grade.html go (default: the workspace
                       folder; for a single file, the folder you ran npm in)
  --reference FILE     hidden cases, in the layout of Requirements/reference/blocks.json
  --reference-dir DIR  the public references (default: this project's Requirements/reference)
  --exercise NAME      grade only this exercise (repeatable): ${EXERCISES.join(', ')}
  --seed N             seed of the fresh random inputs (default: a new one each run)
  --timeout S          time limit of each exercise, in seconds (default 60; 180 for ResNet50)
  --memory MB          memory limit of each exercise, in MiB (default 3072)
  --backend NAME       backend of the graded code: cpu (default), wasm, node, gpu
  --help               this text`;

/** The folder the user ran `npm run` in (npm itself moves to the project root). */
function userCwd(): string {
  return process.env.INIT_CWD ?? process.cwd();
}

/** Parses the command line; throws a message for the user on a wrong argument. */
export function parseArgs(argv: string[]): GradeOptions | 'help' {
  const options: Partial<GradeOptions> & { limits: NonNullable<GradeOptions['limits']> } = {
    limits: {},
  };
  const exercises: Exercise[] = [];
  const at = (p: string) => path.resolve(userCwd(), p);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new Error(`\`${arg}\` needs a value.`);
      return v;
    };
    const number = (): number => {
      const v = value();
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) {
        throw new Error(`\`${arg}\` must be a positive number; received ${JSON.stringify(v)}.`);
      }
      return n;
    };
    switch (arg) {
      case '--help':
      case '-h':
        return 'help';
      case '--out':
        options.outDir = at(value());
        break;
      case '--reference':
        options.hidden = at(value());
        break;
      case '--reference-dir':
        options.referenceDir = at(value());
        break;
      case '--exercise': {
        const name = value();
        if (!(EXERCISES as readonly string[]).includes(name)) {
          throw new Error(
            `\`--exercise\` must be one of ${EXERCISES.join(', ')}; ` +
              `received ${JSON.stringify(name)}.`,
          );
        }
        exercises.push(name as Exercise);
        break;
      }
      case '--seed':
        options.seed = Math.floor(number());
        break;
      case '--timeout':
        options.limits.timeoutMs = number() * 1000;
        break;
      case '--memory':
        options.limits.maxRssMb = number();
        break;
      case '--backend':
        options.backend = value();
        break;
      default:
        if (arg.startsWith('--')) throw new Error(`Unknown option \`${arg}\`.`);
        if (options.submission !== undefined) {
          throw new Error(`Give one submission; received ${options.submission} and ${arg}.`);
        }
        options.submission = at(arg);
    }
  }
  if (options.submission === undefined) throw new Error('Give the submission to grade.');
  if (exercises.length > 0) options.exercises = exercises;
  if (options.outDir === undefined && !options.submission.endsWith('.ts')) {
    // A workspace keeps its report; resolveSubmission decides for files.
  } else if (options.outDir === undefined) {
    options.outDir = userCwd();
  }
  return options as GradeOptions;
}

/**
 * Runs the command line and returns the exit status. `main.ts` calls it;
 * importing this module runs nothing, so tests can use `parseArgs`.
 */
export async function main(): Promise<number> {
  let options: GradeOptions | 'help';
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (error) {
    console.error(`[grade] ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (options === 'help') {
    console.log(USAGE);
    return 0;
  }
  // This process only compares numbers; PROD keeps TensorFlow.js's
  // install-the-native-backend banner out of the learner's report.
  tf.env().set('PROD', true);
  try {
    await gradeSubmission(options);
    return 0;
  } catch (error) {
    console.error(`[grade] ${(error as Error).message}`);
    return 2;
  }
}
