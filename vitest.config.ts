import { defaultServerConditions } from "vite"
import { defineConfig } from "vitest/config"

// Resolve `identity-kit` and its subpaths to the TypeScript sources (the `@identity-kit/source`
// export condition), so tests and examples use the package's public entry points without a build.
// Not `module`: packages such as @opentelemetry/api point it at builds Node cannot load as ESM
// (extensionless imports); Node itself never uses that condition either.
const conditions = ["@identity-kit/source", ...defaultServerConditions.filter((condition) => condition !== "module")]

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ["@identity-kit/source"] } },
  test: {
    include: ["test/**/*.test.ts", "examples/**/*.test.ts"],
    // PGlite boots once per file; files run in parallel up to the (two) cores.
    pool: "forks",
    // CI also writes a JSON report, from which .ci/run prints a plain "N passed, N failed" line.
    reporters: process.env["CI"] ? ["default", ["json", { outputFile: ".ci/results.json" }]] : ["default"],
    testTimeout: 30_000,
    hookTimeout: 60_000
  }
})
