import { clientMatrix } from './client-suite'

clientMatrix('iovalkey')
