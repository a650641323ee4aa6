import { clientMatrix } from './client-suite'

clientMatrix('node-redis')
