// The suites live in packages/nestjs/test and import @nestjs/* from there: dedupe makes them, and the
// library's source, use this folder's NestJS 10, so one copy of Nest runs each test.
import { vitestConfig } from '../../vitest.shared.ts'

export default vitestConfig({
  resolve: {
    dedupe: [
      '@nestjs/common',
      '@nestjs/core',
      '@nestjs/platform-express',
      '@nestjs/platform-fastify',
      'reflect-metadata',
      'rxjs',
    ],
  },
})
