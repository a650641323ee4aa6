#!/usr/bin/env node
// Checks the packages as a user receives them. Builds them, packs each with npm (which applies no
// publishConfig and rewrites no `workspace:` range) and with pnpm, and requires the two tarballs to
// carry the same manifest (devDependencies aside) with no `workspace:` range a user's install would
// read. Runs publint and attw on each tarball, then installs the npm tarballs in a fresh folder outside
// the workspace beside the frameworks and clients a user has (better-sqlite3@^12, ioredis@^6, ...)
// and there: requires one copy of better-sqlite3, imports every package as ESM and as CommonJS (on
// this Node and on Node 18 for the packages that support it), type-checks a file that uses them
// (node16 ESM and CommonJS, bundler), and runs @fastlimit/core/testing's suite on MemoryBackend.
// Then installs them with pnpm too (strict node_modules) and imports them again.
//
//   node scripts/check-packages.mjs [--no-build] [--keep]    (--keep leaves the consumer folder)
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const fixtures = path.join(root, 'scripts', 'pack-consumer')
const flags = new Set(process.argv.slice(2))
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-pack-'))
const npmOut = path.join(work, 'npm')
const pnpmOut = path.join(work, 'pnpm')
const consumer = path.join(work, 'consumer')
for (const d of [npmOut, pnpmOut, consumer]) fs.mkdirSync(d)

/** Ranges a user's install reads; none may use a protocol only the workspace understands. */
const INSTALLED_FIELDS = ['dependencies', 'peerDependencies', 'optionalDependencies']
const LOCAL_PROTOCOL = /^(workspace|catalog|link|file|portal):/
/** What the consumer installs beside the tarballs, as a user following the READMEs would. */
const USER_DEPS = [
  'express@^5',
  'hono@^4',
  'koa@^3',
  'fastify@^5',
  '@nestjs/common@^11',
  '@nestjs/core@^11',
  'reflect-metadata@^0.2',
  'rxjs@^7',
  'better-sqlite3@^12',
  'ioredis@^6',
  'vitest@~4.1.12',
  'typescript@~5.9.3',
  '@types/node@^20',
  '@types/express@^5',
  '@types/koa@^3',
]

let failures = 0
/** Seconds spent per group of checks, for the closing line. */
const timings = new Map()
const env = {
  ...process.env,
  npm_config_audit: 'false',
  npm_config_fund: 'false',
  npm_config_update_notifier: 'false',
}
const run = (cmd, args, cwd = root, extraEnv = {}) =>
  execFileSync(cmd, args, { cwd, stdio: 'inherit', env: { ...env, ...extraEnv } })
const output = (cmd, args, cwd = root) => execFileSync(cmd, args, { cwd, env, encoding: 'utf8' })

/** Runs one named check, counting a failure instead of stopping, and adds its time to its group. */
function step(name, fn, group = name) {
  const started = Date.now()
  console.log(`\n[packages] ${name}`)
  try {
    fn()
  } catch (err) {
    failures++
    console.error(`[packages] FAILED: ${name}: ${err.message?.split('\n')[0] ?? err}`)
  }
  timings.set(group, (timings.get(group) ?? 0) + (Date.now() - started) / 1000)
}

const manifestOf = (tgz) => JSON.parse(output('tar', ['-xzOf', tgz, 'package/package.json']))
const filesOf = (tgz) => output('tar', ['-tzf', tgz]).trim().split('\n').sort()

if (!flags.has('--no-build')) {
  step('build every package (turbo)', () =>
    run('pnpm', ['exec', 'turbo', 'run', 'build', '--filter=./packages/*']),
  )
}

const packages = fs
  .readdirSync(path.join(root, 'packages'))
  .map((dir) => path.join(root, 'packages', dir))
  .filter((dir) => fs.existsSync(path.join(dir, 'package.json')))
  .map((dir) => ({ dir, pkg: JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) }))
  .filter(({ pkg }) => !pkg.private)

