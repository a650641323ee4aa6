// The bundle section: what an edge app pays in bytes for rate limiting. esbuild bundles four Hono apps
// for a Workers-like target (platform neutral, minified, ESM): a bare one, one with `@fastlimit/hono/lite`
// and one with `@fastlimit/hono` (gcra with default options), and one with hono-rate-limiter; the
// section reports the bytes each limiter adds (minified and gzipped at level 9) and the modules that
// weigh most in fastlimit's two. The headline is the lite entry's, the one meant for edge bundles.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { build, type Metafile } from 'esbuild'
import { type Headline, type Section, table } from './report'

const here = path.dirname(fileURLToPath(import.meta.url))

const APPS = {
  bare: `import { Hono } from 'hono'
const app = new Hono()
app.get('/', (c) => c.text('hi'))
export default app
`,
  lite: `import { Hono } from 'hono'
import { rateLimit } from '@fastlimit/hono/lite'
const app = new Hono()
app.use(rateLimit({ rules: '100/min' }))
app.get('/', (c) => c.text('hi'))
export default app
`,
  fastlimit: `import { Hono } from 'hono'
import { rateLimit } from '@fastlimit/hono'
const app = new Hono()
app.use(rateLimit({ rules: '100/min' }))
app.get('/', (c) => c.text('hi'))
export default app
`,
  'hono-rate-limiter': `import { Hono } from 'hono'
import { rateLimiter } from 'hono-rate-limiter'
const app = new Hono()
app.use(rateLimiter({ windowMs: 60_000, limit: 100, keyGenerator: (c) => c.req.header('x-forwarded-for') ?? '' }))
app.get('/', (c) => c.text('hi'))
export default app
`,
} as const

interface Bundled {
  min: number
  gz: number
  meta: Metafile
}

/** Bundles one app the way a Workers build would (esbuild, neutral platform, minified ESM). */
export async function bundleApp(source: string, dir: string): Promise<Bundled> {
  const entry = path.join(dir, `app-${Math.random().toString(36).slice(2)}.ts`)
  fs.writeFileSync(entry, source)
  try {
    const out = await build({
      entryPoints: [entry],
      bundle: true,
      minify: true,
      format: 'esm',
      platform: 'neutral',
      mainFields: ['module', 'main'],
      // The workspace's source condition, so the figure is of this tree's code, not of a stale build.
      conditions: ['@fastlimit/source', 'workerd', 'worker', 'import'],
      nodePaths: [path.join(here, '..', 'node_modules')],
      write: false,
      metafile: true,
      logLevel: 'silent',
    })
    const code = out.outputFiles[0]?.contents ?? new Uint8Array()
    return { min: code.byteLength, gz: gzipSync(code, { level: 9 }).byteLength, meta: out.metafile }
  } finally {
    fs.rmSync(entry, { force: true })
  }
}

/** The target of the release issue: the Hono adapter's lite entry adds at most this many gzipped bytes. */
export const BUNDLE_TARGET_GZ = 6 * 1024

export async function bundleSection(): Promise<Section> {
  console.log('[bench] bundle: bytes a Hono app pays for its limiter (esbuild, minified, gzip -9)')
  // The entry files must sit where the bench's node_modules resolve them.
  const dir = fs.mkdtempSync(path.join(here, '..', '.bundle-'))
  try {
    const bare = await bundleApp(APPS.bare, dir)
    const lite = await bundleApp(APPS.lite, dir)
    const ours = await bundleApp(APPS.fastlimit, dir)
    const peer = await bundleApp(APPS['hono-rate-limiter'], dir)
    const kb = (n: number) => `${(n / 1024).toFixed(1)} KB`
    const row = (label: string, b: Bundled) => [
      label,
      kb(b.min),
      kb(b.gz),
      kb(b.min - bare.min),
      kb(b.gz - bare.gz),
    ]
    const rows = [
      ['bare Hono app', kb(bare.min), kb(bare.gz), '—', '—'],
      row("@fastlimit/hono/lite, rules '100/min' (gcra, defaults)", lite),
      row("@fastlimit/hono, rules '100/min' (gcra, defaults)", ours),
      row('hono-rate-limiter (memory store)', peer),
    ]
    /** fastlimit's ten heaviest modules in a bundle, in minified bytes. */
    const heaviest = (b: Bundled) =>
      Object.entries(Object.values(b.meta.outputs)[0]?.inputs ?? {})
        .filter(([file]) => !file.includes('node_modules'))
        .map(
          ([file, v]) =>
            [file.replace(/^(\.\.\/)+/, '').replace(/^packages\//, ''), v.bytesInOutput] as const,
        )
        .sort((a, b) => b[1] - a[1])
        .slice(0, 10)
        .map(([f, bytes]) => [`\`${f}\``, String(bytes)])
    const added = lite.gz - bare.gz
    const headline: Headline = {
      label: 'bundle: 6 KB gz budget / bytes @fastlimit/hono/lite adds (gzipped)',
      basis: 'bytes',
      ratio: BUNDLE_TARGET_GZ / added,
      target: 1,
      detail:
        `${kb(added)} gz added to a bare Hono app by the lite entry (target ≤ 6 KB); the full entry adds ` +
        `${kb(ours.gz - bare.gz)}, hono-rate-limiter ${kb(peer.gz - bare.gz)}`,
    }
    const body = [
      `esbuild, \`platform: 'neutral'\`, minified ESM, gzip level 9, on ${os.platform()}; the workspace's sources.`,
      '',
      table(['app', 'minified', 'gzipped', 'added, minified', 'added, gzipped'], rows),
      '',
      "fastlimit's heaviest modules in the lite entry's bundle (minified bytes, before gzip):",
      '',
      table(['module', 'bytes'], heaviest(lite)),
      '',
      "fastlimit's heaviest modules in the full entry's bundle (minified bytes, before gzip):",
      '',
      table(['module', 'bytes'], heaviest(ours)),
      '',
    ].join('\n')
    return { title: 'Bundle size at the edge (Hono)', body, headlines: [headline] }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
