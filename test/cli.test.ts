/**
 * The `identity-kit` command line. As processes (the bin as `npx identity-kit` runs it, on a temp
 * PGlite directory and, with `DATABASE_URL`, on a schema of its own): migrate → workspace create →
 * root-key issue → serve on a free port → Unkey's SDK creates and updates an identity → SIGTERM →
 * exit 0 → identity get shows the update; and the exit code and one stderr line of a bad flag, an
 * unreachable database, a missing identity or workspace. The other commands and failures run in
 * this process through the same `run` the bin calls (a process start costs seconds here), on the
 * same directory, after those.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { once } from "node:events"
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Unkey } from "@unkey/api"
import { ConfigProvider, Effect, Either, ManagedRuntime } from "effect"
import { vi } from "vitest"
import { run } from "../src/cli/app.js"
import { envHost, envPort } from "../src/cli/serve.js"
import { freshSchema, withSearchPath } from "./support/postgres.js"

const DATABASE_URL = process.env["DATABASE_URL"]
const tmp = mkdtempSync(join(tmpdir(), "identity-kit-cli-"))
const dataDir = join(tmp, "db")
const schema = `identity_kit_cli_${randomBytes(4).toString("hex")}`
const postgres = DATABASE_URL === undefined ? undefined : ManagedRuntime.make(freshSchema(DATABASE_URL, schema))

beforeAll(async () => {
  await postgres?.runtime()
})
afterAll(async () => {
  await postgres?.dispose()
  rmSync(tmp, { recursive: true, force: true })
})

// The child's environment without the variables the CLI reads, so only the flags count.
const cleanEnv: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([name]) =>
    !["DATABASE_URL", "PGLITE_DATA_DIR", "PORT", "HOST", "LOG_LEVEL", "LOG_FORMAT", "ROOT_KEY"].includes(name)
  )
)

const spawnCli = (args: ReadonlyArray<string>): ChildProcess =>
  spawn(process.execPath, ["--import", "tsx", "--conditions=@identity-kit/source", "src/cli/main.ts", ...args], {
    env: cleanEnv,
    stdio: ["ignore", "pipe", "pipe"]
  })

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the CLI as a process to its end. */
const cli = (...args: ReadonlyArray<string>): Promise<Result> =>
  new Promise((resolve, reject) => {
    const child = spawnCli(args)
    let stdout = ""
    let stderr = ""
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`identity-kit ${args.join(" ")} did not exit:\n${stdout}\n${stderr}`))
    }, 60_000)
    child.stdout?.on("data", (chunk: Buffer) => void (stdout += chunk.toString("utf8")))
    child.stderr?.on("data", (chunk: Buffer) => void (stderr += chunk.toString("utf8")))
    child.on("exit", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })

/** `--json` output: exactly one JSON document. */
const parsed = (result: Result): Record<string, unknown> => {
  assert.strictEqual(result.code, 0, result.stderr)
  const value: unknown = JSON.parse(result.stdout)
  assert.isObject(value)
  return value as Record<string, unknown>
}

/** `serve --json`: resolves with the URL it printed once it listens. */
const serve = (...args: ReadonlyArray<string>) =>
  new Promise<{ readonly child: ChildProcess; readonly url: string; readonly stderr: () => string }>((resolve, reject) => {
    const child = spawnCli(["serve", "--port", "0", "--json", ...args])
    let stdout = ""
    let stderr = ""
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`serve did not start:\n${stdout}\n${stderr}`))
    }, 60_000)
    child.stderr?.on("data", (chunk: Buffer) => void (stderr += chunk.toString("utf8")))
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString("utf8")
      if (!stdout.includes("\n")) return
      clearTimeout(timer)
      const { url } = JSON.parse(stdout) as { url: string }
      resolve({ child, url, stderr: () => stderr })
    })
    child.once("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`serve exited with ${code}:\n${stdout}\n${stderr}`))
    })
  })

