/**
 * How results read: lines for the terminal or a notebook, `grade.json` for
 * machines, `grade.html` for people (self-contained: inline styles, no
 * scripts, no external assets).
 */
import type { ExerciseResult } from './types.js';

/** A grading run's results, as written to `grade.json`. */
export interface GradeReport {
  submission: string;
  gradedAt: string;
  /** Seed of the fresh random inputs, to repeat this run. */
  seed: number;
  points: number;
  maximum: number;
  exercises: ExerciseResult[];
  /** Problems of the run itself that are not one exercise's (none, normally). */
  notes: string[];
}

/**
 * The lines for one exercise: one when it passes, else a score line and one
 * line per failing case.
 */
export function exerciseLines(result: ExerciseResult): string[] {
  const score = `${result.exercise}: ${result.points}/${result.maximum} points`;
  if (result.points === result.maximum && result.messages.length === 0) {
    return [`[check] ${score}, all ${result.cases.length} cases pass.`];
  }
  const failing = result.cases.filter((c) => !c.passed).length;
  const head = `[check] ${score}; ${failing} of ${result.cases.length} cases fail:`;
  return [head, ...groupMessages(result).map((m) => `  - ${m}`)];
}

/**
 * One line per distinct piece of feedback, naming every case it applies to:
 * a mistake usually fails several cases the same way, and the learner needs
 * it said once.
 */
function groupMessages(result: ExerciseResult): string[] {
  const byText = new Map<string, string[]>();
  const lines: string[] = [];
  for (const m of result.messages) {
    const c = result.cases.find((c) => c.message === m);
    if (!c) {
      lines.push(m);
      continue;
    }
    const text = m.slice(c.name.length + 2);
    if (!byText.has(text)) byText.set(text, []);
    byText.get(text)!.push(c.name);
  }
  const grouped = [...byText].map(([text, names]) => {
    const who = names.length === result.cases.length ? 'every case' : joinNames(names);
    return `${who}: ${text}`;
  });
  // Notes about the whole exercise come after the cases they sum up.
  return [...grouped, ...lines];
}

/** `a (inference); a (training); b (training)` reads `a (inference, training); b (training)`. */
function joinNames(names: string[]): string {
  const modes = new Map<string, string[]>();
  for (const name of names) {
    const m = /^(.*) \((inference|training)\)$/.exec(name);
    const base = m ? m[1] : name;
    if (!modes.has(base)) modes.set(base, []);
    if (m) modes.get(base)!.push(m[2]);
  }
  return [...modes]
    .map(([base, ms]) => (ms.length ? `${base} (${ms.join(', ')})` : base))
    .join('; ');
}

/** The report as `grade.json` holds it: per exercise, points, maximum, messages. */
export function reportJson(report: GradeReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

function escape(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

/** A one-page report, readable offline. */
export function reportHtml(report: GradeReport): string {
  const sections = report.exercises.map((e) => {
    const full = e.points === e.maximum;
    const rows = e.cases
      .map(
        (c) =>
          `<tr class="${c.passed ? 'pass' : 'fail'}"><td>${c.passed ? '✓' : '✗'}</td>` +
          `<td>${escape(c.name)}${c.hidden ? ' <small>(hidden)</small>' : ''}</td>` +
          `<td class="num">${c.points}/${c.maximum}</td>` +
          `<td>${escape(c.message.replace(`${c.name}: `, ''))}</td></tr>`,
      )
      .join('\n');
    const extra = e.messages
      .filter((m) => !e.cases.some((c) => c.message === m))
      .map((m) => `<p class="fail">${escape(m)}</p>`)
      .join('\n');
    return (
      `<section><h2>${escape(e.exercise)} <span class="${full ? 'pass' : 'fail'}">` +
      `${e.points}/${e.maximum}</span></h2>\n${extra}\n<table>\n` +
      '<tr><th></th><th>case</th><th>points</th><th>feedback</th></tr>\n' +
      `${rows}\n</table></section>`
    );
  });
  const notes = report.notes.map((n) => `<p class="fail">${escape(n)}</p>`).join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Residual Networks: grade ${report.points}/${report.maximum}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
  padding: 0 1rem; }
table { border-collapse: collapse; width: 100%; }
td, th { border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: left;
  vertical-align: top; }
.num { white-space: nowrap; }
.pass { color: #1a7f37; } .fail { color: #b3261e; }
tr.pass td:nth-child(4) { color: #555; }
</style></head><body>
<h1>Residual Networks: ${report.points}/${report.maximum} points</h1>
<p>Submission: <code>${escape(report.submission)}</code>, graded ${escape(report.gradedAt)}.</p>
${notes}
${sections.join('\n')}
</body></html>
`;
}
