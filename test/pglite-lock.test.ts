/**
 * The PGlite data directory lock: a directory is open in one layer of one process at a time; the
 * second fails with a message naming the holder; a lock left by a dead process is taken over.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Scope } from "effect"
import { IdentityStore, StorageError } from "identity-kit"
import { layerPglite, PGLITE_LOCK_FILE } from "identity-kit/pglite"

const root = mkdtempSync(join(tmpdir(), "identity-kit-lock-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let dirs = 0
const freshDir = () => join(root, `data-${dirs++}`)

/** Builds `layerPglite` on `dataDir` in a scope of its own; the scope is returned to close it. */
const open = (dataDir: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const exit = yield* Effect.exit(Layer.buildWithScope(layerPglite({ dataDir }), scope))
    if (Exit.isFailure(exit)) yield* Scope.close(scope, Exit.void)
    return { exit, close: Scope.close(scope, Exit.void) }
  })

/** The storage error a failed build ended with, and the message of its cause (a `SqlError`). */
const lockFailure = <A>(exit: Exit.Exit<A, StorageError>): string => {
  assert.isTrue(Exit.isFailure(exit), "the second open should fail")
  if (Exit.isSuccess(exit)) return ""
  const error = Cause.squash(exit.cause)
  assert.instanceOf(error, StorageError)
  const cause = error instanceof StorageError ? error.cause : undefined
  return cause instanceof Error ? cause.message : String(cause)
}

const lockPid = (dataDir: string): unknown => JSON.parse(readFileSync(join(dataDir, PGLITE_LOCK_FILE), "utf8")).pid

/** A pid that belonged to a process and no longer does. */
const deadPid = (): number => {
  const child = spawnSync(process.execPath, ["-e", ""])
  const pid = child.pid
  assert.isDefined(pid)
  assert.throws(() => process.kill(pid!, 0), /ESRCH/)
  return pid!
}

