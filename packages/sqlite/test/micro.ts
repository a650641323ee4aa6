// Instructions per decision on the healthy path, for valgrind (not a test):
//   valgrind --tool=callgrind node --single-threaded --import tsx test/micro.ts N
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { FastLimit } from '@fastlimit/core'
import { SQLiteBackend } from '../src/index'

const n = Number(process.argv[2] ?? 10_000)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-micro-'))
const backend = new SQLiteBackend(path.join(dir, 'micro.db'), { cleanupIntervalMs: 0 })
const limiter = new FastLimit({ backend })
const rule = limiter.rules('1000000/s')
for (let i = 0; i < n; i++) await limiter.check(`user-${i % 100}`, rule)
await backend.close()
fs.rmSync(dir, { recursive: true, force: true })
