// Types for the `koa2` alias (npm:koa@^2) the tests run against: Koa 2's API is typed by @types/koa.
declare module 'koa2' {
  import Koa from 'koa'
  export default Koa
}
