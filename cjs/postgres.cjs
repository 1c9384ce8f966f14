"use strict"
// The `require` entry of identity-kit/postgres: the ES module, or a clear error on a Node.js too old to require() it.
module.exports = require("./require.cjs")(() => require("../dist/src/storage/postgres.js"))