/** A port nothing listens on. */
const closedPort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 1))
    })
  })

const storages = [
  { name: "PGlite", flags: ["--data-dir", dataDir] },
  ...(DATABASE_URL === undefined ? [] : [{ name: "PostgreSQL", flags: ["--database-url", withSearchPath(DATABASE_URL, schema)] }])
]

// The id of the key the SDK used, by storage (the audit entries name it).
const issuedKeyIds = new Map<string, string>()

describe("identity-kit (processes)", () => {
  for (const storage of storages) {
    it(`${storage.name}: migrate, workspace, root key, serve; the SDK creates and updates an identity; SIGTERM exits 0`, async () => {
      const migrated = parsed(await cli("migrate", "--json", ...storage.flags))
      assert.include(migrated["applied"], "0001_create_tables")

      const workspace = parsed(await cli("workspace", "create", "--id", "ws_cli", "--name", "cli", "--json", ...storage.flags))
      assert.deepInclude(workspace, { id: "ws_cli", name: "cli", enabled: true })

      const issued = parsed(
        await cli(
          "root-key", "issue", "--workspace", "ws_cli", "--name", "cli",
          "--permission", "identity.*.create_identity", "--permission", "identity.*.update_identity",
          "--json", ...storage.flags
        )
      )
      const key = issued["key"]
      assert.isString(key)
      assert.match(key as string, /^unkey_[1-9A-HJ-NP-Za-km-z]+$/)
      // Only the plaintext, once: the stored hash is not printed either.
      assert.notProperty(issued["rootKey"], "hash")
      assert.deepInclude(issued["rootKey"], { workspaceId: "ws_cli", name: "cli", expiresAt: null })
      issuedKeyIds.set(storage.name, String((issued["rootKey"] as Record<string, unknown>)["id"]))

      let identityId = ""
      const server = await serve(...storage.flags)
      try {
        const unkey = new Unkey({ rootKey: key as string, serverURL: server.url, retryConfig: { strategy: "none" } })
        const { data: created } = await unkey.identities.createIdentity({
          externalId: "user_1",
          meta: { plan: "free" },
          ratelimits: [{ name: "requests", limit: 10, duration: 60_000, autoApply: true }]
        })
        identityId = created.identityId
        const { data } = await unkey.identities.updateIdentity({ identity: "user_1", meta: { plan: "pro" } })
        assert.deepStrictEqual(data.meta, { plan: "pro" })
        assert.strictEqual(data.id, identityId)
        server.child.removeAllListeners("exit")
        const exited = once(server.child, "exit")
        server.child.kill("SIGTERM")
        assert.strictEqual((await exited)[0], 0, server.stderr())
      } finally {
        if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL")
      }

      // Stored, and the storage was released (a PGlite directory is locked while open).
      const got = parsed(await cli("identity", "get", "--workspace", "ws_cli", "user_1", "--json", ...storage.flags))
      assert.deepInclude(got, { id: identityId, externalId: "user_1", meta: { plan: "pro" } })
    }, 180_000)
  }

  it("exit code and one stderr line: a bad flag, an unreachable database (a command, serve), a missing identity or workspace", async () => {
    const port = await closedPort()
    const url = `postgres://postgres:secret@127.0.0.1:${port}/nowhere`
    const [badFlag, command, server, [identity, workspace]] = await Promise.all([
      cli("serve", "--port", "abc"),
      cli("identity", "get", "--workspace", "ws_cli", "user_1", "--database-url", url),
      cli("serve", "--port", "0", "--database-url", url),
      // One after the other: a PGlite directory is open in one process at a time.
      cli("identity", "get", "--workspace", "ws_cli", "nobody", "--data-dir", dataDir).then(async (first) =>
        [first, await cli("root-key", "issue", "--workspace", "ws_missing", "--data-dir", dataDir)] as const
      )
    ])
    assert.strictEqual(badFlag.code, 2)
    assert.strictEqual(badFlag.stderr, "identity-kit: 'abc' is not a integer (see --help)\n")
    for (const result of [command, server]) {
      assert.strictEqual(result.code, 1, result.stderr)
      assert.match(result.stderr, /^identity-kit: cannot reach the database \(.*ECONNREFUSED.*\)\. Check the URL[^\n]*\n$/)
      assert.notInclude(result.stderr, "secret")
      assert.strictEqual(result.stdout, "")
    }
    assert.strictEqual(identity.code, 3)
    assert.strictEqual(identity.stderr, "identity-kit: no identity nobody in workspace ws_cli\n")
    assert.strictEqual(identity.stdout, "")
    assert.strictEqual(workspace.code, 3, workspace.stderr)
    assert.strictEqual(workspace.stderr, "identity-kit: workspace not found (workspaceId: ws_missing)\n")
    assert.strictEqual(workspace.stdout, "")
  }, 60_000)
})

