// @fastlimit/sqlite: SQLiteBackend, rate limits shared by every process on one host through one SQLite file.

export type { SQLiteBackendOptions } from './backend'
export { SQLiteBackend } from './backend'