describe("PGlite data directory lock", () => {
  it.effect("a lock held by a process on another host (a shared volume) is refused, never taken over", () =>
    Effect.gen(function*() {
      const dataDir = freshDir()
      mkdirSync(dataDir, { recursive: true })
      // Our own pid, as a container restarted as pid 1 would see it, but another host's.
      const foreign = JSON.stringify({ pid: process.pid, host: "another-host.example", startedAt: "", token: "t" })
      writeFileSync(join(dataDir, PGLITE_LOCK_FILE), foreign)
      const attempt = yield* open(dataDir)
      const message = lockFailure(attempt.exit)
      assert.include(message, `process ${process.pid} on host another-host.example`)
      assert.include(message, `if that process is gone, delete ${PGLITE_LOCK_FILE}`)
      assert.strictEqual(readFileSync(join(dataDir, PGLITE_LOCK_FILE), "utf8"), foreign)
    }))

  it.effect("a second layer on the same directory fails clearly; the first keeps working; a later one opens", () =>
    Effect.gen(function*() {
      const dataDir = freshDir()
      const first = yield* open(dataDir)
      assert.isTrue(Exit.isSuccess(first.exit))

      const second = yield* open(dataDir)
      const message = lockFailure(second.exit)
      assert.include(message, `the PGlite data directory`)
      assert.include(message, `is in use by process ${process.pid}`)
      assert.include(message, `(${PGLITE_LOCK_FILE}); stop it or use another PGLITE_DATA_DIR / dataDir`)

      // The failed attempt left the holder's lock and instance alone.
      assert.strictEqual(lockPid(dataDir), process.pid)
      if (Exit.isSuccess(first.exit)) {
        const found = yield* Effect.flatMap(IdentityStore, (s) => s.getIdentity("ws_lock", "nobody")).pipe(
          Effect.provide(first.exit.value)
        )
        assert.isNull(found)
      }

      yield* first.close
      assert.isFalse(existsSync(join(dataDir, PGLITE_LOCK_FILE)), "closing releases the lock")
      const third = yield* open(dataDir)
      assert.isTrue(Exit.isSuccess(third.exit), "the directory opens again once released")
      yield* third.close
    }), 60_000)

  it.effect("a directory holding other files (a mistyped --data-dir) or a file is refused, and nothing is written", () =>
    Effect.gen(function*() {
      const project = freshDir()
      mkdirSync(project)
      writeFileSync(join(project, "package.json"), "{}")
      const refused = yield* open(project)
      assert.strictEqual(
        lockFailure(refused.exit),
        `the PGlite data directory ${project} holds other files (package.json) and no database: give an empty or new ` +
          "directory (or, if a first start was interrupted, empty this one)"
      )
      assert.deepStrictEqual(readdirSync(project), ["package.json"])
      // Hidden files and a mount point's lost+found are no reason to refuse.
      const volume = freshDir()
      mkdirSync(join(volume, "lost+found"), { recursive: true })
      writeFileSync(join(volume, ".gitkeep"), "")
      const mounted = yield* open(volume)
      assert.isTrue(Exit.isSuccess(mounted.exit))
      yield* mounted.close

      const file = join(project, "package.json")
      assert.strictEqual(lockFailure((yield* open(file)).exit), `the PGlite data directory ${file} is a file, not a directory`)

      // A directory PGlite made opens again, and an empty one is made into a database.
      const made = freshDir()
      const first = yield* open(made)
      assert.isTrue(Exit.isSuccess(first.exit))
      yield* first.close
      const again = yield* open(made)
      assert.isTrue(Exit.isSuccess(again.exit))
      yield* again.close
    }), 60_000)

  it.effect("a lock left by a process that no longer exists is taken over", () =>
    Effect.gen(function*() {
      const dataDir = freshDir()
      const first = yield* open(dataDir)
      yield* first.close
      const pid = deadPid()
      writeFileSync(join(dataDir, PGLITE_LOCK_FILE), JSON.stringify({ pid, startedAt: "2020-01-01T00:00:00.000Z" }))

      const taken = yield* open(dataDir)
      assert.isTrue(Exit.isSuccess(taken.exit), "a stale lock does not block")
      assert.strictEqual(lockPid(dataDir), process.pid)
      yield* taken.close
      assert.isFalse(existsSync(join(dataDir, PGLITE_LOCK_FILE)))
    }), 60_000)

  it("another process holding the directory blocks this one until it dies", async () => {
    const dataDir = freshDir()
    // A child that opens the directory, says so, and holds it until killed.
    const script = `
      import { Effect, Layer } from "effect"
      import { layerPglite } from "identity-kit/pglite"
      await Effect.runPromise(Effect.scoped(Effect.zipRight(
        Layer.build(layerPglite({ dataDir: process.env.LOCK_TEST_DIR })),
        Effect.zipRight(Effect.sync(() => console.log("opened")), Effect.never)
      )))`
    const child: ChildProcess = spawn(
      process.execPath,
      ["--import", "tsx", "--conditions=@identity-kit/source", "--input-type=module", "-e", script],
      { env: { ...process.env, LOCK_TEST_DIR: dataDir }, stdio: ["ignore", "pipe", "pipe"] }
    )
    const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
    try {
      await new Promise<void>((resolve, reject) => {
        let output = ""
        const timer = setTimeout(() => reject(new Error(`the child did not open the directory:\n${output}`)), 45_000)
        const onData = (chunk: Buffer) => {
          output += chunk.toString()
          if (output.includes("opened")) {
            clearTimeout(timer)
            resolve()
          }
        }
        child.stdout?.on("data", onData)
        child.stderr?.on("data", onData)
        child.on("exit", (code) => reject(new Error(`the child exited with ${code}:\n${output}`)))
      })
      const blocked = await Effect.runPromise(open(dataDir))
      const message = lockFailure(blocked.exit)
      assert.include(message, `is in use by process ${child.pid} (${PGLITE_LOCK_FILE})`)

      // Killed without a chance to clean up: its lock stays behind, stale, and is taken over.
      child.kill("SIGKILL")
      await exited
      assert.strictEqual(lockPid(dataDir), child.pid)
      const after = await Effect.runPromise(open(dataDir))
      assert.isTrue(Exit.isSuccess(after.exit), "the dead child's lock is taken over")
      await Effect.runPromise(after.close)
    } finally {
      child.kill("SIGKILL")
      await exited
    }
  }, 90_000)
})