/** Runs the CLI in this process (the `run` the bin calls): its exit code and what it printed. */
const runHere = async (...args: ReadonlyArray<string>): Promise<Result> => {
  let stdout = ""
  let stderr = ""
  const out = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk)
    return true
  })
  const err = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk)
    return true
  })
  try {
    // `--database-url ''` keeps a DATABASE_URL of this process's environment out: PGlite in --data-dir.
    const code = await run(["node", "identity-kit", ...args, "--database-url", "", "--data-dir", dataDir])
    return { code, stdout, stderr }
  } finally {
    out.mockRestore()
    err.mockRestore()
  }
}

describe("identity-kit (in process, on the same directory)", () => {
  it("text output; a conflict is exit 4; input errors are exit 2 before the storage is touched", async () => {
    const shown = await runHere("identity", "get", "--workspace", "ws_cli", "user_1")
    assert.strictEqual(shown.code, 0, shown.stderr)
    assert.match(shown.stdout, /^Identity id_\S+ \(externalId: user_1, workspace: ws_cli\)\n/)
    assert.include(shown.stdout, `meta: {"plan":"pro"}`)
    assert.include(shown.stdout, "requests: 10 per 60000 ms, auto-applied")

    const duplicate = await runHere("identity", "create", "--workspace", "ws_cli", "--external-id", "user_1")
    assert.strictEqual(duplicate.code, 4)
    assert.strictEqual(duplicate.stderr, `identity-kit: an identity with externalId "user_1" already exists in workspace ws_cli\n`)

    const badMeta = await runHere("identity", "create", "--workspace", "ws_cli", "--external-id", "u", "--meta", "[1]")
    assert.strictEqual(badMeta.code, 2)
    assert.strictEqual(badMeta.stderr, `identity-kit: --meta must be a JSON object, e.g. '{"plan":"free"}'\n`)
    const badRatelimit = await runHere("identity", "create", "--workspace", "ws_cli", "--external-id", "u", "--ratelimit", "requests")
    assert.strictEqual(badRatelimit.code, 2)
    assert.match(badRatelimit.stderr, /^identity-kit: --ratelimit must be name=limit\/duration\[\/auto\]/)
    const badExpiry = await runHere("root-key", "issue", "--workspace", "ws_cli", "--expires-at", "soon")
    assert.strictEqual(badExpiry.code, 2)
    // What `Date.parse` alone would take: a bare month and day, a negative number, a day that rolls
    // over, a local time, a time in the past.
    for (const loose of ["Dec 25", "-5", "2030-02-30T00:00:00Z", "2030-01-01T00:00:00", "2001-01-01T00:00:00Z"]) {
      const refused = await runHere("root-key", "issue", "--workspace", "ws_cli", "--expires-at", loose)
      assert.strictEqual(refused.code, 2, loose)
      assert.match(refused.stderr, /^identity-kit: --expires-at /, loose)
    }
    const badPort = await runHere("serve", "--port", "70000")
    assert.strictEqual(badPort.code, 2)
    assert.strictEqual(badPort.stderr, "identity-kit: --port / PORT must be a port number from 0 to 65535, got 70000\n")

    const created = await runHere(
      "identity", "create", "--workspace", "ws_cli", "--external-id", "user_2", "--meta", '{"plan":"free"}',
      "--ratelimit", "requests=10/1m/auto", "--ratelimit", "tokens=500/3600000", "--json"
    )
    const identity = JSON.parse(created.stdout) as {
      id: string
      meta: object
      ratelimits: Array<{ name: string; limit: number; duration: number; autoApply: boolean }>
    }
    assert.deepStrictEqual(identity.meta, { plan: "free" })
    assert.deepStrictEqual(
      identity.ratelimits.map(({ autoApply, duration, limit, name }) => ({ name, limit, duration, autoApply })),
      [{ name: "requests", limit: 10, duration: 60_000, autoApply: true }, { name: "tokens", limit: 500, duration: 3_600_000, autoApply: false }]
    )
    const id = identity.id
    const deleted = await runHere("identity", "delete", "--workspace", "ws_cli", id)
    assert.strictEqual(deleted.code, 0, deleted.stderr)
    assert.strictEqual(deleted.stdout, `Deleted identity ${id} from workspace ws_cli\n`)
    assert.strictEqual((await runHere("identity", "delete", "--workspace", "ws_cli", id)).code, 3)
  }, 60_000)

  it("root-key issue prints the key once in text; revoke; a missing key is exit 3", async () => {
    const issued = await runHere("root-key", "issue", "--workspace", "ws_cli", "--expires-at", "2999-01-01T00:00:00Z")
    assert.strictEqual(issued.code, 0, issued.stderr)
    assert.include(issued.stdout, "it will not be shown again")
    assert.include(issued.stdout, "expires: 2999-01-01T00:00:00.000Z")
    const keyId = /root key (key_\S+)/.exec(issued.stdout)?.[1]
    assert.isDefined(keyId)
    assert.match(issued.stdout, /\n {2}unkey_[1-9A-HJ-NP-Za-km-z]+\n$/)

    // `@effect/cli` alone would drop these and issue the default permission.
    for (const [args, line] of [
      [["--permission", ""], "--permission needs a value, got an empty one"],
      [["--permission", "  "], "--permission needs a value, got an empty one"],
      [["--permission="], "--permission needs a value, got an empty one"],
      [["--permission"], "--permission needs a value"],
      // Flags match without case, as the parser matches them.
      [["--PERMISSION", ""], "--permission needs a value, got an empty one"]
    ] as const) {
      const refused = await runHere("root-key", "issue", "--workspace", "ws_cli", "--json", ...args)
      assert.deepStrictEqual(refused, { code: 2, stdout: "", stderr: `identity-kit: ${line}\n` }, args.join(" "))
    }
    // A global option before the command does not hide the flag.
    const globalFirst = await runHere("--log-level", "info", "root-key", "issue", "--workspace", "ws_cli", "--permission", "")
    assert.deepStrictEqual(globalFirst, { code: 2, stdout: "", stderr: "identity-kit: --permission needs a value, got an empty one\n" })
    // Another flag's value is never taken for the flag, and another command's flags are the parser's.
    const asValue = await runHere("workspace", "create", "--id", "--permission", "--name", "--ratelimit", "--json")
    assert.deepInclude(JSON.parse(asValue.stdout), { id: "--permission", name: "--ratelimit" })
    const otherCommand = await runHere("workspace", "list", "--permission", "")
    assert.deepStrictEqual([otherCommand.code, otherCommand.stdout], [2, ""])
    assert.notInclude(otherCommand.stderr, "needs a value")
    const emptyRatelimit = await runHere("identity", "create", "--workspace", "ws_cli", "--external-id", "u", "--ratelimit", "")
    assert.deepStrictEqual(emptyRatelimit, { code: 2, stdout: "", stderr: "identity-kit: --ratelimit needs a value, got an empty one\n" })
    // `--flag=value` works for a repeated flag as for the others.
    const spelled = await runHere(
      "root-key", "issue", "--workspace=ws_cli", "--permission=identity.*.read_identity", "--permission", "identity.*.create_identity", "--json"
    )
    assert.deepStrictEqual(
      (JSON.parse(spelled.stdout) as { rootKey: { permissions: Array<string> } }).rootKey.permissions,
      ["identity.*.read_identity", "identity.*.create_identity"]
    )

    // update: disable with an expiry, then enable with other permissions and no expiry.
    const disabled = await runHere("root-key", "update", keyId!, "--disable", "--expires-at", "2999-06-01")
    assert.strictEqual(disabled.code, 0, disabled.stderr)
    assert.include(disabled.stdout, "  state: disabled\n  expires: 2999-06-01T00:00:00.000Z")
    const enabled = JSON.parse(
      (await runHere("root-key", "update", keyId!, "--enable", "--expires-at", "never", "--permission", "identity.*.read_identity", "--json"))
        .stdout
    ) as Record<string, unknown>
    assert.deepInclude(enabled, { id: keyId, enabled: true, expiresAt: null, permissions: ["identity.*.read_identity"] })
    assert.notProperty(enabled, "hash")
    assert.deepStrictEqual(await runHere("root-key", "update", keyId!), {
      code: 2,
      stdout: "",
      stderr: "identity-kit: nothing to change: give --enable, --disable, --permission or --expires-at\n"
    })
    assert.strictEqual((await runHere("root-key", "update", keyId!, "--enable", "--disable")).code, 2)
    assert.strictEqual((await runHere("root-key", "update", "key_nope", "--enable")).code, 3)
    // `never` is also what `issue` takes (the default), in any case.
    const never = await runHere("root-key", "issue", "--workspace", "ws_cli", "--expires-at", "NEVER")
    assert.strictEqual(never.code, 0, never.stderr)
    assert.include(never.stdout, "  expires: never\n")

    const revoked = await runHere("root-key", "revoke", keyId!, "--json")
    assert.deepStrictEqual(JSON.parse(revoked.stdout), { id: keyId, revoked: true })
    // Revoked again: still done, and the key keeps the time it stopped working.
    const revokedAt = async () =>
      (JSON.parse((await runHere("root-key", "list", "--workspace", "ws_cli", "--json")).stdout) as {
        items: Array<{ id: string; deletedAt: number | null }>
      }).items.find((key) => key.id === keyId)?.deletedAt
    const first = await revokedAt()
    assert.isNumber(first)
    assert.strictEqual((await runHere("root-key", "revoke", keyId!)).code, 0)
    assert.strictEqual(await revokedAt(), first)
    // A revoked key is not changed: as for no key.
    assert.deepStrictEqual(await runHere("root-key", "update", keyId!, "--enable"), {
      code: 3,
      stdout: "",
      stderr: `identity-kit: no live root key with id ${keyId} (none, or revoked)\n`
    })
    const missing = await runHere("root-key", "revoke", "key_nope")
    assert.strictEqual(missing.code, 3)
    assert.strictEqual(missing.stderr, "identity-kit: no root key with id key_nope\n")
  }, 60_000)
})

