/**
 * The demo server behind `npm start`, now `identity-kit serve --demo` (src/cli/serve.ts): Node's
 * http with identity-kit's node handler, storage in PGlite under `./.data` (or PostgreSQL when
 * `DATABASE_URL` is set). The first start migrates and seeds a workspace, a root key for all five
 * endpoints and the identity `user_123`, and prints curls that work as they are. Restarts keep the
 * data and seed nothing again. Kept so `tsx examples/demo-server.ts` still works; flags after the
 * script name are passed on (`--port 4000`, `--json`, … — see docs/cli.md).
 *
 * Env: PORT (default 3000; 0 picks a free port), HOST (default 127.0.0.1), DATABASE_URL,
 * PGLITE_DATA_DIR (default ./.data), ROOT_KEY (use this plaintext as the demo root key), LOG_LEVEL.
 */
import { runMain } from "../src/cli/app.js"

const [runtime = "node", script = "demo-server.ts", ...flags] = process.argv
runMain([runtime, script, "serve", "--demo", ...flags])
