// What the lite entry puts in an edge bundle: esbuild bundles a bare Hono app with it the way a Workers
// build does (neutral platform, minified ESM, this tree's sources), and the full limiter must not be in it.
import { gzipSync } from 'node:zlib'
import { build, type Metafile } from 'esbuild'
import { describe, expect, it } from 'vitest'

const here = new URL('.', import.meta.url).pathname

async function bundle(contents: string): Promise<{ gz: number; meta: Metafile }> {
  const out = await build({
    stdin: { contents, resolveDir: here, loader: 'ts', sourcefile: 'app.ts' },
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'neutral',
    mainFields: ['module', 'main'],
    conditions: ['@fastlimit/source', 'workerd', 'worker', 'import'],
    write: false,
    metafile: true,
    logLevel: 'silent',
  })
  const code = out.outputFiles[0]?.contents ?? new Uint8Array()
  return { gz: gzipSync(code, { level: 9 }).byteLength, meta: out.metafile }
}

/** The modules of fastlimit's core that put code in the bundle. */
function coreModules(meta: Metafile): string[] {
  const inputs = Object.values(meta.outputs)[0]?.inputs ?? {}
  return Object.entries(inputs)
    .filter(([file, input]) => file.includes('core/src/') && input.bytesInOutput > 0)
    .map(([file]) => file.slice(file.indexOf('core/src/')))
}

describe('the lite entry in an edge bundle', () => {
  it('leaves FastLimit, MemoryBackend, wait and concurrency out, and adds at most 10 KB gzipped to a bare app', async () => {
    const bare = await bundle(`import { Hono } from 'hono'
const app = new Hono()
app.get('/', (c) => c.text('hi'))
export default app`)
    const lite = await bundle(`import { Hono } from 'hono'
import { rateLimit } from './lite'
const app = new Hono()
app.use(rateLimit({ rules: '100/min' }))
app.get('/', (c) => c.text('hi'))
export default app`)
    const modules = coreModules(lite.meta)
    expect(modules).toContain('core/src/lite/limiter.ts')
    // A module-level read of FastLimit anywhere the lite entry imports kept all of these (24.9 KB gz added).
    for (const heavy of ['limiter.ts', 'memory.ts', 'wait.ts', 'concurrency.ts']) {
      expect(modules).not.toContain(`core/src/${heavy}`)
    }
    // 8.4 KB when written; the target is 6 KB (see the bench's bundle section).
    expect(lite.gz - bare.gz).toBeLessThan(10 * 1024)
  }, 60_000)
})
