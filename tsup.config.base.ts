// One build for every package: ESM + CJS + .d.ts/.d.cts, Node 18 syntax, dependencies left external.
import { type Options, defineConfig as tsupDefine } from 'tsup'

export function defineConfig(options: Pick<Options, 'entry'> & Partial<Options>) {
  return tsupDefine({
    format: ['esm', 'cjs'],
    dts: true,
    clean: true,
    sourcemap: false,
    target: 'node18',
    splitting: false,
    treeshake: true,
    outDir: 'dist',
    ...options,
  })
}
