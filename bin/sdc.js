#!/usr/bin/env node
// The sdc command. The TypeScript sources are compiled to dist/ by `npm install` (prepare script).
import { main } from "../dist/cli/main.js";

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
