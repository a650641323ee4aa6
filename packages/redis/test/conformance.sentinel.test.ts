import { redisConformance } from './conformance'

redisConformance('sentinel')
