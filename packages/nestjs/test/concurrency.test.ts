import { nestConcurrency } from './concurrency'

nestConcurrency('Nest 11')
