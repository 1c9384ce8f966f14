#!/usr/bin/env node
/**
 * The `identity-kit` bin: `npx identity-kit --help`. The commands, flags, output and exit codes
 * are in docs/cli.md.
 */
import { runMain } from "./app.js"

runMain(process.argv)
