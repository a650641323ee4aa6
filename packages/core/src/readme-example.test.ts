// The backend the README shows is the one this test runs through the conformance suite, as written.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { MapBackend } from './examples/map-backend'
import { backendConformance } from './testing'

const here = path.dirname(fileURLToPath(import.meta.url))

describe('the README example backend', () => {
  it('is examples/map-backend.ts, verbatim', () => {
    const readme = fs.readFileSync(path.join(here, '../README.md'), 'utf8')
    const example = fs.readFileSync(path.join(here, './examples/map-backend.ts'), 'utf8')
    expect(readme).toContain(`\`\`\`ts\n${example}\`\`\``)
  })
})

backendConformance({
  name: 'the README example (MapBackend)',
  make: (clock) => new MapBackend({ clock }),
  concurrency: 300,
})