const tarballs = []
for (const { dir, pkg } of packages) {
  step(
    `${pkg.name}: npm pack and pnpm pack give the same manifest, with no workspace-only range`,
    () => {
      const [{ filename }] = JSON.parse(output('npm', ['pack', '--json', '--pack-destination', npmOut], dir))
      const npmTgz = path.join(npmOut, filename)
      tarballs.push(npmTgz)
      output('pnpm', ['pack', '--pack-destination', pnpmOut], dir)
      const pnpmTgz = path.join(pnpmOut, filename)
      const fromNpm = manifestOf(npmTgz)
      const fromPnpm = manifestOf(pnpmTgz)
      const problems = []
      for (const field of INSTALLED_FIELDS) {
        for (const [name, range] of Object.entries(fromNpm[field] ?? {})) {
          if (LOCAL_PROTOCOL.test(range)) problems.push(`${field}.${name} is ${JSON.stringify(range)}`)
        }
      }
      // pnpm rewrites `workspace:` in devDependencies, which no user's install reads; all else must agree.
      const { devDependencies: _a, ...npmRest } = fromNpm
      const { devDependencies: _b, ...pnpmRest } = fromPnpm
      for (const key of new Set([...Object.keys(npmRest), ...Object.keys(pnpmRest)])) {
        if (!isDeepStrictEqual(npmRest[key], pnpmRest[key])) {
          problems.push(
            `"${key}" differs: npm ${JSON.stringify(npmRest[key])}, pnpm ${JSON.stringify(pnpmRest[key])}`,
          )
        }
      }
      if (!isDeepStrictEqual(filesOf(npmTgz), filesOf(pnpmTgz))) problems.push('the file lists differ')
      if (problems.length > 0) throw new Error(`${filename}: ${problems.join('; ')}`)
    },
    'npm pack + pnpm pack',
  )
}

for (const tgz of tarballs) {
  step(
    `${path.basename(tgz)}: publint and attw`,
    () => {
      run('pnpm', ['exec', 'publint', 'run', tgz, '--strict'])
      // Subpaths with no `require` condition are ESM only on purpose (./testing imports vitest).
      const exportsMap = manifestOf(tgz).exports ?? {}
      const esmOnly = Object.keys(exportsMap).filter(
        (sub) => typeof exportsMap[sub] === 'object' && !('require' in exportsMap[sub]),
      )
      const attw = ['exec', 'attw', tgz, '--format', 'table-flipped']
      run('pnpm', [
        ...attw,
        '--profile',
        'node16',
        ...(esmOnly.length ? ['--exclude-entrypoints', ...esmOnly] : []),
      ])
      if (esmOnly.length) run('pnpm', [...attw, '--profile', 'esm-only', '--entrypoints', ...esmOnly])
    },
    'publint + attw',
  )
}

// The consumer: a folder outside the workspace, so nothing resolves through the workspace's node_modules.
fs.writeFileSync(
  path.join(consumer, 'package.json'),
  `${JSON.stringify({ name: 'fastlimit-consumer', private: true, version: '0.0.0' }, null, 2)}\n`,
)
for (const f of ['smoke.mjs', 'smoke.cjs', 'smoke-common.cjs', 'conformance.test.mjs']) {
  fs.copyFileSync(path.join(fixtures, f), path.join(consumer, f))
}
for (const f of ['tsconfig.node16.json', 'tsconfig.bundler.json']) {
  fs.copyFileSync(path.join(fixtures, f), path.join(consumer, f))
}
fs.mkdirSync(path.join(consumer, 'types'))
for (const [file, exts] of [
  ['usage', ['mts', 'cts', 'ts']],
  ['testing', ['mts', 'ts']],
]) {
  for (const ext of exts) {
    fs.copyFileSync(
      path.join(fixtures, 'types', `${file}.ts`),
      path.join(consumer, 'types', `${file}.${ext}`),
    )
  }
}

