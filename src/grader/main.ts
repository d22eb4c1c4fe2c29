/** Entry point of `npm run grade`: see `cli.ts` for the options. */
import { main } from './cli.js';

main().then((code) => {
  process.exitCode = code;
});
