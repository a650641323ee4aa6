// Types for the `express4` alias (npm:express@^4) the tests run against: Express 4's API is typed by @types/express.
declare module 'express4' {
  import express from 'express'
  export default express
}
