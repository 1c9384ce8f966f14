import { defineConfig } from "vitest/config"

export default defineConfig({
  resolve: {
    // Resolve `identity-kit` and its subpaths to the TypeScript sources, so tests and examples
    // exercise the package through its public entry points without a build step.
    conditions: ["@identity-kit/source"]
  },
  test: {
    include: ["test/**/*.test.ts"],
    // Two cores: PGlite boots once per file, and files run in parallel up to the core count.
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000
  }
})
