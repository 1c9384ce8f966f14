// `express4` and `express5` are npm aliases of express 4 and 5 (devDependencies), typed with
// @types/express: the adapter only relies on what both versions share.
declare module "express4" {
  import express from "express"
  export default express
}
declare module "express5" {
  import express from "express"
  export default express
}
