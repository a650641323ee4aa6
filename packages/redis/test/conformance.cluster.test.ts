import { redisConformance } from './conformance'

redisConformance('cluster')
