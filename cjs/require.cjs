"use strict"
/**
 * identity-kit is an ES module. Node.js loads ES modules with require() from 20.19 and 22.12 on;
 * older versions throw ERR_REQUIRE_ESM, which says nothing about what to do. Each file in this
 * folder is the `require` entry of one export and loads the ES module through this function, so
 * such a Node.js gets a sentence instead.
 */
module.exports = function load(importer) {
  try {
    return importer()
  } catch (error) {
    if (error !== null && typeof error === "object" && error.code === "ERR_REQUIRE_ESM") {
      throw new Error(
        "identity-kit is an ES module: require() loads it on Node.js 20.19 or newer (22.12 or newer on the 22 line); " +
          "this is Node.js " + process.versions.node + ". Upgrade Node.js, or load it with import().",
        { cause: error }
      )
    }
    throw error
  }
}
