// Types for the `fastify4` alias (npm:fastify@^4) the tests run against: typed as Fastify 5, cast where they differ.
declare module 'fastify4' {
  import Fastify from 'fastify'
  export default Fastify
}