describe("identity-kit lists (in process)", () => {
  it("lists: JSON pages, no key or hash in them, text tables", async () => {
    const workspaces = JSON.parse((await runHere("workspace", "list", "--json")).stdout) as { items: Array<{ id: string }> }
    assert.include(workspaces.items.map((ws) => ws.id), "ws_cli")

    const keys = await runHere("root-key", "list", "--workspace", "ws_cli", "--json")
    assert.strictEqual(keys.code, 0, keys.stderr)
    const keyPage = JSON.parse(keys.stdout) as { items: Array<Record<string, unknown>> }
    assert.isAtLeast(keyPage.items.length, 2)
    for (const key of keyPage.items) assert.notProperty(key, "hash")
    assert.notMatch(keys.stdout, /unkey_/)
    const keyTable = await runHere("root-key", "list", "--workspace", "ws_cli")
    assert.match(keyTable.stdout, /^ID +NAME +STATE +PERMISSIONS +EXPIRES +CREATED\n/)
    assert.match(keyTable.stdout, /revoked/)

    const identities = JSON.parse((await runHere("identity", "list", "--workspace", "ws_cli", "--search", "user_", "--json")).stdout) as {
      items: Array<{ externalId: string }>
    }
    assert.deepStrictEqual(identities.items.map((identity) => identity.externalId), ["user_1"])
    const paged = JSON.parse((await runHere("identity", "list", "--workspace", "ws_cli", "--limit", "1", "--json")).stdout) as {
      items: Array<unknown>
      cursor?: string
    }
    assert.strictEqual(paged.items.length, 1)

    // The update through the SDK wrote the audit log.
    const audit = JSON.parse((await runHere("audit", "list", "--workspace", "ws_cli", "--json")).stdout) as {
      items: Array<{ event: string; actorId: string }>
    }
    assert.deepInclude(audit.items.map((entry) => ({ event: entry.event, actorId: entry.actorId })), {
      event: "identity.update",
      actorId: issuedKeyIds.get("PGlite")
    })
  }, 60_000)

  it("a time beyond a Date's range is refused up front (the key would be stored and its text lost)", async () => {
    const late = await runHere("root-key", "issue", "--workspace", "ws_cli", "--expires-at", "8640000000000001")
    assert.deepStrictEqual(late, {
      code: 2,
      stdout: "",
      stderr: "identity-kit: --expires-at is later than a date can be (8640000000000000 ms, +275760-09-13), got \"8640000000000001\"\n"
    })
    const latest = await runHere("root-key", "issue", "--workspace", "ws_cli", "--expires-at", "8640000000000000")
    assert.strictEqual(latest.code, 0, latest.stderr)
    assert.include(latest.stdout, "expires: +275760-09-13T00:00:00.000Z")
  }, 60_000)

  it("text output escapes control characters of stored text; --json keeps them", async () => {
    const created = await runHere("workspace", "create", "--id", "ws_ctl", "--name", "two\nlines\u001b[31m", "--json")
    // update keeps what it is not given (create with the id would reset the name).
    const disabled = await runHere("workspace", "update", "ws_ctl", "--disable", "--json")
    assert.deepStrictEqual(JSON.parse(disabled.stdout), { ...JSON.parse(created.stdout), enabled: false })
    // Its keys are answered 403 meanwhile: the key list says so.
    assert.strictEqual((await runHere("root-key", "issue", "--workspace", "ws_ctl")).code, 0)
    assert.match((await runHere("root-key", "list", "--workspace", "ws_ctl")).stdout, /^key_\S+ +root key +workspace disabled +/m)
    const enabled = await runHere("workspace", "update", "ws_ctl", "--enable")
    assert.match(enabled.stdout, /^Updated workspace ws_ctl \(name: two\\nlines\\u001b\[31m, enabled\)\n$/)
    assert.match((await runHere("root-key", "list", "--workspace", "ws_ctl")).stdout, /^key_\S+ +root key +active +/m)
    // So does the parser's own line for an argument it does not know.
    const unknown = await runHere("workspace", "list", "x\u001b]0;title\u0007y")
    assert.strictEqual(unknown.code, 2)
    assert.include(unknown.stderr, "'x\\u001b]0;title\\u0007y'")
    assert.notMatch(unknown.stderr, /[\u0000-\u0009\u000b-\u001f]/)
    // A not-found line repeats what was typed, its controls escaped.
    assert.deepStrictEqual(await runHere("workspace", "update", "ws_\u001b[7mx", "--enable"), {
      code: 3,
      stdout: "",
      stderr: "identity-kit: no workspace with id ws_\\u001b[7mx\n"
    })
    // The id is the argument here, not --workspace.
    assert.deepStrictEqual(await runHere("workspace", "update", "", "--name", ""), {
      code: 2,
      stdout: "",
      stderr: "identity-kit: invalid input: <workspaceId>: minLength: got 0, want 1; --name: minLength: got 0, want 1\n"
    })
    assert.strictEqual((await runHere("workspace", "update", "ws_ctl")).code, 2)
    assert.strictEqual(JSON.parse(created.stdout).name, "two\nlines\u001b[31m")
    const listed = await runHere("workspace", "list")
    assert.match(listed.stdout, /^ws_ctl +two\\nlines\\u001b\[31m +enabled +\S+$/m)
    assert.notMatch(listed.stdout, /\u001b/)
    const identity = await runHere(
      "identity", "create", "--workspace", "ws_ctl", "--external-id", "ctl", "--meta", '{"note":"\\u009b2J"}'
    )
    assert.strictEqual(identity.code, 0, identity.stderr)
    assert.match(identity.stdout, /^Created identity id_\S+ /)
    assert.include(identity.stdout, `meta: {"note":"\\u009b2J"}`)
    assert.notMatch(identity.stdout, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/)
  }, 60_000)

  it("serve --demo refuses a ROOT_KEY that is another workspace's key", async () => {
    const issued = JSON.parse((await runHere("root-key", "issue", "--workspace", "ws_cli", "--json")).stdout) as { key: string }
    process.env["ROOT_KEY"] = issued.key
    try {
      const refused = await runHere("serve", "--demo", "--port", "0")
      assert.deepStrictEqual(refused, {
        code: 2,
        stdout: "",
        stderr: "identity-kit: invalid demo key (reason: ROOT_KEY names a stored key the demo cannot use " +
          "(it is a root key of workspace ws_cli, not ws_demo): unset ROOT_KEY for a new demo key, or give a plaintext " +
          "that is not stored yet)\n"
      })
      assert.notInclude(refused.stderr, issued.key)
    } finally {
      delete process.env["ROOT_KEY"]
    }
  }, 60_000)

  it("an empty PORT or HOST is the default: not port 0 (a random one), not every interface", () => {
    const read = <A>(config: Effect.Effect<A, unknown>, env: Record<string, string>) =>
      Effect.runSync(Effect.either(Effect.withConfigProvider(config, ConfigProvider.fromMap(new Map(Object.entries(env))))))
    assert.deepStrictEqual(read(envPort, { PORT: "" }), Either.right(3000))
    assert.deepStrictEqual(read(envPort, { PORT: "  " }), Either.right(3000))
    assert.deepStrictEqual(read(envPort, { PORT: "0" }), Either.right(0))
    assert.deepStrictEqual(read(envPort, { PORT: "8080" }), Either.right(8080))
    assert.isTrue(Either.isLeft(read(envPort, { PORT: "80a" })))
    assert.deepStrictEqual(read(envHost, { HOST: "" }), Either.right("127.0.0.1"))
    assert.deepStrictEqual(read(envHost, { HOST: " 0.0.0.0 " }), Either.right("0.0.0.0"))
  })

  it("input the admin API refuses is exit 2, with every issue", async () => {
    const negative = await runHere("identity", "create", "--workspace", "ws_cli", "--external-id", "u3", "--ratelimit", "requests=-1/0")
    assert.strictEqual(negative.code, 2)
    assert.strictEqual(
      negative.stderr,
      "identity-kit: invalid input: --ratelimit #1 .limit: minimum: got -1, want 1; --ratelimit #1 .duration: minimum: got 0, want 1000\n"
    )
  }, 60_000)
})
