/**
 * The documents that ship in the package (README, CHANGELOG, docs/) work outside this repository
 * (issue 10, item 5): every relative link resolves to a file the package itself contains (its
 * `files`), every other link is a public https URL, and nothing points at this workplace's `../shared`.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { dirname, join, normalize, relative } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const root = fileURLToPath(new URL("..", import.meta.url))
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { files: Array<string> }
const shipped = (path: string) =>
  manifest.files.some((entry) => path === entry || path.startsWith(`${entry}/`))

const documents = ["README.md", "CHANGELOG.md", ...readdirSync(join(root, "docs")).map((file) => `docs/${file}`)]

/** The targets of `[text](target)` links, outside code blocks. */
const linksOf = (markdown: string): Array<string> => {
  const prose = markdown.replace(/```[\s\S]*?```/g, "")
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)].map((match) => match[1] ?? "")
}

describe.each(documents)("%s", (document) => {
  const text = readFileSync(join(root, document), "utf8")
  it("ships in the package", () => {
    expect(shipped(document)).toBe(true)
  })
  it("links only to files the package ships, or to public https URLs", () => {
    expect(text).not.toMatch(/\.\.\/shared/)
    for (const link of linksOf(text)) {
      if (link.startsWith("#")) continue
      if (/^[a-z]+:/i.test(link)) {
        expect(link, `${document}: ${link}`).toMatch(/^https:\/\//)
        continue
      }
      const target = normalize(join(dirname(document), link.split("#")[0] ?? ""))
      expect(existsSync(join(root, target)), `${document}: ${link} does not exist`).toBe(true)
      expect(shipped(relative(".", target)), `${document}: ${link} is not in package.json files`).toBe(true)
    }
  })
})

it("LICENSE ships and is MIT, as package.json says", () => {
  expect(shipped("LICENSE")).toBe(true)
  expect(readFileSync(join(root, "LICENSE"), "utf8")).toMatch(/^MIT License/)
})
