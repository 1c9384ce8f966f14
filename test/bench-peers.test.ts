/**
 * `bench/peers/` is an unchanged copy of the benchmark peers this project is measured against. Where
 * the originals are present (the workplace's `../shared/bench` beside the repository), the copy
 * must stay byte-identical to them; elsewhere the copy is all there is, and it must be complete.
 */
import { existsSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const FILES = ["README.md", "naive-server.mjs", "pgbench-update.sql", "setup.sql"]
const copy = (file: string) => fileURLToPath(new URL(`../bench/peers/${file}`, import.meta.url))
const original = (file: string) => fileURLToPath(new URL(`../../shared/bench/${file}`, import.meta.url))
const originalsPresent = existsSync(original("README.md"))

describe("bench/peers", () => {
  it.each(FILES)("%s is there", (file) => {
    expect(readFileSync(copy(file)).length).toBeGreaterThan(0)
  })

  it.runIf(originalsPresent).each(FILES)("%s is byte-identical to the original", (file) => {
    expect(readFileSync(copy(file)).equals(readFileSync(original(file)))).toBe(true)
  })
})
