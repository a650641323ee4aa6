// @fastlimit/postgres: PostgresBackend, rate limits shared by every process and host through one PostgreSQL database.

export type { PostgresBackendOptions } from './backend'
export { PostgresBackend } from './backend'
export type { PostgresPool, PostgresPoolClient } from './connection'
