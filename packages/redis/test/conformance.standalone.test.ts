import { redisConformance } from './conformance'

redisConformance('standalone')
