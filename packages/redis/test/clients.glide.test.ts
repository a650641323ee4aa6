import { clientMatrix } from './client-suite'

clientMatrix('glide')
