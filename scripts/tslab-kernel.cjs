// Starts tslab with the project root as its working directory, whatever
// folder Jupyter launched it from. tslab compiles local TypeScript with
// rootDir set to its working directory, so a notebook in notebooks/ could
// not otherwise import ../src.
const path = require('node:path');
const root = path.resolve(__dirname, '..');
process.chdir(root);
const configPath = process.argv[2];
require(path.join(root, 'node_modules', 'tslab', 'dist', 'main.js')).startKernel({
  configPath,
  enableFindLocal: false,
});