let installed = false
step(
  `npm install the ${tarballs.length} tarballs in ${consumer}`,
  () => {
    // better-sqlite3 has no prebuilt binary reachable from here: node-gyp compiles it, on every core.
    run('npm', ['install', '--no-package-lock', ...tarballs, ...USER_DEPS], consumer, { JOBS: 'max' })
    installed = true
  },
  'npm install',
)
if (installed) {
  step('one copy of better-sqlite3 (the user’s own)', () => {
    const nested = path.join(
      consumer,
      'node_modules',
      '@fastlimit',
      'sqlite',
      'node_modules',
      'better-sqlite3',
    )
    if (fs.existsSync(nested)) {
      const v = JSON.parse(fs.readFileSync(path.join(nested, 'package.json'), 'utf8')).version
      throw new Error(`@fastlimit/sqlite installed a second better-sqlite3 (${v}) beside the user's`)
    }
  })
  step('import every package as ESM', () => run('node', ['smoke.mjs'], consumer))
  step('require every package as CommonJS', () => run('node', ['smoke.cjs'], consumer))
  step('core and the adapters on Node 18 (ESM and CommonJS)', () => {
    for (const file of ['smoke.mjs', 'smoke.cjs']) {
      run('npx', ['--yes', '-p', 'node@18', 'node', file], consumer, { FASTLIMIT_CONSUMER_NODE18: '1' })
    }
  })
  step('tsc on the types: node16 (ESM and CommonJS)', () =>
    run('npx', ['tsc', '-p', 'tsconfig.node16.json'], consumer),
  )
  step('tsc on the types: bundler', () => run('npx', ['tsc', '-p', 'tsconfig.bundler.json'], consumer))
  step('@fastlimit/core/testing: the conformance suite on MemoryBackend', () =>
    run('npx', ['vitest', 'run', '--reporter=dot'], consumer),
  )
}

// The same tarballs installed by pnpm, whose strict node_modules show any dependency a package uses
// without declaring it (backendFromUrl's import of a backend package: an optional peer of core).
const pnpmConsumer = path.join(work, 'consumer-pnpm')
fs.mkdirSync(pnpmConsumer)
fs.writeFileSync(
  path.join(pnpmConsumer, 'package.json'),
  `${JSON.stringify(
    {
      name: 'fastlimit-consumer-pnpm',
      private: true,
      version: '0.0.0',
      pnpm: { onlyBuiltDependencies: ['better-sqlite3'] },
    },
    null,
    2,
  )}\n`,
)
for (const f of ['smoke.mjs', 'smoke.cjs', 'smoke-common.cjs']) {
  fs.copyFileSync(path.join(fixtures, f), path.join(pnpmConsumer, f))
}
let pnpmInstalled = false
step(
  `pnpm add the ${tarballs.length} tarballs in ${pnpmConsumer}`,
  () => {
    const runtime = USER_DEPS.filter((d) => !/^(typescript|@types\/)/.test(d))
    run('pnpm', ['add', ...tarballs, ...runtime], pnpmConsumer, { JOBS: 'max' })
    pnpmInstalled = true
  },
  'pnpm install',
)
if (pnpmInstalled) {
  step('pnpm layout: import as ESM and require as CommonJS', () => {
    run('node', ['smoke.mjs'], pnpmConsumer)
    run('node', ['smoke.cjs'], pnpmConsumer)
  })
}

if (flags.has('--keep')) console.log(`\n[packages] kept ${work}`)
else fs.rmSync(work, { recursive: true, force: true })
const times = [...timings].map(([group, s]) => `${group} ${s.toFixed(1)} s`)
console.log(`\n[packages] times: ${times.join('; ')}`)
if (failures > 0) {
  console.error(`[packages] ${failures} check(s) failed`)
  process.exit(1)
}
console.log('[packages] every package installs and works from its npm tarball')
