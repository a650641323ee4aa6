// @fastlimit/nestjs's adapter suite and its own tests, on NestJS 10 with the Express and the Fastify platform.
import { nestBehaviour } from '../../../packages/nestjs/test/behaviour'
import { nestConcurrency } from '../../../packages/nestjs/test/concurrency'
import { nestConformance } from '../../../packages/nestjs/test/conformance'

nestConformance(10)
nestBehaviour('Nest 10')
nestConcurrency('Nest 10')
