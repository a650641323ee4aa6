#!/usr/bin/env node
// Packs every public package the way it is published (pnpm applies publishConfig) and checks the
// tarball with publint and @arethetypeswrong/cli: ESM, CJS and types must resolve for node16 and bundlers.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-pack-'))
const run = (cmd, args, cwd = root) => execFileSync(cmd, args, { cwd, stdio: 'inherit' })

run('pnpm', ['exec', 'turbo', 'run', 'build', '--filter=./packages/*'])
let failures = 0
for (const dir of fs.readdirSync(path.join(root, 'packages'))) {
  const pkgDir = path.join(root, 'packages', dir)
  const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'))
  if (pkg.private) continue
  run('pnpm', ['pack', '--pack-destination', out], pkgDir)
  const tgz = path.join(out, `${pkg.name.replace('@', '').replace('/', '-')}-${pkg.version}.tgz`)
  console.log(`\n== ${pkg.name}`)
  try {
    run('pnpm', ['exec', 'publint', 'run', tgz, '--strict'])
    run('pnpm', ['exec', 'attw', tgz, '--profile', 'node16', '--format', 'table-flipped'])
  } catch {
    failures++
  }
}
fs.rmSync(out, { recursive: true, force: true })
if (failures > 0) {
  console.error(`\n${failures} package(s) failed publint or attw`)
  process.exit(1)
}
console.log('\nall packages pass publint and attw')
